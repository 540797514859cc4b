"""Pretraining on your own data end to end (smoke config): a labelled folder
resumes bit-identically; an unlabelled folder and an unlabelled npz train,
checkpoint and export, with the probes skipped (or run on the eval set)."""
import json
import os
import sys

import numpy as np
import pytest

from jssl import errors, train

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jssl_testing import export_params, load_config  # noqa: E402
from test_data_folder import make_images  # noqa: E402  pylint: disable=wrong-import-position


def _config(**data):
  c = load_config("configs/simclr.py:smoke")
  c.data.update(data)
  return c


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("own")
  return {"train": make_images(root / "train", per_class=12),
          "eval": make_images(root / "eval", per_class=4, seed=1),
          "flat": make_images(root / "flat", per_class=12, flat=True)}


@pytest.mark.slow
def test_labelled_folder_trains_probes_and_resumes_exactly(folders, tmp_path):
  data = dict(source="folder", path=folders["train"], eval_path=folders["eval"])
  full = str(tmp_path / "full")
  res = train.run(_config(**data), full)
  assert 0.0 <= res["pretrained"]["linear_top1"] <= 1.0 and "probes" not in res
  rows = [json.loads(l) for l in open(os.path.join(full, "metrics.jsonl"))]
  assert all("online_probe/top1" in r for r in rows if "loss" in r)
  split = str(tmp_path / "split")
  c = _config(**data)
  c.update(stop_at_step=3)
  c.eval.at_end = False
  assert train.run(c, split) == {"stopped_at": 3}
  c.stop_at_step = -1
  train.run(c, split)  # the same command again: resumes at step 3
  a, b = export_params(full), export_params(split)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_unlabelled_folder_trains_and_exports_without_probes(folders, tmp_path, capsys):
  wd = str(tmp_path / "run")
  res = train.run(_config(source="folder", path=folders["flat"]), wd)
  assert res["probes"].startswith("skipped: no labelled evaluation set")
  with open(os.path.join(wd, "results.json")) as f:
    assert json.load(f)["probes"] == res["probes"]
  assert "pretrained" not in res
  assert sorted(os.listdir(os.path.join(wd, "checkpoints")))[-1] == "6"
  assert os.path.isfile(os.path.join(wd, "export", "params.npz"))
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
  assert not any("online_probe/top1" in r for r in rows)
  said = [l for l in capsys.readouterr().out.splitlines() if "probes skipped" in l]
  assert len(said) == 1 and "no labels" in said[0]


@pytest.mark.slow
def test_unlabelled_npz_trains_with_probes_on_the_eval_set(tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "train.npz", images=rng.integers(0, 255, (40, 20, 20, 3), np.uint8))
  # Labelled eval set: the probes fit on 80% of it and report on the rest.
  np.savez(tmp_path / "eval.npz", images=rng.integers(0, 255, (20, 12, 12, 3), np.uint8),
           labels=np.arange(20) % 2)
  wd = str(tmp_path / "run")
  res = train.run(_config(source="npz", path=str(tmp_path / "train.npz"),
                          eval_path=str(tmp_path / "eval.npz")), wd)
  assert 0.0 <= res["pretrained"]["knn_top1"] <= 1.0 and "probes" not in res
  assert os.path.isfile(os.path.join(wd, "export", "params.npz"))
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert not any("online_probe/top1" in r for r in rows)


def test_bad_data_config_is_one_error(tmp_path):
  with pytest.raises(errors.ConfigError, match="config.data.path is unset; "
                     "data.source='folder' needs a folder"):
    train.run(_config(source="folder"), str(tmp_path / "a"))
  with pytest.raises(errors.DataNotFoundError, match="config.data.path='/nonexistent'"):
    train.run(_config(source="npz", path="/nonexistent"), str(tmp_path / "b"))
  with pytest.raises(errors.ConfigError, match="config.data.source='csv': must be one of 'digits'"):
    train.run(_config(source="csv"), str(tmp_path / "c"))
