"""`python -m jssl.evaluate`: every protocol on an exported encoder, JSON +
Markdown + plots, and its bad-input errors."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import evaluate, export, models
from jssl.data import digits
from jssl.evals import knn, linear_probe


def _export(path, model_cfg, size=16, **kw):
  module = models.make_encoder(model_cfg)
  variables = module.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
  mean, std = digits.digits_mean_std(size)
  return export.export_encoder(
      str(path), variables=variables, model_config=dict(model_cfg),
      preprocess={"size": size, "mean": list(mean), "std": list(std),
                  "crop_fraction": 1.0, "channels": 3},
      provenance={"method": "random-init test"}, **kw)


@pytest.fixture(scope="module")
def resnet_export(tmp_path_factory):
  return _export(tmp_path_factory.mktemp("exp") / "export",
                 {"name": "resnet_tiny", "stem": "cifar"})


def test_all_protocols_write_json_markdown_and_plots(resnet_export, tmp_path):
  out = str(tmp_path / "eval")
  evaluate.main([f"--export={resnet_export}", "--dataset=digits", f"--out={out}",
                 "--shots=1,5", "--n_episodes=10"])
  with open(os.path.join(out, "eval.json")) as f:
    report = json.load(f)
  r = report["results"]
  assert report["num_train"] == 1347 and report["num_test"] == 450
  assert report["num_classes"] == 10 and report["protocols"] == list(evaluate.PROTOCOLS)
  # Random-init features on 10 balanced digit classes: every probe is far above
  # chance (0.1; 450 test images), so one fed wrong features or labels fails.
  for name in ("linear", "knn", "gda", "moments"):
    assert 0.3 < r[name]["top1"] <= r[name]["top5"], (name, r[name])
  for metric in ("cosine", "euclidean"):  # measured 0.28 and 0.32
    assert r["ncm"][metric]["top1"] > 0.2, (metric, r["ncm"])
  assert set(r["fewshot"]["ridge"]) == {"1", "5"}
  assert r["fewshot"]["config"]["n_episodes"] == 10
  # RankMe (Garrido et al. 2023 eq. 1) of the test features, by hand from the
  # loaded encoder's features: the CLI's number is that of the features it saw.
  f = export.load_encoder(resnet_export)(digits.load_arrays("digits", size=16).test_images)
  sv = np.linalg.svd(np.asarray(f, np.float64), compute_uv=False)
  p = sv / sv.sum() + 1e-7
  assert r["diagnostics"]["rankme"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-3)
  assert set(r["seconds"]) == set(evaluate.PROTOCOLS) | {"features"}
  # Random-init features on 10 balanced classes: far above chance (0.1) already.
  assert r["linear"]["top1"] > 0.3

  md = open(os.path.join(out, "eval.md")).read()
  assert "| kNN | k=200, T=0.1 |" in md and "few-shot ridge | 5-way 5-shot" in md
  assert f"{100 * r['linear']['top1']:.2f}" in md
  for png in ("spectrum.png", "projection.png"):
    with open(os.path.join(out, png), "rb") as f:
      assert f.read(4) == b"\x89PNG"

  # Never silently overwritten.
  with pytest.raises(FileExistsError, match="--overwrite"):
    evaluate.main([f"--export={resnet_export}", "--dataset=digits", f"--out={out}",
                   "--protocols=knn"])


def test_numbers_equal_the_probes_on_the_loaded_encoder(resnet_export, tmp_path):
  # The CLI's feature pass equals `load_encoder(...)(raw images)`, and its
  # numbers are the library probes' on those features.
  rep = evaluate.evaluate_export(resnet_export, "digits", out=str(tmp_path / "e"),
                                 protocols="linear,knn", plots="")
  enc = export.load_encoder(resnet_export)
  d = digits.load_arrays("digits", size=16)
  tr, te = enc(d.train_images), enc(d.test_images)
  k = knn.knn_accuracy(tr, d.train_labels, te, d.test_labels, num_classes=10)
  lin = linear_probe.linear_probe(tr, d.train_labels, te, d.test_labels, num_classes=10)
  assert rep["results"]["knn"]["top1"] == pytest.approx(k["top1"], abs=1 / 450)
  assert rep["results"]["linear"]["top1"] == pytest.approx(lin["top1"], abs=2 / 450)
  assert rep["feature_dim"] == enc.dim


def test_trained_protocols_from_the_cli(resnet_export, tmp_path):
  # The papers' augmented-crop linear evaluation and 10%-label fine-tuning,
  # one epoch each (the numbers are checked in tests/evals/test_finetune.py).
  out = str(tmp_path / "trained")
  lines = []
  rep = evaluate.evaluate_export(
      resnet_export, "digits", out=out, protocols="linear_sgd,finetune", plots="",
      log=lines.append, trained_kwargs=dict(
          label_fractions=(0.1,), overrides=dict(epochs=1, batch_size=128)))
  r = rep["results"]
  assert set(r) == {"linear_sgd", "finetune", "seconds"}
  lin, ft = r["linear_sgd"], r["finetune"]["0.1"]
  assert lin["num_train"] == 1347 and lin["batch_size"] == 128 and lin["steps"] == 10
  # 13-14 per class: round(0.1 * n_c) of each digit class.
  assert ft["num_train"] == 136 and ft["batch_size"] == 128 and ft["steps"] == 1
  assert lin["lr"] == pytest.approx(0.1 * 128 / 256) and ft["lr"] == pytest.approx(0.025)
  for d in (lin, ft):
    # Accuracies over the 450 test images: whole counts, top-5 >= top-1.
    assert d["num_test"] == 450 and d["top1"] <= d["top5"], d
    for k in ("top1", "top5"):
      assert d[k] * 450 == pytest.approx(round(d[k] * 450), abs=1e-6), d
  md = open(os.path.join(out, "eval.md")).read()
  assert "| linear (augmented crops) | simclr protocol, 1 epochs, batch 128" in md
  assert "| fine-tune, 10% labels | simclr protocol, 136 examples" in md
  assert any("linear_sgd: top-1" in line for line in lines)


def test_vit_tokens_feed_the_moment_probe(tmp_path):
  path = _export(tmp_path / "vit", {"name": "vit_test", "patch_size": 4})
  enc = export.load_encoder(path)
  assert evaluate.token_output(enc) == "tokens"
  rep = evaluate.evaluate_export(path, "digits", out=str(tmp_path / "e"),
                                 protocols=["moments"], plots="")
  # The moment probe on a random-init ViT's tokens: above chance (0.1).
  assert rep["results"]["moments"]["top1"] > 0.2, rep["results"]["moments"]


def test_linear_probe_reads_the_feature_the_export_records(tmp_path):
  # A DINO / iBOT ViT run probes 'cls_last4'; its export records that, and
  # `jssl.evaluate` probes the same feature by default (kNN stays on pre_logits).
  path = _export(tmp_path / "vit", {"name": "vit_test", "patch_size": 4},
                 linear_feature="cls_last4")
  enc = export.load_encoder(path)
  assert enc.linear_feature == "cls_last4"
  d = digits.load_arrays("digits", size=16)
  f_tr, f_te = enc.features(d.train_images), enc.features(d.test_images)
  assert f_tr["cls_last4"].shape == (len(d.train_images), 2 * 32)  # vit_test: 2 blocks
  rep = evaluate.evaluate_export(path, "digits", out=str(tmp_path / "e"),
                                 protocols="linear,knn", plots="")
  assert rep["linear_feature"] == "cls_last4" and rep["linear_feature_dim"] == 64
  assert rep["feature_dim"] == 32
  lin = linear_probe.linear_probe(f_tr["cls_last4"], d.train_labels, f_te["cls_last4"],
                                  d.test_labels, num_classes=10)
  k = knn.knn_accuracy(f_tr["pre_logits"], d.train_labels, f_te["pre_logits"],
                       d.test_labels, num_classes=10)
  assert rep["results"]["linear"]["top1"] == pytest.approx(lin["top1"], abs=2 / 450)
  assert rep["results"]["knn"]["top1"] == pytest.approx(k["top1"], abs=1 / 450)
  assert ", on cls_last4" in open(tmp_path / "e" / "eval.md").read()
  # --linear_feature overrides it; a name the encoder lacks is one clear error.
  rep = evaluate.evaluate_export(path, "digits", out=str(tmp_path / "p"),
                                 protocols="linear", plots="", linear_feature="pre_logits")
  assert "linear_feature" not in rep
  with pytest.raises(ValueError, match="--linear_feature='tokens' is not a \\[B, D\\] output"):
    evaluate.main([f"--export={path}", "--dataset=digits", f"--out={tmp_path / 'x'}",
                   "--protocols=linear", "--linear_feature=tokens"])


def test_baseline_is_compared_image_by_image(resnet_export, tmp_path):
  # The baseline gets its own preprocessing (24 px here) and the same probes;
  # wins - losses is the top-1 difference in test images.
  base = _export(tmp_path / "base", {"name": "resnet_tiny", "stem": "cifar"}, size=24)
  rep = evaluate.evaluate_export(resnet_export, "digits", out=str(tmp_path / "e"),
                                 protocols="linear,knn", plots="", baseline=base)
  alone = evaluate.evaluate_export(base, "digits", out=str(tmp_path / "b"),
                                   protocols="linear,knn", plots="")
  r = rep["results"]
  vs = r["vs_baseline"]
  assert vs["baseline"] == base and vs["baseline_linear_feature"] == "pre_logits"
  for name in ("linear", "knn"):
    assert vs[name]["top1"] == r[name]["top1"]
    assert vs[name]["baseline_top1"] == alone["results"][name]["top1"]
    assert vs[name]["wins"] - vs[name]["losses"] == round(
        450 * (r[name]["top1"] - alone["results"][name]["top1"]))
    assert vs[name]["wins"] + vs[name]["losses"] > 0  # two different encoders
    assert 0 < vs[name]["p_value"] <= 1
  md = open(tmp_path / "e" / "eval.md").read()
  assert f"Paired test against {base} on the same 450 test images" in md
  assert f"| {vs['knn']['wins']} / {vs['knn']['losses']} |" in md
  # Against itself: no image differs, p = 1.
  rep = evaluate.evaluate_export(resnet_export, "digits", out=str(tmp_path / "s"),
                                 protocols="knn", plots="", baseline=resnet_export)
  assert rep["results"]["vs_baseline"]["knn"] | {"top1": 0, "baseline_top1": 0} == {
      "top1": 0, "baseline_top1": 0, "wins": 0, "losses": 0, "p_value": 1.0}
  assert "linear" not in rep["results"]["vs_baseline"]
  # Bad input, named before any feature pass.
  with pytest.raises(ValueError, match="--baseline compares the linear and kNN.*ncm"):
    evaluate.evaluate_export(resnet_export, "digits", out=str(tmp_path / "n"),
                             protocols="ncm", baseline=base)
  with pytest.raises(FileNotFoundError, match="not a jssl export"):
    evaluate.main([f"--export={resnet_export}", "--dataset=digits",
                   f"--out={tmp_path / 'm'}", "--protocols=knn",
                   f"--baseline={tmp_path}"])


def test_bad_input_is_named(resnet_export, tmp_path):
  with pytest.raises(ValueError, match="unknown protocol.*'lineer'"):
    evaluate.parse_protocols("knn,lineer")
  assert evaluate.parse_protocols("features") == evaluate.PROTOCOLS
  assert evaluate.parse_protocols("all") == (evaluate.PROTOCOLS
                                             + evaluate.TRAINED_PROTOCOLS)
  with pytest.raises(ValueError, match="unknown linear preset 'byol'"):
    evaluate.main([f"--export={resnet_export}", "--dataset=digits",
                   f"--out={tmp_path / 'p'}", "--protocols=linear_sgd",
                   "--linear_preset=byol"])
  with pytest.raises(FileNotFoundError, match="not a jssl export"):
    evaluate.evaluate_export(str(tmp_path), "digits", out=str(tmp_path / "e"))
  with pytest.raises(ValueError, match="--plots"):
    evaluate.evaluate_export(resnet_export, "digits", out=str(tmp_path / "e"),
                             plots="umap")
  with pytest.raises(ValueError, match="digits has splits"):
    evaluate.evaluate_export(resnet_export, "digits", out=str(tmp_path / "e"),
                             splits=("train", "validation"), protocols="knn")
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(ValueError, match="neither 'digits' nor a TFDS dataset"):
    evaluate.evaluate_export(resnet_export, "no_such_dataset_xyz",
                             out=str(tmp_path / "e"), protocols="knn")
