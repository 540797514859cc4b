"""Every method of the zoo, through the real loop: each run-book preset
builds, and each method's smoke preset trains -> checkpoints -> stops ->
resumes bit-identically -> probes -> exports -> loads."""
import glob
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
