"""TiCo: sharding (momentum encoder and covariance included), the covariance
state by hand, no gradient into the momentum encoder or C, the EMA rule, one
SGD step lowers the loss, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods, models
from jssl.methods import common
from jssl_testing import load_config
import methods_testing as mt

LENGTH = methods.TrainLength(total_steps=10, steps_per_epoch=2.0)
B = 8


def _config():
  c = load_config("configs/tico.py:smoke")
  c.batch_size = B
  return c


@pytest.fixture(scope="module")
def setup():
  """Fixed views, the initial state (with a non-zero C), and the loss as a jitted
  function of (online params, momentum-encoder params, C) with its gradients."""
  config = _config()
  method = methods.make(config, LENGTH)
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(k1, (B, 16, 16, 3))
  views = (x, x + 0.5 * jax.random.normal(k2, x.shape))
  params, state = jax.jit(method.init)(k3, views)
  d = config.projector.out_dim
  state = dict(state, cov=jnp.eye(d, dtype=jnp.float32) / d)

  @jax.jit
  def loss_and_grads(p, target_params, cov):
    def f(p, tp, cov):
      s = dict(state, cov=cov, target=dict(state["target"], params=tp))
      value, (new_state, _) = method.loss(p, s, views, {}, jax.random.key(0), 0)
      return value, new_state
    return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(p, target_params, cov)

  return config, method, views, params, state, loss_and_grads


def test_tico_one_device_equals_eight_including_momentum_encoder_and_cov():
  config = load_config("configs/tico.py:smoke")
  batches = mt.digit_batches(config, 3)
  (s1, h1), _ = mt.assert_one_device_equals_eight(config, batches)
  cov = np.asarray(s1.method_state["cov"])
  # C is a mixture of u^T u / N of unit rows: symmetric PSD with trace 1 - 0.9^steps.
  np.testing.assert_allclose(cov, cov.T, atol=1e-7)
  np.testing.assert_allclose(np.trace(cov), 1 - 0.9 ** 3, rtol=1e-5)
  assert np.min(np.linalg.eigvalsh(cov)) > -1e-6
  t = s1.method_state["target"]["params"]["projector"]["out"]["kernel"]
  assert not np.allclose(t, s1.params["projector"]["out"]["kernel"])
  assert 0.0 < h1[0]["ema_momentum"] < 1.0


def test_tico_loss_and_cov_by_hand_no_gradient_into_target_or_cov(setup):
  config, _, views, params, state, loss_and_grads = setup
  (value, new_state), (g_online, g_target, g_cov) = loss_and_grads(
      params, state["target"]["params"], state["cov"])
  # z_a from the online network on view 1, z_b from the momentum encoder on view 2.
  net = common.SiameseNet(encoder=models.make_encoder(config.model),
                          projector=common.projector_of(config))
  (_, za, _), _ = common.apply_per_view(
      net, {"params": params, "batch_stats": state["batch_stats"]}, views[:1])
  (_, zb, _), _ = common.apply_per_view(net, state["target"], views[1:])
  want, cov = losses.tico(za[0], zb[0], state["cov"], beta=0.9, rho=8.0)
  np.testing.assert_allclose(value, want, rtol=1e-5)
  np.testing.assert_allclose(new_state["cov"], cov, rtol=1e-5, atol=1e-7)
  # The momentum encoder and C are constants of the loss ...
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g_target))
  assert np.all(np.asarray(g_cov) == 0)
  # ... the loss leaves the momentum encoder's parameters alone ...
  jax.tree.map(np.testing.assert_array_equal, new_state["target"]["params"],
               state["target"]["params"])
  # ... while the online network is trained.
  for part in ("encoder", "projector"):
    assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(g_online[part])) > 0, part


def test_tico_momentum_encoder_follows_the_cosine_momentum(setup):
  _, method, _, params, state, _ = setup
  online = jax.tree.map(lambda x: x + 0.5, params)
  for step in (0, LENGTH.total_steps):
    new = jax.jit(method.update_state)(online, state, jnp.int32(step))
    tau = 1 - (1 - 0.99) * (np.cos(np.pi * step / LENGTH.total_steps) + 1) / 2
    want = jax.tree.map(lambda t, o: tau * t + (1 - tau) * o, state["target"]["params"], online)
    mt.assert_trees_close(new["target"]["params"], want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(new["cov"], state["cov"])


def test_tico_one_sgd_step_lowers_the_loss_on_fixed_views(setup):
  _, _, _, params, state, loss_and_grads = setup
  target, cov = state["target"]["params"], state["cov"]
  (before, _), (g, _, _) = loss_and_grads(params, target, cov)
  (after, _), _ = loss_and_grads(jax.tree.map(lambda p, d: p - 0.05 * d, params, g), target, cov)
  assert float(after) < float(before)


def test_tico_bad_configs_fail_in_make():
  c = _config()
  c.loss.beta = 1.0
  with pytest.raises(ValueError, match=r"config.loss.beta=1.0"):
    methods.make(c, LENGTH)
  c = _config()
  c.loss.rho = -1.0
  with pytest.raises(ValueError, match=r"config.loss.rho"):
    methods.make(c, LENGTH)
  c = _config()
  c.views.num_views = 3
  with pytest.raises(ValueError, match="TiCo compares exactly 2 views"):
    methods.make(c, LENGTH)
  with pytest.raises(ValueError, match="run length"):
    methods.make(_config())
