"""Two CPU processes form one JAX job (gloo collectives) and end with the same
parameters and probe numbers as one process driving the same two devices."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jssl_testing import REPO, export_params

ARGS = ["--config=configs/simclr.py:smoke", "--config.total_steps=4",
        "--config.checkpoint.every_steps=2"]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices):
  # YNN fusions off as in conftest.py (jaxlib 0.10.2's YNNPACK path, the
  # likely cause of the CI Xeon abort).
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"
                       " --xla_cpu_experimental_ynn_fusion_type=")
  return env



@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  one = subprocess.run([sys.executable, "-m", "jssl.main", f"--workdir={single}", *ARGS],
                       cwd=REPO, env=_env(2), capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]

  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "jssl.main", f"--workdir={multi}", *ARGS,
       f"--coordinator_address=localhost:{port}", "--num_processes=2",
       f"--process_id={i}"],
      cwd=REPO, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "2 process(es)" in outs[0][0]
  assert "step 4/4" in outs[0][0]
  assert "step 4/4" not in outs[1][0]  # only process 0 prints progress

  a, b = export_params(single), export_params(multi)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
  ra = json.load(open(os.path.join(single, "results.json")))
  rb = json.load(open(os.path.join(multi, "results.json")))
  assert ra["pretrained"]["knn_top1"] == pytest.approx(rb["pretrained"]["knn_top1"], abs=0.01)
