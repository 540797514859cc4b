"""Two CPU processes form one JAX job (gloo collectives) and end with the same
parameters and probe numbers as one process driving the same two devices; a
SIGTERM to one of them stops both at one step, and resuming ends bit-identical
to the uninterrupted job."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading

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



def _job(workdir, *extra, program=("-m", "jssl.main"), env=None):
  """Two local processes forming one JAX job on a fresh coordinator port."""
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, *program, f"--workdir={workdir}", *ARGS, *extra,
       f"--coordinator_address=localhost:{port}", "--num_processes=2",
       f"--process_id={i}"],
      cwd=REPO, env=env or _env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """An uninterrupted 2-process run: (workdir, [(stdout, stderr)] per process)."""
  multi = str(tmp_path_factory.mktemp("multi"))
  procs = _job(multi)
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return multi, outs


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path, two_process_run):
  single = str(tmp_path / "single")
  one = subprocess.run([sys.executable, "-m", "jssl.main", f"--workdir={single}", *ARGS],
                       cwd=REPO, env=_env(2), capture_output=True, text=True, timeout=900)
  assert one.returncode == 0, one.stderr[-3000:]

  multi, outs = two_process_run
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


@pytest.mark.slow
def test_sigterm_to_one_process_stops_the_whole_job_at_one_step(tmp_path, two_process_run):
  """Preemption of a multi-host job: SIGTERM reaches process 1 only; JAX's
  preemption sync point makes both processes finish the same step, save one
  checkpoint of it and exit 143; re-running the job resumes there and ends
  with exactly the uninterrupted job's parameters."""
  wd = str(tmp_path / "preempted")
  slow = os.path.join(os.path.dirname(__file__), "reliability", "slow_main.py")
  procs = _job(wd, program=(slow,), env=dict(_env(1), JSSL_TEST_STEP_DELAY="1.0"))
  seen0 = []

  def pump():  # process 1 prints no progress: signal it after process 0's first step
    for line in procs[0].stdout:
      seen0.append(line)
      if line.startswith("first step"):
        procs[1].send_signal(signal.SIGTERM)

  t = threading.Thread(target=pump, daemon=True)
  t.start()
  errs = [p.stderr.read() for p in procs]
  for p in procs:
    p.wait(timeout=900)
  t.join(timeout=10)
  for p, e in zip(procs, errs):
    assert p.returncode == 143, e[-3000:]
  saved = [l for l in seen0 if "SIGTERM: saved checkpoint at step" in l]
  assert len(saved) == 1, "".join(seen0)
  step = int(saved[0].split("at step ")[1].split()[0])
  assert 1 <= step < 4
  assert max(int(s) for s in os.listdir(os.path.join(wd, "checkpoints"))) == step
  assert not os.path.exists(os.path.join(wd, "export"))

  # The resume is judged by its exported parameters: the end-of-run probes
  # (`eval` may change on resume) would only add their compile time.
  procs = _job(wd, "--config.eval.at_end=False")
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, e) in zip(procs, outs):
    assert p.returncode == 0, e[-3000:]
  assert f"resuming from step {step}" in outs[0][0]
  a, b = export_params(two_process_run[0]), export_params(wd)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
