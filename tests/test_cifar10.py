"""Training on TFDS data: the real CIFAR-10 (from ../shared, skipped when
absent) and the missing-dataset error."""
import json
import os

import pytest

from jssl_testing import load_config
from jssl import train


def _tfds_smoke(data_dir):
  c = load_config("configs/simclr.py:cifar10")
  c.data.data_dir = data_dir
  c.model.name = "resnet_tiny"
  c.projector.update(hidden_dims=(32,), out_dim=16)
  c.batch_size = 32
  c.total_steps = 3
  c.log_every_steps = 1
  c.checkpoint.update(every_steps=3, use_async=False)
  c.eval.at_end = False
  return c


def test_missing_tfds_dataset_gives_one_clear_error(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  empty = str(tmp_path / "tfds")
  with pytest.raises(FileNotFoundError) as e:
    train.run(_tfds_smoke(empty), str(tmp_path / "wd"))
  msg = str(e.value)
  assert "'cifar10'" in msg and empty in msg and "python -m jssl.data.offline" in msg


@pytest.mark.slow
@pytest.mark.data
def test_simclr_trains_on_real_cifar10(cifar_dir, tmp_path):
  wd = str(tmp_path)
  out = train.run(_tfds_smoke(cifar_dir), wd)
  assert out["steps"] == 3
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
  assert os.path.exists(os.path.join(wd, "export", "params.npz"))
