"""W-MSE: sharding invariance (random whitening sub-batches included), the loss is
`losses.wmse` of the head's embeddings with the step key, the logged positive cosine
is 1 - loss / 2, one SGD step lowers the loss, bad configs name their fields."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods, models
from jssl.methods.common import EncoderProjector
from jssl_testing import load_config
import methods_testing as mt

_CACHE = {}


def _setup():
  if not _CACHE:
    config = load_config("configs/wmse.py:smoke")  # batch 32, emb 8, w_size 16
    method = methods.make(config)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    views = tuple(jax.random.normal(k, (32, 16, 16, 3)) for k in (k1, k2))
    with jax.threefry_partitionable(False):
      params, state = jax.jit(method.init)(k3, views)
    vg = jax.jit(jax.value_and_grad(
        lambda p, key: method.loss(p, state, views, {}, key, 0), has_aux=True))
    _CACHE["smoke"] = (config, views, params, state, vg)
  return _CACHE["smoke"]


def test_wmse_one_device_equals_eight_and_trains():
  config = load_config("configs/wmse.py:smoke")
  assert config.loss.w_size < config.batch_size  # the random split is exercised
  (s1, _), _ = mt.assert_one_device_equals_eight(config, mt.digit_batches(config, 2))
  # The output bias, which the whitened loss cannot see, is frozen at 0 (Adam would
  # turn its rounding-noise gradient into lr-sized, layout-dependent steps).
  np.testing.assert_array_equal(s1.params["projector"]["out"]["bias"], 0.0)


def test_wmse_loss_is_wmse_of_the_embeddings_with_the_step_key():
  config, views, params, state, vg = _setup()
  key = jax.random.key(5)
  (value, (_, metrics)), _ = vg(params, key)
  net = EncoderProjector(models.make_encoder(config.model),
                         models.make_projector(config.projector))
  z = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"])[0][1])(
      {"params": params, **state}, jnp.concatenate(views))
  ref, white = jax.jit(lambda z, k: losses.wmse(z, 2, w_size=16, key=k))(z, key)
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  # Each random sub-batch of 16 images of each view is white (identity covariance);
  # the split is the permutation wmse draws from the step key.
  perm = np.asarray(jax.random.permutation(jax.random.split(key, 1)[0], 32))
  for i in range(2):
    for part in perm.reshape(2, 16):
      w = np.asarray(white, np.float64)[32 * i + part]
      np.testing.assert_allclose(np.cov(w, rowvar=False), np.eye(8), atol=2e-3)
  np.testing.assert_allclose(metrics["pos_cosine"], 1 - value / 2, rtol=1e-5)
  # Another key, another split, another loss.
  (other, _), _ = vg(params, jax.random.key(6))
  assert float(other) != float(value)


def test_wmse_one_sgd_step_lowers_the_loss():
  _, _, params, _, vg = _setup()
  key = jax.random.key(5)
  (before, _), grads = vg(params, key)
  stepped = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
  (after, _), _ = vg(stepped, key)
  assert 0.0 < float(after) < float(before) <= 4.0


@pytest.mark.parametrize("field,value,match", [
    ("loss.w_size", 8, r"config.loss.w_size=8 .* >= 2 x config.projector.out_dim=8"),
    ("loss.w_size", 24, r"config.batch_size=32 must be a multiple"),
    ("views.num_views", 1, r"config.views.num_views=1"),
    ("loss.w_iter", 0, r"config.loss.w_iter=0"),
])
def test_wmse_bad_configs_fail_in_make(field, value, match):
  c = load_config("configs/wmse.py:smoke")
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=match):
    methods.make(c)
