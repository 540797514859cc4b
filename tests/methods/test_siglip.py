"""SigLIP: global == chunked on 8 devices, 1 vs 8 devices, K captions, ring."""

import jax
import numpy as np
import pytest

import dual_testing as dt
import methods_testing as mt
from jssl import losses
from jssl import sharding as shd
from jssl.methods import dual


def test_siglip_chunked_one_device_equals_eight_and_trains():
  config = dt.smoke_config("siglip", **{"loss.impl": "chunked", "loss.chunk_size": 1})
  mt.assert_one_device_equals_eight(config, dt.synthetic_batches(config, 2))


def test_global_chunked_and_ring_equal_on_eight_devices():
  batches = None
  results = {}
  for impl in ("global", "chunked", "ring"):
    config = dt.smoke_config("siglip", **{"loss.impl": impl, "loss.chunk_size": 1})
    batches = batches or dt.synthetic_batches(config, 1)
    results[impl] = mt.run_steps(config, shd.make_mesh(), batches)
  sg, hg = results["global"]
  for impl in ("chunked", "ring"):
    s, h = results[impl]
    np.testing.assert_allclose(hg[0]["loss"], h[0]["loss"], rtol=1e-5, err_msg=impl)
    mt.assert_trees_close(sg.params, s.params, rtol=1e-4, atol=2e-6)


def test_k_captions_are_all_positives_and_k1_is_plain():
  config = dt.smoke_config("siglip", **{"loss.impl": "global"})
  score = dual.siglip_loss_fn(config, None)
  rng = np.random.default_rng(0)
  img = rng.normal(size=(4, 8)).astype(np.float32)
  txt = rng.normal(size=(8, 8)).astype(np.float32)        # K = 2, image-major
  params = {"t_prime": np.float32(1.0), "bias": np.float32(-2.0)}
  got, _ = score(params, {"img": img, "txt": txt, "k": 2})
  u = img / np.linalg.norm(img, axis=1, keepdims=True)
  v = txt / np.linalg.norm(txt, axis=1, keepdims=True)
  logits = np.exp(1.0) * u @ v.T - 2.0
  z = np.where(np.arange(4)[:, None] == np.arange(8)[None] // 2, 1.0, -1.0)
  want = np.sum(np.log1p(np.exp(-z * logits))) / 4
  np.testing.assert_allclose(got, want, rtol=1e-5)
  one, _ = score(params, {"img": img, "txt": txt[:4], "k": 1})
  np.testing.assert_allclose(one, losses.siglip(img, txt[:4], 1.0, -2.0), rtol=1e-6)
