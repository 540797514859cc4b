"""Fault, end to end: the disk fills up during an async save of a smoke run
(step 4; RLIMIT_FSIZE in a wrapper makes writes past 8 KiB fail with EFBIG).
The run stops non-zero with a CheckpointError naming step 4, the directory
and the OS error, with no Orbax/asyncio tracebacks around it; the partial save
is gone, step 2 is intact, and the same command resumes from it."""
import os
import subprocess
import sys

import pytest

from jssl_testing import REPO

ARGS = ["--config=configs/simclr.py:smoke", "--config.total_steps=6",
        "--config.checkpoint.every_steps=2", "--config.checkpoint.use_async=True",
        "--config.eval.at_end=False", "--config.export.enabled=False"]
WRAPPER = r"""
import resource, signal, sys
from absl import app
from jssl import checkpoint as ckpt_lib
from jssl import main
save = ckpt_lib.Checkpointer.save
def full_disk_save(self, step, state, **kw):
  if step == 4:  # the disk is full from here on (step 2 committed before)
    self.wait()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, resource.RLIM_INFINITY))
  return save(self, step, state, **kw)
ckpt_lib.Checkpointer.save = full_disk_save
sys.argv[0] = "jssl.main"
app.run(main.main)
"""


def _run(code_or_module, wd):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  cmd = [sys.executable, *code_or_module, f"--workdir={wd}", *ARGS]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.slow
def test_disk_full_run_stops_cleanly_and_resumes(tmp_path):
  wd = str(tmp_path / "run")
  r = _run(["-c", WRAPPER], wd)
  assert r.returncode != 0
  out = r.stdout + r.stderr
  lines = [l for l in out.splitlines() if "CheckpointError: checkpoint step" in l]
  assert len(lines) == 1, out[-3000:]
  assert "step 4" in lines[0] and "File too large" in lines[0]
  assert os.path.join(wd, "checkpoints") in lines[0]
  assert "last good checkpoint is step 2" in lines[0]
  # Nothing from Orbax/asyncio around it (hundreds of lines before): at most
  # the CheckpointError's own traceback, until jssl.main prints it as one line.
  assert "orbax" not in out.lower() and "asyncio" not in out, out[-3000:]
  assert out.count("Traceback (most recent call last)") <= 1, out[-3000:]
  assert out.rstrip().splitlines()[-1].endswith(lines[0].split("CheckpointError: ")[1])
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2"]

  r = _run(["-m", "jssl.main"], wd)  # space freed: the same command resumes
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resuming from step 2" in r.stdout
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2", "4", "6"]
