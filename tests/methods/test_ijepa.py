"""I-JEPA: 1 == 8 devices (EMA target included), no gradient into the target
encoder, the context encoder sees only the (unpadded) context tokens, one SGD
step lowers the loss, evaluation uses the target encoder, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import masks, methods
from jssl.errors import ConfigError
from jssl.methods import ijepa
from jssl_testing import load_config
import methods_testing as mt

LENGTH = methods.TrainLength(total_steps=10, steps_per_epoch=2.0)


def _config():
  return load_config("configs/ijepa.py:smoke")


@pytest.fixture(autouse=True)
def _classic_threefry():
  with jax.threefry_partitionable(False):   # as jssl.step traces the step
    yield


@pytest.fixture(scope="module")
def setup():
  config = _config()
  config.batch_size = 8
  method = methods.make(config, LENGTH)
  x = jax.random.normal(jax.random.key(3), (8, 16, 16, 3))
  with jax.threefry_partitionable(False):
    params, state = jax.jit(method.init)(jax.random.key(0), (x,))
  key = jax.random.key(7)

  @jax.jit
  def loss_and_grads(p, target_params, x):
    def f(p, tp):
      s = dict(state, target=dict(state["target"], params=tp))
      return method.loss(p, s, (x,), {}, key, 0)[0]
    return jax.value_and_grad(f, argnums=(0, 1))(p, target_params)

  return config, method, params, state, x, key, loss_and_grads


@pytest.mark.parametrize("placement", ["ijepa", "uniform"])
def test_one_device_equals_eight_including_target(placement):
  config = _config()
  config.masks.placement = placement      # 'uniform': the quickstart's
  (s1, h1), _ = mt.assert_one_device_equals_eight(config, mt.digit_batches(config, 3))
  t = s1.method_state["target"]["params"]["encoder"]["patch_embed"]["kernel"]
  assert not np.allclose(t, s1.params["encoder"]["patch_embed"]["kernel"])
  assert 0.996 <= h1[1]["ema_momentum"] < 1.0
  assert h1[0]["target_tokens"] >= 1 and h1[0]["context_tokens"] >= 1


def test_no_gradient_into_target_and_context_only(setup):
  config, method, params, state, x, key, loss_and_grads = setup
  assert set(params) == {"encoder", "predictor"} and set(state["target"]["params"]) == {"encoder"}
  value, (g_online, g_target) = loss_and_grads(params, state["target"]["params"], x)
  assert np.isfinite(float(value))
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_target))
  for part in ("encoder", "predictor"):
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(g_online[part])) > 0, part
  # The predictions depend on the context patches' pixels only (padded slots
  # point at patch 0 and are masked as keys): change every other patch.
  grid, mcfg, _ = ijepa.check(config)
  mb = masks.multiblock(key, 8, grid, **mcfg)
  predictor = ijepa.make_predictor(config, method.encoder)
  forward = jax.jit(lambda x: predictor.apply(
      {"params": params["predictor"]},
      ijepa.apply_with_key_valid(
          method.encoder, {"params": params["encoder"]}, x,
          jnp.concatenate([jnp.ones((8, 1), bool), mb.context_valid[0]], 1),
          train=True, keep_indices=mb.context[0])["tokens"],
      mb.context, mb.context_valid, mb.targets, mb.target_valid, grid))
  in_ctx = np.zeros((8, 16), bool)
  for i in range(8):
    in_ctx[i, np.asarray(mb.context[0, i])[np.asarray(mb.context_valid[0, i])]] = True
  assert not in_ctx[:, 0].all()                       # patch 0 is outside some context
  px = np.repeat(np.repeat(in_ctx.reshape(8, 4, 4), 4, 1), 4, 2)[..., None]
  x2 = jnp.where(px, x, 30.0)
  p1, p2 = forward(x), forward(x2)
  np.testing.assert_allclose(p2, p1, atol=1e-5)
  # ... and do depend on them (the check has power).
  assert float(jnp.max(jnp.abs(forward(jnp.where(px, 30.0, x)) - p1))) > 1e-3
  # Evaluation: the TARGET encoder, average-pooled patch tokens.
  moved = dict(state, target={"params": jax.tree.map(lambda a: a + 0.01,
                                                     state["target"]["params"]),
                              "batch_stats": {}})
  feats = jax.jit(method.encode)(params, moved, x)
  np.testing.assert_allclose(feats["pre_logits"], feats["tokens"].mean(1), rtol=1e-5, atol=1e-6)
  ref = method.encoder.apply({"params": moved["target"]["params"]["encoder"]}, x, train=False)
  np.testing.assert_allclose(feats["pre_logits"], ref["pre_logits"], rtol=1e-5, atol=1e-6)


def test_one_sgd_step_lowers_the_loss(setup):
  _, _, params, state, x, _, loss_and_grads = setup
  before, (grads, _) = loss_and_grads(params, state["target"]["params"], x)
  stepped = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
  after, _ = loss_and_grads(stepped, state["target"]["params"], x)
  assert float(after) < float(before)


def test_ema_momentum_is_linear(setup):
  _, method, params, state, *_ = setup
  moved = jax.tree.map(lambda a: a + 1.0, params)
  new = method.update_state(moved, state, 5)           # m = 0.996 + 0.004 * 5 / 10
  m = 0.996 + 0.004 * 0.5
  k = ("encoder", "patch_embed", "kernel")
  t0, p1 = state["target"]["params"], moved
  get = lambda t: t[k[0]][k[1]][k[2]]  # noqa: E731
  np.testing.assert_allclose(get(new["target"]["params"]), m * get(t0) + (1 - m) * get(p1),
                             rtol=1e-6, atol=1e-7)


def test_config_errors():
  config = _config()
  config.model = load_config("configs/simclr.py:smoke").model
  with pytest.raises(ConfigError, match=r"config.model.name='resnet_tiny' is not a ViT"):
    methods.make(config, LENGTH)
  config = _config()
  config.model.pool = "cls"
  with pytest.raises(ConfigError, match=r"config.model.pool='cls'"):
    methods.make(config, LENGTH)
  config = _config()
  config.masks.min_keep = 5
  with pytest.raises(ConfigError, match=r"config.masks.min_keep=5"):
    methods.make(config, LENGTH)
  config = _config()
  config.masks.placement = "random"
  with pytest.raises(ConfigError, match=r"config.masks.placement='random' must be one of"):
    methods.make(config, LENGTH)
  config = _config()
  config.predictor.num_heads = 3
  with pytest.raises(ConfigError, match=r"config.predictor.width=32"):
    methods.make(config, LENGTH)
  config = _config()
  config.views.num_views = 2
  with pytest.raises(ConfigError, match="num_views=2"):
    methods.make(config, LENGTH)
  with pytest.raises(ValueError, match="run length"):
    methods.make(_config())
