"""BYOL: sharding invariance (EMA target included), no gradient into the
target, the cosine-momentum EMA rule by hand, one SGD step lowers the loss,
bad configs fail in `make`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import methods
from jssl.data import recipes as views_lib
from jssl_testing import load_config
import methods_testing as mt

LENGTH = methods.TrainLength(total_steps=10, steps_per_epoch=2.0)


def _fixed_views(config):
  """Two fixed, different 'views' [B, 16, 16, 3] (the loss sees arrays only)."""
  k1, k2 = jax.random.split(jax.random.key(1))
  shape = (config.batch_size, 16, 16, 3)
  x = jax.random.normal(k1, shape)
  return (x, x + 0.5 * jax.random.normal(k2, shape))


@pytest.fixture(scope="module")
def setup():
  """Fixed views of one small batch, the initial state, and the loss as a
  jitted function of (online params, target params) with its gradients."""
  config = load_config("configs/byol.py:smoke")
  config.batch_size = 16
  method = methods.make(config, LENGTH)
  views = _fixed_views(config)
  with jax.threefry_partitionable(False):  # fast init compile (see step.py)
    params, state = jax.jit(method.init)(jax.random.key(0), views)

  @jax.jit
  def loss_and_grads(p, target_params):
    def f(p, tp):
      s = dict(state, target=dict(state["target"], params=tp))
      value, (new_state, _) = method.loss(p, s, views, {}, jax.random.key(0), 0)
      return value, new_state
    (value, new_state), grads = jax.value_and_grad(
        f, argnums=(0, 1), has_aux=True)(p, target_params)
    return value, new_state, grads

  return method, params, state, loss_and_grads


def test_byol_one_device_equals_eight_including_target():
  config = load_config("configs/byol.py:smoke")
  batches = mt.digit_batches(config, 3)
  (s1, h1), _ = mt.assert_one_device_equals_eight(config, batches)
  # The EMA target moved towards the online network but is not equal to it.
  t = s1.method_state["target"]["params"]["projector"]["out"]["kernel"]
  o = s1.params["projector"]["out"]["kernel"]
  assert not np.allclose(t, o)
  assert 0.0 < h1[0]["ema_momentum"] < 1.0


def test_byol_no_gradient_reaches_the_target(setup):
  _, params, state, loss_and_grads = setup
  assert set(params) == {"encoder", "projector", "predictor"}
  assert set(state["target"]["params"]) == {"encoder", "projector"}
  _, new_state, (g_online, g_target) = loss_and_grads(
      params, state["target"]["params"])
  # The target is a constant of the loss (stop-gradient), ...
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g_target))
  # ... the loss does not touch its parameters (only its BN statistics), ...
  jax.tree.map(np.testing.assert_array_equal, new_state["target"]["params"],
               state["target"]["params"])
  # ... while every part of the online network gets a gradient.
  for part in ("encoder", "projector", "predictor"):
    assert sum(float(jnp.abs(x).sum())
               for x in jax.tree.leaves(g_online[part])) > 0, part


def test_byol_ema_update_follows_the_cosine_momentum(setup):
  method, params, state, _ = setup
  # Move the online network away from the target so the EMA is visible.
  params = jax.tree.map(lambda x: x + 0.5, params)
  update = jax.jit(method.update_state)
  for step in (0, 3, LENGTH.total_steps):
    new = update(params, state, jnp.int32(step))
    # BYOL Sec. 3.2 with tau_base = 0.99 (smoke preset), K = total steps;
    # tau = 1 at step K: the target stops moving.
    tau = 1 - (1 - 0.99) * (np.cos(np.pi * step / LENGTH.total_steps) + 1) / 2
    for key in ("encoder", "projector"):
      want = jax.tree.map(lambda t, o: tau * t + (1 - tau) * o,
                          state["target"]["params"][key], params[key])
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                   new["target"]["params"][key], want)
    # Only parameters are averaged; BN statistics and the online state stay.
    jax.tree.map(np.testing.assert_array_equal, new["target"]["batch_stats"],
                 state["target"]["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, new["batch_stats"], state["batch_stats"])


def test_byol_one_sgd_step_lowers_the_loss_on_fixed_views(setup):
  _, params, state, loss_and_grads = setup
  target = state["target"]["params"]
  before, _, (g, _) = loss_and_grads(params, target)
  after, _, _ = loss_and_grads(
      jax.tree.map(lambda p, d: p - 0.05 * d, params, g), target)
  assert 0.0 <= float(after) < float(before) <= 8.0


def test_byol_bad_configs_fail_in_make():
  config = load_config("configs/byol.py:smoke")
  config.views.num_views = 3
  with pytest.raises(ValueError, match="BYOL compares exactly 2 views"):
    methods.make(config, LENGTH)
  config = load_config("configs/byol.py:smoke")
  views_lib.add_local_crops(config.views, num=2, image_size=8, scale=(0.05, 0.3))
  with pytest.raises(ValueError, match="BYOL uses no multi-crop local views"):
    methods.make(config, LENGTH)
  config = load_config("configs/byol.py:smoke")
  with pytest.raises(ValueError, match="run length"):
    methods.make(config)
  config.ema.base_momentum = 1.5
  with pytest.raises(ValueError, match="base_momentum"):
    methods.make(config, LENGTH)
