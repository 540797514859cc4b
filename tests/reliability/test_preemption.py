"""Preemption: SIGTERM / SIGINT mid-run -> the current step finishes, its
checkpoint is committed, one line names it, the process exits 143 / 130, and
re-running resumes with no step lost, bit-identical to an uninterrupted run.
The 2-process job's case is in tests/test_multiprocess.py (it shares that
file's uninterrupted 2-process run)."""
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from jssl_testing import REPO, export_params, load_config
from jssl import train

SLOW_MAIN = os.path.join(os.path.dirname(__file__), "slow_main.py")
STEPS = 24
FLAGS = ["--config=configs/simclr.py:smoke", f"--config.total_steps={STEPS}",
         "--config.checkpoint.every_steps=1000", "--config.eval.at_end=False",
         "--config.eval.plots="]


def _env(devices, delay):
  # The test process's XLA flags (conftest), so the subprocesses compute
  # exactly what the in-process reference run computes; only the device count
  # changes.
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  return dict(os.environ, JAX_PLATFORMS="cpu", JSSL_TEST_STEP_DELAY=str(delay),
              XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]))


def _start(workdir, *extra, devices=8, delay=0.25):
  return subprocess.Popen(
      [sys.executable, SLOW_MAIN, f"--workdir={workdir}", *FLAGS, *extra],
      cwd=REPO, env=_env(devices, delay), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _signal_at(proc, line_start, sig, seen):
  """Reads proc's stdout; sends `sig` once a line starts with `line_start`.
  Returns the thread collecting the output into `seen`."""

  def pump():
    sent = False
    for line in proc.stdout:
      seen.append(line)
      if not sent and line.startswith(line_start):
        proc.send_signal(sig)
        sent = True

  t = threading.Thread(target=pump, daemon=True)
  t.start()
  return t


def _saved_step(lines):
  hits = [l for l in lines if "saved checkpoint at step" in l]
  assert len(hits) == 1, "".join(lines)
  return int(hits[0].split("saved checkpoint at step ")[1].split()[0])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The same run without a signal (in process, 8 devices, like the tests)."""
  c = load_config("configs/simclr.py:smoke")
  c.total_steps, c.checkpoint.every_steps = STEPS, 1000
  c.eval.at_end, c.eval.plots = False, ""
  wd = str(tmp_path_factory.mktemp("uninterrupted"))
  train.run(c, wd)
  return export_params(wd)


@pytest.mark.slow
@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_saves_the_current_step_and_resume_is_bit_identical(
    tmp_path, uninterrupted, sig, status):
  wd = str(tmp_path / "run")
  proc = _start(wd)
  seen = []
  pump = _signal_at(proc, "step 8/", sig, seen)
  err = proc.stderr.read()
  proc.wait(timeout=900)
  pump.join(timeout=10)
  assert proc.returncode == status, err[-3000:]
  step = _saved_step(seen)
  assert 8 <= step < STEPS
  name = signal.Signals(sig).name
  assert f"{name}: saved checkpoint at step {step}" in "".join(seen)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == [str(step)]
  assert not os.path.exists(os.path.join(wd, "export"))  # not finished
  if sig == signal.SIGINT:
    return  # resuming is the same for both signals: shown once, for SIGTERM (CI time)

  again = subprocess.run([sys.executable, "-m", "jssl.main", f"--workdir={wd}", *FLAGS],
                         cwd=REPO, env=_env(8, 0), capture_output=True, text=True,
                         timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"resuming from step {step}" in again.stdout
  got = export_params(wd)
  assert got.keys() == uninterrupted.keys()
  for k in got:
    np.testing.assert_array_equal(got[k], uninterrupted[k], err_msg=k)
