"""Fault: a checkpoint damaged in place (bytes changed or a file truncated,
e.g. a bad disk or a torn copy). jssl detects it with the SHA-256 manifest
written after the save committed, says so in one WARNING line, moves the step
to workdir/corrupt/<step> and resumes from the previous checkpoint."""
import logging
import os

import numpy as np
import pytest

from jssl import checkpoint as ckpt_lib
from reliability_testing import abstract, largest_data_file, saved_workdir, state


def _warnings(caplog):
  return [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("damage", ["random_bytes", "truncated"])
def test_damaged_checkpoint_falls_back_to_previous(tmp_path, caplog, capfd, damage):
  wd = saved_workdir(tmp_path)
  path = largest_data_file(wd, 2)
  size = os.path.getsize(path)
  assert size > 3 * 4096
  if damage == "random_bytes":  # size unchanged: only the content is wrong
    with open(path, "r+b") as f:
      f.seek(size // 2 - 2048)
      f.write(np.random.default_rng(0).bytes(4096))
    assert os.path.getsize(path) == size
  else:
    os.truncate(path, size // 2)

  caplog.set_level(logging.INFO)
  c = ckpt_lib.Checkpointer(wd, every_steps=1, keep=5)
  restored = c.restore_latest(abstract())
  c.close()
  assert int(restored["step"]) == 1
  np.testing.assert_array_equal(restored["params"]["w"], state(1)["params"]["w"])
  warns = _warnings(caplog)
  assert len(warns) == 1, [r.getMessage() for r in warns]
  assert "checkpoint step 2" in warns[0].getMessage()
  # Found by the manifest (names the file), before Orbax read garbage.
  assert "damaged" in warns[0].getMessage() and "when saved" in warns[0].getMessage()
  assert "Event loop is closed" not in capfd.readouterr().err
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["1"]
  assert os.path.isdir(os.path.join(wd, "corrupt", "2"))  # kept for inspection


def test_checkpoint_without_manifest_is_trusted_as_orbax_committed(tmp_path, caplog):
  """A kill between Orbax's commit and the manifest write leaves a committed
  step without manifest: it must still resume (kill -9 resume is exact)."""
  wd = saved_workdir(tmp_path)
  os.remove(os.path.join(wd, "checkpoints", "2", ckpt_lib.MANIFEST))
  caplog.set_level(logging.INFO)
  c = ckpt_lib.Checkpointer(wd, every_steps=1, keep=5)
  restored = c.restore_latest(abstract())
  c.close()
  assert int(restored["step"]) == 2
  np.testing.assert_array_equal(restored["params"]["w"], state(2)["params"]["w"])
  assert any("has no jssl_manifest.json" in r.getMessage() for r in caplog.records)
  assert not _warnings(caplog)
