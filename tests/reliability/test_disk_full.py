"""Fault: the disk fills up (or the storage stops taking writes) during a
save, async or not. The save's error surfaces at the next
`raise_if_save_failed()` (the loop calls it every step) as one CheckpointError
line naming the step, the directory and the OS error; the partial save is
removed; the last good checkpoint is intact and restores.

Run in a subprocess: RLIMIT_FSIZE makes every write past 64 KiB fail with
EFBIG (SIGXFSZ ignored), like ENOSPC would, without filling a real disk."""
import os

import pytest

from reliability_testing import run_python

SCRIPT = r"""
import os, resource, signal, sys, time
import jax
from jssl import checkpoint as ckpt_lib
from jssl.errors import CheckpointError
sys.path[:0] = [os.path.join(os.getcwd(), "tests"), os.path.join(os.getcwd(), "tests", "reliability")]
from reliability_testing import abstract, state

wd, use_async = sys.argv[1], sys.argv[2] == "async"
c = ckpt_lib.Checkpointer(wd, every_steps=1, keep=1, use_async=use_async)
c.save(1, state(1))
c.wait()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
try:
  c.save(2, state(2))
  for _ in range(600):  # the training loop: one check per step
    c.raise_if_save_failed()
    time.sleep(0.1)
  print("NOT RAISED")
except CheckpointError as e:
  print("CheckpointError:", e)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
print("LEFT", sorted(os.listdir(os.path.join(wd, "checkpoints"))))
c2 = ckpt_lib.Checkpointer(wd, every_steps=1, keep=1)
print("RESTORED", int(c2.restore_latest(abstract())["step"]))
"""


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_disk_full_during_save_stops_with_one_line(tmp_path, mode):
  wd = str(tmp_path / "run")
  r = run_python(SCRIPT.replace("sys.argv[1]", repr(wd)).replace(
      "sys.argv[2]", repr(mode)))
  assert r.returncode == 0, r.stderr[-3000:]
  lines = r.stdout.splitlines()
  err = [l for l in lines if l.startswith("CheckpointError:")]
  assert len(err) == 1, r.stdout
  assert "checkpoint step 2" in err[0] and os.path.join(wd, "checkpoints") in err[0]
  assert "File too large" in err[0] and "last good checkpoint is step 1" in err[0]
  # The partial save is gone; step 1 was not rotated away and restores.
  assert "LEFT ['1']" in lines and "RESTORED 1" in lines
  # No Orbax/asyncio traceback around it: the one line is the report.
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
