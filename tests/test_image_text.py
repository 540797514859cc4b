"""Image-text run books (CLIP, SigLIP, LiT) through the real loop: every
preset builds; the smoke presets train -> checkpoint -> stop -> resume
bit-identically -> zero-shot and retrieval (trained and random init) ->
export -> `jssl.load_clip` gives the loop's embeddings; `jssl.evaluate`
scores the export."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import jssl
from jssl import configs, export as export_lib, methods, models, train
from jssl.data import captions
from jssl.evals import image_text as image_text_lib
from jssl_testing import REPO, export_params, set_fields

IMAGE_TEXT = ("clip", "siglip", "lit")
METRICS = ("zeroshot_top1", "zeroshot_top5", "i2t_R@1", "i2t_R@5", "i2t_R@10",
           "t2i_R@1", "t2i_R@5", "t2i_R@10")


def _smoke(name, **overrides):
  c = configs.get(name, "smoke")
  c.total_steps = 4
  c.checkpoint.every_steps = 2
  c.log_every_steps = 2
  return set_fields(c, **overrides)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
  """The CLIP smoke run (its export is LiT's locked tower below)."""
  workdir = str(tmp_path_factory.mktemp("clip") / "full")
  return workdir, train.run(_smoke("clip"), workdir)


@pytest.mark.parametrize("name,preset", [(n, p) for n in IMAGE_TEXT
                                         for p in configs.presets(n)])
def test_every_preset_builds(name, preset, clip_run):
  c = configs.get(name, preset)
  assert c.method == name and c.method in methods.available()
  assert c.batch_size % 8 == 0
  assert {"quickstart", "smoke"} <= set(configs.presets(name))
  if name == "lit":
    # The locked tower of any preset: here the CLIP smoke run's image tower.
    c.lit.image_tower = clip_run[0]
    c.views.image_size = c.eval.image_size = 16
  m = methods.make(c, methods.TrainLength(total_steps=1000, steps_per_epoch=100.0))
  assert m.dual is not None
  if name != "lit":
    assert m.encoder == models.make_encoder(c.model)


def test_clip_smoke_resumes_exactly_and_exports(clip_run, tmp_path):
  full, res = clip_run
  with open(os.path.join(full, "results.json")) as f:
    saved = json.load(f)
  for which in ("pretrained", "random_init"):
    assert saved[which] == res[which]
    assert set(METRICS) <= set(res[which]), res[which]
    assert all(0.0 <= res[which][k] <= 1.0 for k in METRICS)
  # 450 held-out digits; their captions and the zero-shot prompts come from
  # templates the training captions never use.
  assert res["pretrained"]["num_images"] == 450
  split = str(tmp_path / "split")
  assert train.run(_smoke("clip", stop_at_step=2, **{"eval.at_end": False}),
                   split) == {"stopped_at": 2}
  train.run(_smoke("clip", **{"eval.at_end": False}), split)
  a, b = export_params(full), export_params(split)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  for name in ("dual.npz",):
    with np.load(os.path.join(full, "export", name)) as x, \
        np.load(os.path.join(split, "export", name)) as y:
      assert sorted(x.files) == sorted(y.files)
      for k in x.files:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_load_clip_gives_the_loops_embeddings(clip_run):
  full, res = clip_run
  model = jssl.load_clip(os.path.join(full, "export"))
  held = captions.digits_heldout(16)
  images, texts = held.images[:5], ["a handwritten seven", "the digit 3", ""]
  img, txt = model.encode_image(images), model.encode_text(texts)
  assert img.shape == (5, txt.shape[1]) and txt.shape[0] == 3
  np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, rtol=1e-5)
  # The same numbers as the method's own embedding functions on the final
  # state (restored from the run's last checkpoint).
  config = _smoke("clip")
  method = methods.make(config)
  from jssl import checkpoint as ckpt_lib, schedules, sharding as shd, step as step_lib
  from jssl.data import device_views
  from jssl.evals import image_text
  mesh = shd.make_mesh()
  data_spec = {"image": jax.ShapeDtypeStruct((config.batch_size, 16, 16, 3), np.uint8),
               "text": jax.ShapeDtypeStruct((config.batch_size, 1, 48), np.int32),
               "label": jax.ShapeDtypeStruct((config.batch_size,), np.int32)}
  tx, _ = schedules.make_optimizer(config.optimizer, global_batch=config.batch_size,
                                   total_steps=4, steps_per_epoch=1.0)
  view_fn = device_views.make_view_fn(config.views, config.views.num_views)
  probe = step_lib.make_online_probe(config.get("online_probe"), num_classes=10,
                                     total_steps=4)
  init_fn, sh = step_lib.make_init(method, tx, view_fn, mesh, data_spec, seed=config.seed,
                                   probe=probe)
  abstract = jax.tree.map(lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h),
                          jax.eval_shape(init_fn), sh)
  state = ckpt_lib.Checkpointer(full, every_steps=2, keep=2).restore_latest(abstract)
  variables = method.dual.variables(state.params, state.method_state)
  pp = dict(model.preprocess_config, crop_fraction=1.0)
  images_fn, texts_fn = image_text.make_embed_fns(method.dual, pp, mesh)
  want_img = image_text.embed_rows(images_fn, variables, images, mesh, batch_size=8)
  want_txt = image_text.embed_rows(texts_fn, variables, model.tokenizer(texts), mesh,
                                   batch_size=8)
  np.testing.assert_allclose(img, want_img, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(txt, want_txt, rtol=1e-5, atol=1e-6)
  # The image tower is a plain image export too.
  enc = jssl.load_encoder(os.path.join(full, "export"))
  assert enc(images).shape[0] == 5


def test_load_clip_errors_name_the_problem(clip_run, tmp_path):
  full, _ = clip_run
  with pytest.raises(jssl.errors.ExportNotFoundError):
    jssl.load_clip(str(tmp_path / "nowhere"))
  image_only = str(tmp_path / "image_only")
  enc = jssl.load_encoder(os.path.join(full, "export"))
  export_lib.export_encoder(image_only, variables=jax.device_get(enc.variables),
                            model_config=enc.model_config,
                            preprocess=enc.preprocess_config)
  with pytest.raises(jssl.errors.ExportError, match="load it with jssl.load_encoder"):
    jssl.load_clip(image_only)


@pytest.mark.slow
def test_lit_smoke_locks_the_clip_image_tower(clip_run, tmp_path, monkeypatch):
  full, _ = clip_run
  c = _smoke("lit")
  c.lit.image_tower = full  # a workdir: its export/ is used
  made = []
  make = image_text_lib.make_embed_fns
  monkeypatch.setattr(image_text_lib, "make_embed_fns",
                      lambda *a, **k: made.append(1) or make(*a, **k))
  res = train.run(c, str(tmp_path / "lit"))
  # The trained and the random-init evals share one compiled pair of embed fns.
  assert len(made) == 1 and "zeroshot_top1" in res["random_init"]
  assert set(METRICS) <= set(res["pretrained"])
  # The LiT export's image tower is the CLIP run's, bit for bit.
  a, b = export_params(full), export_params(str(tmp_path / "lit"))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  model = jssl.load_clip(str(tmp_path / "lit" / "export"))
  assert model.encode_text(["seven"]).shape[0] == 1


@pytest.mark.slow
def test_siglip_smoke_trains_and_evaluate_cli_scores_the_export(tmp_path):
  workdir = str(tmp_path / "siglip")
  res = train.run(_smoke("siglip"), workdir)
  assert set(METRICS) <= set(res["pretrained"])
  out = tmp_path / "eval"
  p = subprocess.run([sys.executable, "-m", "jssl.evaluate",
                      f"--export={workdir}/export", "--dataset=digits",
                      "--protocols=zeroshot,retrieval,knn", f"--out={out}", "--plots="],
                     capture_output=True, text=True, cwd=REPO, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  report = json.loads((out / "eval.json").read_text())["results"]
  assert 0.0 <= report["zeroshot"]["top1"] <= 1.0 and report["zeroshot"]["num_classes"] == 10
  assert report["retrieval"]["num_images"] == 450 and "t2i_R@1" in report["retrieval"]
  assert "knn" in report
  assert "zero-shot" in p.stdout and "retrieval image -> text" in p.stdout
