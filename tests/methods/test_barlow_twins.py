"""Barlow Twins: sharding, wiring to `jssl.losses.barlow_twins`, one SGD step
and config errors."""
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
  """(config, method, views, params, state, jitted loss) of the smoke preset
  on fixed random views, built once: XLA compiles dominate on CPU."""
  if not _CACHE:
    config = load_config("configs/barlow_twins.py:smoke")
    method = methods.make(config)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    views = tuple(jax.random.normal(k, (8, 16, 16, 3)) for k in (k1, k2))
    params, state = jax.jit(method.init)(k3, views)
    _CACHE["smoke"] = (config, method, views, params, state,
                       jax.jit(method.loss))
  return _CACHE["smoke"]


def test_one_device_equals_eight_and_trains():
  config = load_config("configs/barlow_twins.py:smoke")
  batches = mt.digit_batches(config, 3)
  (_, h1), _ = mt.assert_one_device_equals_eight(config, batches)
  assert all(np.isfinite(h["proj_std"]) for h in h1)


def test_loss_is_barlow_twins_of_the_two_views_projections():
  config, _, views, params, state, loss = _setup()
  value, (new, metrics) = loss(params, state, views, {}, jax.random.key(0), 0)
  # By hand: both views through one pass (BN over 2B), split, the loss
  # (jitted: eager ResNet ops are slow on a busy CPU).
  net = EncoderProjector(models.make_encoder(config.model),
                         models.make_projector(config.projector))
  z = jax.jit(lambda v, x: net.apply(v, x, train=True,
                                     mutable=["batch_stats"])[0][1])(
                                         {"params": params, **state},
                                         jnp.concatenate(views))
  ref = losses.barlow_twins(z[:8], z[8:], lambda_param=0.0051,
                            scale=config.loss.scale)
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  assert jax.tree.structure(new) == jax.tree.structure(state)
  assert 0 < float(metrics["repr_std"]) < 1


def test_one_sgd_step_lowers_the_loss_on_fixed_views():
  _, method, views, params, state, loss = _setup()

  def f(p):
    return method.loss(p, state, views, {}, jax.random.key(0), 0)[0]

  value, grads = jax.jit(jax.value_and_grad(f))(params)
  stepped = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
  after = loss(stepped, state, views, {}, jax.random.key(0), 0)[0]
  assert float(after) < float(value)


def test_bad_configs_fail_in_make():
  c = load_config("configs/barlow_twins.py:smoke")
  c.views.num_views = 3
  with pytest.raises(ValueError, match="exactly 2 views"):
    methods.make(c)
  c = load_config("configs/barlow_twins.py:smoke")
  c.loss.lambda_param = -1.0
  with pytest.raises(ValueError, match="lambda_param >= 0"):
    methods.make(c)
