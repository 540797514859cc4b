"""MoCo v3: sharding invariance (momentum encoder included), no gradient into
the momentum encoder, the cosine-momentum EMA rule by hand, one SGD step
lowers the loss, the ViT's frozen random patch projection, bad configs."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jssl import methods, schedules
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
  jitted function of (query params, momentum-encoder params) with grads."""
  config = load_config("configs/mocov3.py:smoke")
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


def test_mocov3_one_device_equals_eight_including_momentum_encoder():
  config = load_config("configs/mocov3.py:smoke")
  batches = mt.digit_batches(config, 3)
  (s1, h1), _ = mt.assert_one_device_equals_eight(config, batches)
  t = s1.method_state["target"]["params"]["projector"]["out"]["kernel"]
  assert not np.allclose(t, s1.params["projector"]["out"]["kernel"])


def test_mocov3_no_gradient_reaches_the_momentum_encoder(setup):
  _, params, state, loss_and_grads = setup
  assert set(params) == {"encoder", "projector", "predictor"}
  assert set(state["target"]["params"]) == {"encoder", "projector"}
  value, new_state, (g_online, g_target) = loss_and_grads(
      params, state["target"]["params"])
  # In-batch InfoNCE x 2T, two directions: at init about 2 * 2T * log(B).
  assert 0.0 < float(value) < 2 * 2 * 0.2 * np.log(16) * 1.5
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g_target))
  jax.tree.map(np.testing.assert_array_equal, new_state["target"]["params"],
               state["target"]["params"])
  for part in ("encoder", "projector", "predictor"):
    assert sum(float(jnp.abs(x).sum())
               for x in jax.tree.leaves(g_online[part])) > 0, part


def test_mocov3_momentum_update_follows_the_cosine_schedule(setup):
  method, params, state, _ = setup
  params = jax.tree.map(lambda x: x - 0.25, params)
  update = jax.jit(method.update_state)
  for step in (0, 4, LENGTH.total_steps):
    new = update(params, state, jnp.int32(step))
    # main_moco.py adjust_moco_momentum with m0 = 0.99 (smoke preset).
    m = 1 - 0.5 * (1 + np.cos(np.pi * step / LENGTH.total_steps)) * (1 - 0.99)
    for key in ("encoder", "projector"):
      want = jax.tree.map(lambda t, o: m * t + (1 - m) * o,
                          state["target"]["params"][key], params[key])
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                   new["target"]["params"][key], want)
    jax.tree.map(np.testing.assert_array_equal, new["target"]["batch_stats"],
                 state["target"]["batch_stats"])


def test_mocov3_one_sgd_step_lowers_the_loss_on_fixed_views(setup):
  _, params, state, loss_and_grads = setup
  target = state["target"]["params"]
  before, _, (g, _) = loss_and_grads(params, target)
  after, _, _ = loss_and_grads(
      jax.tree.map(lambda p, d: p - 0.5 * d, params, g), target)
  assert float(after) < float(before)


def test_mocov3_vit_random_patch_projection_stays_frozen():
  config = load_config("configs/mocov3.py:smoke")
  config.model = ml_collections.ConfigDict(
      dict(name="vit_test", patch_size=4, dtype="float32"))
  config.freeze_patch_embed = True
  config.batch_size = 16
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_lr=1e-2, weight_decay=0.1, warmup_epochs=0.0))
  method = methods.make(config, LENGTH)
  assert method.frozen == (("encoder/patch_embed", 2**31 - 1),)
  tx, _ = schedules.make_optimizer(
      config.optimizer, global_batch=16, total_steps=LENGTH.total_steps,
      steps_per_epoch=LENGTH.steps_per_epoch, frozen=method.frozen)
  views = _fixed_views(config)
  with jax.threefry_partitionable(False):
    params, state = jax.jit(method.init)(jax.random.key(0), views)

  @jax.jit
  def train_step(params, state, opt_state, step):
    grads, (state, _) = jax.grad(method.loss, has_aux=True)(
        params, state, views, {}, jax.random.key(0), step)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, method.update_state(params, state, step), opt_state, grads

  p, s, o = params, state, tx.init(params)
  for step in range(2):
    p, s, o, grads = train_step(p, s, o, jnp.int32(step))
  # The patch embedding gets a gradient but never moves, in the query and
  # (as an EMA of a constant) in the momentum encoder.
  assert float(jnp.abs(grads["encoder"]["patch_embed"]["kernel"]).sum()) > 0
  frozen0 = params["encoder"]["patch_embed"]
  jax.tree.map(np.testing.assert_array_equal, p["encoder"]["patch_embed"], frozen0)
  # tau x + (1 - tau) x is x up to float rounding (1 ulp, codegen-dependent).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=3e-7, atol=1e-9),
               s["target"]["params"]["encoder"]["patch_embed"], frozen0)
  # The rest of the ViT trains.
  assert not np.allclose(p["encoder"]["block1"]["mlp_fc1"]["kernel"],
                         params["encoder"]["block1"]["mlp_fc1"]["kernel"])
  # No BN in a ViT: the evaluated variables are its parameters only.
  assert set(method.encoder_variables(p, s)) == {"params"}


def test_mocov3_bad_configs_fail_in_make():
  config = load_config("configs/mocov3.py:smoke")
  config.views.num_views = 4
  with pytest.raises(ValueError, match="MoCo v3 compares exactly 2 views"):
    methods.make(config, LENGTH)
  config = load_config("configs/mocov3.py:smoke")
  config.freeze_patch_embed = True
  with pytest.raises(ValueError, match="needs a ViT encoder"):
    methods.make(config, LENGTH)
  config = load_config("configs/mocov3.py:smoke")
  with pytest.raises(ValueError, match="MoCo v3 momentum depends on the run"):
    methods.make(config)
