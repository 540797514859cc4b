"""Fault: `checkpoints/` deleted, `config.json` kept, the run started again
with another config. The workdir still holds the first run's export, results
and metrics: jssl refuses (ConfigError, a ValueError) listing the differing
fields, and overwrites nothing."""
import json
import os

import ml_collections
import pytest

from jssl import checkpoint as ckpt_lib
from jssl.errors import ConfigError


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(seed=0, batch_size=32, log_every_steps=5,
                                     data=dict(data_dir="/a")))
  c.update(kw)
  return c


def test_config_json_is_checked_without_checkpoints(tmp_path):
  wd = str(tmp_path)
  ckpt_lib.write_or_check_config(wd, _cfg())
  assert not os.path.exists(tmp_path / "checkpoints")
  # Fields that do not change training may still differ.
  ckpt_lib.write_or_check_config(wd, _cfg(log_every_steps=7, data=dict(data_dir="/b")))
  with pytest.raises(ConfigError) as e:
    ckpt_lib.write_or_check_config(wd, _cfg(batch_size=64))
  assert isinstance(e.value, ValueError)
  assert "batch_size: 32 -> 64" in str(e.value) and "config.json" in str(e.value)
  assert json.loads((tmp_path / "config.json").read_text())["batch_size"] == 32
