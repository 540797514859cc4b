"""Fault: a save was killed mid-write and left a `<step>.orbax-checkpoint-tmp*`
directory. The next run (process 0) removes it at start with one WARNING line;
it never blocks a save nor takes disk space for ever."""
import logging
import os
import shutil

from jssl import checkpoint as ckpt_lib
from reliability_testing import abstract, saved_workdir, state


def test_stale_partial_save_is_removed_at_start(tmp_path, caplog):
  wd = saved_workdir(tmp_path, steps=(1,))
  ckdir = os.path.join(wd, "checkpoints")
  # What a kill mid-save leaves: a half-written step under a temporary name.
  stale = os.path.join(ckdir, "2.orbax-checkpoint-tmp-1764745000123456")
  shutil.copytree(os.path.join(ckdir, "1"), stale)
  caplog.set_level(logging.INFO)
  c = ckpt_lib.Checkpointer(wd, every_steps=1, keep=5)
  assert not os.path.exists(stale)
  msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(msgs) == 1 and "2.orbax-checkpoint-tmp-1764745000123456" in msgs[0]
  assert int(c.restore_latest(abstract())["step"]) == 1
  c.save(2, state(2))
  c.close()
  assert sorted(os.listdir(ckdir)) == ["1", "2"]
