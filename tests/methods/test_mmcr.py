"""MMCR: sharding invariance with the momentum encoder (EMA state included), the loss
is `mmcr_official` of the network's projections (sample-major), no gradient into the
momentum encoder, one SGD step lowers the loss, bad configs fail in `make`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods, models
from jssl.methods.common import EncoderProjector
from jssl_testing import load_config
import methods_testing as mt

LENGTH = methods.TrainLength(total_steps=10, steps_per_epoch=2.0)
_CACHE = {}


def _config(momentum):
  c = load_config("configs/mmcr.py:smoke")
  c.loss.momentum_encoder = momentum
  c.batch_size = 8
  return c


def _setup(momentum):
  """(config, method, views, params, state, jitted loss-and-grads) on fixed views."""
  if momentum not in _CACHE:
    config = _config(momentum)
    method = methods.make(config, LENGTH)
    keys = jax.random.split(jax.random.key(0), 4)
    views = tuple(jax.random.normal(k, (8, 16, 16, 3)) for k in keys[:3])
    with jax.threefry_partitionable(False):
      params, state = jax.jit(method.init)(keys[3], views)

    @jax.jit
    def loss_and_grads(p, s):
      def f(p, s):
        value, (new_state, metrics) = method.loss(p, s, views, {}, jax.random.key(0), 0)
        return value, (new_state, metrics)
      return jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(p, s)

    _CACHE[momentum] = (config, method, views, params, state, loss_and_grads)
  return _CACHE[momentum]


def test_mmcr_momentum_one_device_equals_eight_and_trains():
  config = _config(True)
  config.batch_size = 16
  batches = mt.digit_batches(config, 2)
  (s1, h1), _ = mt.assert_one_device_equals_eight(config, batches)
  t = s1.method_state["target"]["params"]["projector"]["out"]["kernel"]
  assert not np.allclose(t, s1.params["projector"]["out"]["kernel"])
  np.testing.assert_allclose(h1[0]["ema_momentum"], 0.99, rtol=1e-6)
  np.testing.assert_allclose(h1[0]["loss"], -h1[0]["global_nuc"], rtol=1e-6)


def test_mmcr_loss_is_the_official_loss_of_the_projections():
  config, _, views, params, state, loss_and_grads = _setup(False)
  (value, (_, metrics)), _ = loss_and_grads(params, state)
  net = EncoderProjector(models.make_encoder(config.model),
                         models.make_projector(config.projector))
  z = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"])[0][1])(
      {"params": params, **state}, jnp.concatenate(views))
  z = np.asarray(z).reshape(3, 8, -1)
  # By hand (numpy): unit rows, centroid of each image's 3 views, nuclear norm.
  u = z / np.linalg.norm(z, axis=-1, keepdims=True)
  want = -np.linalg.svd(u.mean(0), compute_uv=False).sum()
  np.testing.assert_allclose(value, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["global_nuc"], -want, rtol=1e-5)
  # The sample-major layout matters once the local term is on.
  ref, _ = losses.mmcr_official(jnp.asarray(z.transpose(1, 0, 2).reshape(24, -1)),
                                num_views=3, lmbda=0.0)
  np.testing.assert_allclose(value, ref, rtol=1e-5)


def test_mmcr_no_gradient_reaches_the_momentum_encoder_and_a_step_lowers_the_loss():
  _, _, _, params, state, loss_and_grads = _setup(True)
  (before, (new_state, _)), (g_online, g_state) = loss_and_grads(params, state)
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g_state["target"]))
  jax.tree.map(np.testing.assert_array_equal, new_state["target"]["params"],
               state["target"]["params"])
  for part in ("encoder", "projector"):
    assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(g_online[part])) > 0
  stepped = jax.tree.map(lambda p, g: p - 0.01 * g, params, g_online)
  (after, _), _ = loss_and_grads(stepped, state)
  assert float(after) < float(before) < 0.0


def test_mmcr_bad_configs_fail_in_make():
  c = _config(False)
  c.views.num_views = 1
  with pytest.raises(ValueError, match="config.views.num_views=1"):
    methods.make(c, LENGTH)
  c = _config(False)
  c.loss.lmbda = -0.1
  with pytest.raises(ValueError, match="config.loss.lmbda"):
    methods.make(c, LENGTH)
  c = _config(True)
  with pytest.raises(ValueError, match="run length"):
    methods.make(c)
