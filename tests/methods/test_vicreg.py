"""VICReg: sharding, wiring to `jssl.losses.vicreg` (and its three logged
terms), one SGD step and config errors."""
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
    config = load_config("configs/vicreg.py:smoke")
    method = methods.make(config)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    views = tuple(jax.random.normal(k, (8, 16, 16, 3)) for k in (k1, k2))
    params, state = jax.jit(method.init)(k3, views)
    _CACHE["smoke"] = (config, method, views, params, state,
                       jax.jit(method.loss))
  return _CACHE["smoke"]


def test_one_device_equals_eight_and_trains():
  config = load_config("configs/vicreg.py:smoke")
  batches = mt.digit_batches(config, 3)
  (_, h1), (_, h8) = mt.assert_one_device_equals_eight(config, batches)
  for name in ("invariance", "variance", "covariance"):
    np.testing.assert_allclose([h[name] for h in h1], [h[name] for h in h8],
                               rtol=2e-5, atol=1e-7)


def test_loss_and_logged_terms_are_vicreg_of_the_projections():
  config, _, views, params, state, loss = _setup()
  value, (_, metrics) = loss(params, state, views, {}, jax.random.key(0), 0)
  net = EncoderProjector(models.make_encoder(config.model),
                         models.make_projector(config.projector))
  # By hand (jitted: eager ResNet ops are slow on a busy CPU).
  z = jax.jit(lambda v, x: net.apply(v, x, train=True,
                                     mutable=["batch_stats"])[0][1])(
                                         {"params": params, **state},
                                         jnp.concatenate(views))
  ref, terms = losses.vicreg(z[:8], z[8:], sim_coeff=25.0, std_coeff=25.0,
                             cov_coeff=1.0)
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  for name in ("invariance", "variance", "covariance"):
    np.testing.assert_allclose(metrics[name], getattr(terms, name), rtol=1e-5)
  np.testing.assert_allclose(
      value, 25 * metrics["invariance"] + 25 * metrics["variance"]
      + metrics["covariance"], rtol=1e-5)


def test_one_sgd_step_lowers_the_loss_on_fixed_views():
  _, method, views, params, state, loss = _setup()

  def f(p):
    return method.loss(p, state, views, {}, jax.random.key(0), 0)[0]

  value, grads = jax.jit(jax.value_and_grad(f))(params)
  stepped = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
  after = loss(stepped, state, views, {}, jax.random.key(0), 0)[0]
  assert float(after) < float(value)


def test_bad_configs_fail_in_make():
  c = load_config("configs/vicreg.py:smoke")
  c.views.num_views = 1
  with pytest.raises(ValueError, match="exactly 2 views"):
    methods.make(c)
  c = load_config("configs/vicreg.py:smoke")
  c.loss.std_coeff = -25.0
  with pytest.raises(ValueError, match="coefficients must be >= 0"):
    methods.make(c)
