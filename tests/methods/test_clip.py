"""CLIP: 1 vs 8 devices, trains, the logit-scale clamp, K captions, FILIP."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dual_testing as dt
import methods_testing as mt
from jssl import errors, losses, methods
from jssl import sharding as shd
from jssl.methods import dual


def test_clip_one_device_equals_eight_and_trains():
  config = dt.smoke_config("clip")
  mt.assert_one_device_equals_eight(config, dt.synthetic_batches(config, 2))


def _method_batch(config, k=1):
  method = methods.make(config)
  batch = dt.synthetic_batches(config, 1, k=k)[0]
  views = (jnp.asarray(batch["image"], jnp.float32) / 255.0,)
  params, state = method.init(jax.random.key(0), views)
  return method, params, state, views, batch


def test_logit_scale_is_clamped_at_100_after_each_update():
  # Init above the cap: the loss uses the parameter itself (plain gradient),
  # and the step clamps it after the optimiser update, as openai's code.
  config = dt.smoke_config("clip", **{"loss.logit_scale_init": math.log(400.0)})
  method, params, state, views, batch = _method_batch(config)

  @jax.jit
  def loss_grad(log_scale):
    def f(ls):
      value, (_, m) = method.loss(dict(params, logit_scale=ls), state, views, batch,
                                  jax.random.key(1), 0)
      return value, m["logit_scale"]
    return jax.value_and_grad(f, has_aux=True)(log_scale)

  (_, scale), g_high = loss_grad(params["logit_scale"])
  assert float(scale) == pytest.approx(400.0, rel=1e-5) and float(g_high) != 0.0
  clamped = method.project(params)
  assert float(clamped["logit_scale"]) == pytest.approx(math.log(100.0))
  assert float(method.project(dict(params, logit_scale=jnp.float32(1.0)))["logit_scale"]) == 1.0
  # Through the train step: step 1 used 400, the state after it holds log 100.
  final, hist = mt.run_steps(config, shd.make_mesh(), [batch, batch])
  assert hist[0]["logit_scale"] == pytest.approx(400.0, rel=1e-5)
  assert hist[1]["logit_scale"] == pytest.approx(100.0, rel=1e-5)
  # After step 2 the optimiser may move it down from the cap, never above.
  assert math.log(90.0) < float(final.params["logit_scale"]) <= math.log(100.0)
  # SigLIP's temperature is not clamped.
  assert methods.make(dt.smoke_config("siglip")).project is None


def test_k_captions_multi_positive_and_k1_is_plain_clip():
  config = dt.smoke_config("clip")
  rng = np.random.default_rng(0)
  img, txt = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(
      np.float32)
  np.testing.assert_allclose(dual.clip_multi(img, txt, 2.0, 1), losses.clip(img, txt, 2.0))
  # K = 2: by hand on the unit embeddings.
  txt2 = rng.normal(size=(8, 8)).astype(np.float32)
  u = img / np.linalg.norm(img, axis=1, keepdims=True)
  v = txt2 / np.linalg.norm(txt2, axis=1, keepdims=True)
  lg = np.exp(2.0) * u @ v.T
  lse = lambda x: np.log(np.sum(np.exp(x)))  # noqa: E731
  want = 0.5 * (np.mean([lse(lg[i]) - lg[i, 2 * i:2 * i + 2].mean() for i in range(4)])
                + np.mean([lse(lg[:, t]) - lg[t // 2, t] for t in range(8)]))
  np.testing.assert_allclose(dual.clip_multi(img, txt2, 2.0, 2), want, rtol=1e-5)
  # The method accepts [B, K, L] text.
  method, params, state, views, batch = _method_batch(config, k=3)
  assert batch["text"].shape[1] == 3
  value, _ = jax.jit(method.loss)(params, state, views, batch, jax.random.key(1), 0)
  assert np.isfinite(float(value))


def test_filip_needs_a_vit_and_trains_with_one():
  config = dt.smoke_config("clip", **{"loss.similarity": "filip"})
  with pytest.raises(errors.ConfigError, match="ViT"):
    methods.make(config)
  config = dt.smoke_config("clip", **{"loss.similarity": "filip"})
  config.model = dict(name="vit_test", patch_size=4)
  with pytest.raises(errors.ConfigError, match="impl='global'"):
    methods.make(config, mesh=shd.make_mesh())   # FILIP is not a ring loss
  config.loss.impl = "global"
  config.optimizer.warmup_epochs = 0.0   # a non-zero lr at step 0
  batches = dt.synthetic_batches(config, 1)
  mesh = shd.make_mesh()
  _, init_fn, step = mt.build(config, mesh, batches[0])
  state = jax.device_get(init_fn())
  before, after = mt.step_loss_before_after(step, state, batches[0], mesh)
  assert after < before


def test_ring_equals_global_on_eight_devices():
  batches = None
  results = {}
  for impl in ("global", "ring"):
    config = dt.smoke_config("clip", **{"loss.impl": impl})
    batches = batches or dt.synthetic_batches(config, 1)
    results[impl] = mt.run_steps(config, shd.make_mesh(), batches)
  (sg, hg), (sr, hr) = results["global"], results["ring"]
  np.testing.assert_allclose(hg[0]["loss"], hr[0]["loss"], rtol=1e-5)
  mt.assert_trees_close(sg.params, sr.params, rtol=1e-4, atol=2e-6)
  # K > 1 captions per image are not a ring loss: said at build time.
  config = dt.smoke_config("clip", **{"data.captions_per_image": 2})
  with pytest.raises(errors.ConfigError, match="captions_per_image=2"):
    methods.make(config, mesh=shd.make_mesh())
