"""End to end on the smoke config: train -> checkpoint -> resume -> probe ->
export -> load, resume equivalence, and the bad-input paths of a run."""
import json
import os

import numpy as np
import pytest

import jssl
from jssl_testing import export_params, load_config, set_fields
from jssl import train
from jssl.data import digits
from jssl.evals import knn


def _smoke(**overrides):
  return set_fields(load_config("configs/simclr.py:smoke"), **overrides)


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path):
  wd = str(tmp_path / "run")
  res = train.run(_smoke(), wd)
  with open(os.path.join(wd, "results.json")) as f:
    saved = json.load(f)
  for which in ("pretrained", "random_init"):
    assert saved[which] == res[which]  # every number, as returned
    for k in ("linear_top1", "knn_top1"):
      # Chance is 0.1 on the 10 digit classes; even random-init conv features
      # separate digits far better, so a probe fed wrong features or labels
      # (or a broken accuracy) lands near 0.1 and fails here.
      assert res[which][k] > 0.3, (which, k, res[which][k])
  # The paired test: its win/loss counts are the accuracy difference in images.
  m = len(digits.load_arrays("digits", size=16).test_labels)
  for probe in ("linear", "knn"):
    vs = saved["vs_random_init"][probe]
    assert vs["wins"] - vs["losses"] == round(
        m * (res["pretrained"][f"{probe}_top1"] - res["random_init"][f"{probe}_top1"]))
    assert vs["wins"] + vs["losses"] > 0 and 0.0 < vs["p_value"] <= 1.0
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
  assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints")))[-1] == "6"
  # The end-of-run plots (matplotlib is in the test extras).
  pngs = sorted(os.listdir(os.path.join(wd, "plots")))
  assert pngs == ["projection.png", "spectrum.png", "training.png"]
  for p in pngs:
    with open(os.path.join(wd, "plots", p), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  # The export loads in one line and maps raw uint8 images to [B, D] on CPU.
  enc = jssl.load_encoder(os.path.join(wd, "export"))
  imgs = digits.load_arrays("digits", size=16).test_images[:5]
  f = enc(imgs)
  assert f.shape == (5, enc.dim) and f.dtype == np.float32
  assert np.all(np.isfinite(f))
  np.testing.assert_allclose(enc(imgs[:2]), f[:2], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    enc(imgs.astype(np.float32))
  with pytest.raises(ValueError, match="rank 4"):
    enc(imgs[0])
  # The reported kNN top-1 is kNN on the exported encoder's features of the
  # digits splits: the eval saw the trained encoder, preprocessed as exported.
  c = _smoke()
  d = digits.load_arrays("digits", size=16)
  want = knn.knn_accuracy(enc(d.train_images), d.train_labels, enc(d.test_images),
                          d.test_labels, num_classes=10, k=c.eval.knn_k,
                          temperature=c.eval.knn_temperature)["top1"]
  assert res["pretrained"]["knn_top1"] == pytest.approx(want, abs=1 / len(d.test_labels))

  # Re-running the finished job resumes at the last step: no training repeated.
  res2 = train.run(_smoke(), wd)
  assert res2["pretrained"]["linear_top1"] == pytest.approx(
      res["pretrained"]["linear_top1"])



@pytest.mark.slow
def test_resume_gives_identical_parameters(tmp_path):
  full, split = str(tmp_path / "full"), str(tmp_path / "split")
  train.run(_smoke(**{"eval.at_end": False}), full)
  out = train.run(_smoke(**{"eval.at_end": False, "stop_at_step": 3}), split)
  assert out == {"stopped_at": 3}
  assert sorted(os.listdir(os.path.join(split, "checkpoints"))) == ["3"]
  train.run(_smoke(**{"eval.at_end": False}), split)  # same command again
  a, b = export_params(full), export_params(split)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_workdir_of_another_config_is_refused(tmp_path):
  wd = str(tmp_path)
  train.run(_smoke(**{"eval.at_end": False, "stop_at_step": 3,
                      "export.enabled": False}), wd)
  before = open(os.path.join(wd, "config.json")).read()
  with pytest.raises(ValueError, match=r"loss.temperature: 0.2 -> 0.5"):
    train.run(_smoke(**{"loss.temperature": 0.5}), wd)
  assert open(os.path.join(wd, "config.json")).read() == before
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["3"]


def test_batch_not_divisible_by_devices(tmp_path):
  with pytest.raises(ValueError, match="batch size 36 is not divisible by the 8"):
    train.run(_smoke(batch_size=36), str(tmp_path))


def test_unknown_source_and_method_are_named(tmp_path):
  with pytest.raises(ValueError, match="config.data.source='csv'"):
    train.run(_smoke(**{"data.source": "csv"}), str(tmp_path / "a"))
  with pytest.raises(ValueError, match="unknown method 'simclrr'; available: .*simclr"):
    train.run(_smoke(method="simclrr"), str(tmp_path / "b"))
