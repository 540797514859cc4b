"""Every method of the zoo, through the real loop: each run-book preset
builds, and each method's smoke preset trains -> checkpoints -> stops ->
resumes bit-identically -> probes -> exports -> loads."""
import glob
import math
import json
import os

import numpy as np
import pytest

import jssl
from jssl import methods, models, train
from jssl.data import digits
from jssl_testing import REPO, export_params, load_config, set_fields

# Image-text run books (CLIP, SigLIP, LiT) have their own end-to-end tests
# (tests/test_image_text.py): zero-shot and retrieval instead of probes.
IMAGE_TEXT = ("clip", "lit", "siglip")
CONFIGS = sorted(os.path.basename(p)[:-3]
                 for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if os.path.basename(p)[:-3] not in IMAGE_TEXT)


def _presets(name):
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      f"cfg_presets_{name}", os.path.join(REPO, "configs", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.PRESETS


@pytest.mark.parametrize("name,preset", [(n, p) for n in CONFIGS
                                         for p in _presets(n)])
def test_every_preset_builds(name, preset):
  c = load_config(f"configs/{name}.py:{preset}")
  assert c.method in methods.available()
  m = methods.make(c, methods.TrainLength(total_steps=1000,
                                          steps_per_epoch=100.0))
  assert m.encoder == models.make_encoder(c.model)  # the encoder the config names
  assert c.batch_size % 8 == 0  # divisible by the 8 test devices and pod slices
  for required in ("quickstart", "cifar10", "imagenet", "smoke"):
    assert required in _presets(name)


def _smoke(name, **overrides):
  c = load_config(f"configs/{name}.py:smoke")
  c.total_steps = 4
  c.checkpoint.every_steps = 2
  c.log_every_steps = 2
  return set_fields(c, **overrides)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "simclr"])
def test_smoke_run_resumes_exactly_and_exports(name, tmp_path):
  # simclr has its own, fuller end-to-end tests in test_train.py.
  full, split = str(tmp_path / "full"), str(tmp_path / "split")
  res = train.run(_smoke(name), full)
  with open(os.path.join(full, "results.json")) as f:
    saved = json.load(f)
  for which in ("pretrained", "random_init"):
    assert saved[which] == res[which]
    # Twice chance (0.1, 10 digit classes; 450 test images): a probe that is
    # fed the wrong features or labels scores ~0.1 and fails here.
    for k in ("linear_top1", "knn_top1"):
      assert res[which][k] > 0.2, (which, k, res[which][k])
  # Stop half way and resume: EMA teachers, queues, centers and prototypes
  # come back from the checkpoint, so the result is bit-identical.
  assert train.run(_smoke(name, stop_at_step=2, **{"eval.at_end": False}),
                   split) == {"stopped_at": 2}
  train.run(_smoke(name, **{"eval.at_end": False}), split)
  a, b = export_params(full), export_params(split)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  enc = jssl.load_encoder(os.path.join(full, "export"))
  c = _smoke(name)
  size = int(c.data.kwargs.size)
  f = enc(digits.load_arrays("digits", size=size).test_images[:3])
  assert f.shape == (3, enc.dim) and np.all(np.isfinite(f))
  # The linear probe read the run book's feature, and the export says which.
  assert enc.linear_feature == c.eval.linear_feature
  if c.eval.linear_feature == "cls_last4":  # iBOT: DINO's ViT-S probe input
    depth = len([k for k in enc.variables["params"] if k.startswith("block")])
    assert res["pretrained"]["linear_feature_dim"] == min(4, depth) * enc.dim


def test_unknown_method_lists_the_available_ones():
  c = load_config("configs/simclr.py:smoke")
  c.method = "simclrr"
  with pytest.raises(ValueError, match="unknown method 'simclrr'; available: .*simclr"):
    methods.make(c)


def _zoo_benchmark():
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("zoo_bench",
                                                os.path.join(REPO, "benchmarks", "zoo.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_zoo_judges_several_seeds_by_their_mean_gain_and_pooled_paired_test():
  zoo = _zoo_benchmark()

  def run(seed, lin, lin0, knn, knn0, wins, losses):
    p = zoo.paired_lib.sign_test_p(wins, losses)
    return {"method": "ibot", "seed": seed, "steps": 150, "wall_s": 100.0, "cpu_s": 190.0,
            "images_per_sec": 128.0, "final_loss": 5.0, "online_probe": 0.4,
            "pretrained": {"linear_top1": lin, "knn_top1": knn},
            "random_init": {"linear_top1": lin0, "knn_top1": knn0},
            "linear_gain": 100 * (lin - lin0), "knn_gain": 100 * (knn - knn0),
            "linear_wins": wins, "linear_losses": losses, "linear_p": p,
            "ok": zoo.passes(100 * (lin - lin0), 100 * (knn - knn0), p)}
  # 450 test images; each seed's W - L is its gain in images. No seed is
  # significant alone (p 0.073, 0.055, 0.19); pooled, 21 wins / 6 losses are (p 0.003).
  runs = [run(0, 0.96, 0.95, 0.60, 0.55, 9, 3), run(1, 0.96, 0.95, 0.60, 0.55, 8, 2),
          run(2, 0.96, 0.95, 0.58, 0.55, 4, 1)]
  assert not any(r["ok"] for r in runs)
  mean = zoo.mean_row(runs)
  assert mean["pretrained"]["linear_top1"] == pytest.approx(0.96)
  assert mean["linear_gain"] == pytest.approx(1.0) and mean["knn_gain"] == pytest.approx(4.33)
  assert (mean["linear_wins"], mean["linear_losses"]) == (21, 6)
  assert mean["linear_p"] == pytest.approx(
      sum(math.comb(27, k) for k in range(21, 28)) / 2 ** 27)
  assert mean["ok"] and mean["seeds"] == [0, 1, 2]
  # The same gains with many discordant images are noise: pooled p 0.18, the method fails.
  noisy = [run(s, 0.96, 0.95, 0.6, 0.55, 40, 35) for s in range(3)]
  assert not zoo.mean_row(noisy)["ok"]
  # A margin on top of the test, and kNN must not lose.
  assert not zoo.mean_row(runs, min_gain=2.0)["ok"]
  assert not zoo.mean_row([run(0, 0.97, 0.9, 0.5, 0.6, 40, 8)])["ok"]
  # A seed that failed to run fails the method.
  assert not zoo.mean_row(runs[:2] + [{"method": "ibot", "seed": 2, "wall_s": 1.0,
                                       "cpu_s": 1.0, "ok": False}])["ok"]
  md = zoo.table(runs + [mean])
  assert "| ibot (seed 0) | 150 |" in md and "| 9/3 (0.073) |" in md
  assert "linear +1.0, kNN +5.0 |" in md
  assert "| ibot (mean of seeds 0, 1, 2) | 150 | 100s | 190s |" in md
  assert md.rstrip().endswith("| 96.0% | 95.0% | 21/6 (0.003) | 59.3% | 55.0% | learns |")
  # A p-value is never printed rounded onto the 0.01 threshold.
  assert zoo.format_p(0.0103) == "0.0103" and zoo.format_p(0.00996) == "0.00996"
  assert zoo.format_p(0.043) == "0.043" and zoo.format_p(3.2e-24) == "3.2e-24"
  # ... nor onto the threshold the run was judged at (--alpha).
  assert zoo.format_p(0.0503, 0.05) == "0.0503"
  assert "| 9/3 (0.0503) |" in zoo.table([dict(runs[0], linear_p=0.0503)], alpha=0.05)
  # +9 of 450 images is exactly a 2-point margin (float32 gave 1.99999).
  assert zoo.passes(1.9999990463256836, 0.0, 0.001, 2.0)


def test_zoo_runs_the_image_run_books_and_names_image_text_ones(monkeypatch, capsys):
  """`python benchmarks/zoo.py` ran every configs/*.py, image-text ones too,
  and crashed on CLIP's results (no linear probe)."""
  zoo = _zoo_benchmark()
  assert set(zoo.available()) == set(CONFIGS)
  monkeypatch.setattr("sys.argv", ["zoo.py", "--methods", "simclr", "clip"])
  with pytest.raises(SystemExit) as e:
    zoo.main()
  assert e.value.code == 2
  assert "['clip'] are image-text run books" in capsys.readouterr().err
