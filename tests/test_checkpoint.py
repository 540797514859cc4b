import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jssl import checkpoint as ckpt_lib
from jssl.errors import ConfigError


def _state(v):
  return {"step": jnp.asarray(v, jnp.int32), "w": jnp.full((3, 2), float(v))}


def _abstract():
  return jax.eval_shape(lambda: _state(0))


def test_save_restore_latest_and_keep(tmp_path):
  c = ckpt_lib.Checkpointer(str(tmp_path), every_steps=1, keep=2, use_async=True)
  for s in (1, 2, 3):
    c.save(s, _state(s))
  c.wait()
  restored = c.restore_latest(_abstract())
  assert int(restored["step"]) == 3
  np.testing.assert_array_equal(restored["w"], np.full((3, 2), 3.0))
  c.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]


def test_empty_workdir_restores_nothing(tmp_path):
  c = ckpt_lib.Checkpointer(str(tmp_path), every_steps=1, keep=2)
  assert c.restore_latest(_abstract()) is None
  c.close()


def test_corrupt_latest_checkpoint_falls_back_and_is_kept(tmp_path, caplog):
  c = ckpt_lib.Checkpointer(str(tmp_path), every_steps=1, keep=3, use_async=False)
  c.save(1, _state(1))
  c.save(2, _state(2))
  c.close()
  # Damage every data file of step 2 (a torn write / bad disk).
  step2 = tmp_path / "checkpoints" / "2"
  damaged = 0
  for root, _, files in os.walk(step2):
    for name in files:
      if not name.startswith(("_CHECKPOINT_METADATA", ckpt_lib.MANIFEST)):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"\x00garbage")
        damaged += 1
  assert damaged
  c = ckpt_lib.Checkpointer(str(tmp_path), every_steps=1, keep=3, use_async=False)
  restored = c.restore_latest(_abstract())
  assert int(restored["step"]) == 1
  assert "checkpoint step 2" in caplog.text and "damaged" in caplog.text
  # Nothing lost: the corrupt checkpoint is moved aside, not deleted.
  assert (tmp_path / "corrupt" / "2").is_dir()
  assert not step2.exists()
  c.save(2, _state(22))  # and the step can be written again
  c.close()
  assert (step2 / ckpt_lib.MANIFEST).is_file()


def test_unreadable_checkpoint_without_manifest_still_falls_back(tmp_path, caplog):
  """Checkpoints without a manifest (older jssl, or a kill before it was
  written) still fall back when Orbax cannot read them."""
  c = ckpt_lib.Checkpointer(str(tmp_path), every_steps=1, keep=3, use_async=False)
  c.save(1, _state(1))
  c.save(2, _state(2))
  c.close()
  step2 = tmp_path / "checkpoints" / "2"
  os.remove(step2 / ckpt_lib.MANIFEST)
  (step2 / "default" / "_METADATA").write_bytes(b"{not json")
  c = ckpt_lib.Checkpointer(str(tmp_path), every_steps=1, keep=3, use_async=False)
  assert int(c.restore_latest(_abstract())["step"]) == 1
  c.close()
  assert "checkpoint step 2" in caplog.text and (tmp_path / "corrupt" / "2").is_dir()


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(seed=0, batch_size=32, log_every_steps=5,
                                     loss=dict(temperature=0.2),
                                     data=dict(data_dir="/a")))
  c.update(kw)
  return c


def test_config_mismatch_refuses_and_names_fields(tmp_path):
  wd = str(tmp_path)
  ckpt_lib.write_or_check_config(wd, _cfg())
  os.makedirs(tmp_path / "checkpoints" / "5")
  # Logging cadence and data location may change on resume.
  ckpt_lib.write_or_check_config(wd, _cfg(log_every_steps=7, data=dict(data_dir="/b")))
  bad = _cfg(batch_size=64)
  bad.loss.temperature = 0.5
  with pytest.raises(ValueError) as e:
    ckpt_lib.write_or_check_config(wd, bad)
  assert isinstance(e.value, ConfigError)
  msg = str(e.value)
  assert "batch_size: 32 -> 64" in msg and "loss.temperature: 0.2 -> 0.5" in msg
  assert "refusing" in msg
  # The saved config is untouched.
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["batch_size"] == 32


def test_partial_save_removal_survives_a_writer_still_adding_files(tmp_path, monkeypatch):
  # CI saw Orbax's abandoned writer create a file in the partial save while it
  # was being removed (rmtree: ENOTEMPTY); the removal must go again, not give
  # up and leave the partial save behind.
  import errno
  import shutil
  c = ckpt_lib.Checkpointer(tmp_path, every_steps=1, use_async=False)
  partial = tmp_path / "checkpoints" / f"4{ckpt_lib.TMP_MARK}-123"
  (partial / f"default{ckpt_lib.TMP_MARK}").mkdir(parents=True)
  (partial / f"default{ckpt_lib.TMP_MARK}" / "x").write_text("x")
  calls = []

  def racing_rmtree(self, *a, **kw):
    calls.append(self)
    if len(calls) == 1:
      raise OSError(errno.ENOTEMPTY, "Directory not empty",
                    f"default{ckpt_lib.TMP_MARK}")
    shutil.rmtree(str(self))
  monkeypatch.setattr(type(c.directory / "x"), "rmtree", racing_rmtree)
  assert c._remove_partial(4)
  assert not partial.exists() and len(calls) == 2
  # Other OS errors are reported, not retried forever.
  partial.mkdir()
  monkeypatch.setattr(type(c.directory / "x"), "rmtree", lambda self, *a, **kw: (
      _ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
  assert not c._remove_partial(4)
  assert partial.exists()
