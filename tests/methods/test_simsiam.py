"""SimSiam: sharding invariance, the stop-gradient on z, batch norm per view,
one SGD step lowers the loss, bad configs fail in `make`."""
import jax
import numpy as np
import pytest

from jssl import losses, methods, schedules
from jssl.methods import common
from jssl_testing import load_config
import methods_testing as mt


@pytest.fixture(scope="module")
def setup():
  config = load_config("configs/simsiam.py:smoke")
  config.batch_size = 16
  method = methods.make(config)
  k1, k2 = jax.random.split(jax.random.key(1))
  x = jax.random.normal(k1, (16, 16, 16, 3))
  # Two fixed, different 'views' (the loss sees arrays only).
  views = (x, x + 0.5 * jax.random.normal(k2, x.shape))
  with jax.threefry_partitionable(False):  # fast init compile (see step.py)
    params, state = jax.jit(method.init)(jax.random.key(0), views)
  loss_and_grad = jax.jit(jax.value_and_grad(
      lambda p: method.loss(p, state, views, {}, jax.random.key(0), 0)[0]))
  return config, method, views, params, state, loss_and_grad


def test_simsiam_one_device_equals_eight():
  config = load_config("configs/simsiam.py:smoke")
  config.fix_pred_lr = True    # the cifar10 / imagenet presets' grouped lr
  batches = mt.digit_batches(config, 3)
  (s1, h1), _ = mt.assert_one_device_equals_eight(config, batches)
  assert all(-1.0 <= h["loss"] <= 1.0 for h in h1)
  assert set(s1.method_state) == {"batch_stats"}  # no target, no momentum


def test_simsiam_stop_gradient_on_z_and_batch_norm_per_view(setup):
  config, _, views, params, state, loss_and_grad = setup
  _, net, _ = common.build_nets(config)
  variables = {"params": params, **state}

  def recomputed(p, stop):
    (h, z, pr), _ = common.apply_per_view(
        net, dict(variables, params=p), views)
    sg = jax.lax.stop_gradient if stop else (lambda x: x)
    value = 0.5 * (losses.negative_cosine(pr[0], sg(z[1]))
                   + losses.negative_cosine(pr[1], sg(z[0])))
    return value, h

  @jax.jit
  def reference(p):
    (value, h), g_sg = jax.value_and_grad(
        lambda p: recomputed(p, True), has_aux=True)(p)
    g_no = jax.grad(lambda p: recomputed(p, False)[0])(p)
    # View 1 alone through the network, batch statistics of view 1 only.
    h1 = net.apply(variables, views[0], train=True,
                   mutable=["batch_stats"])[0][0]
    return value, g_sg, g_no, h, h1

  value, g = loss_and_grad(params)
  value_sg, g_sg, g_no, h, h1 = reference(params)
  np.testing.assert_allclose(value, value_sg, rtol=1e-6)
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
  np.testing.assert_allclose(flat(g), flat(g_sg), rtol=1e-4, atol=1e-7)
  # Without the stop-gradient the encoder gradient differs (z gets one too).
  assert not np.allclose(flat(g["encoder"]), flat(g_no["encoder"]),
                         rtol=1e-3, atol=1e-6)
  # Batch norm per view: view 1's features use view 1's batch statistics
  # only, as the official builder (one encoder call per view) does.
  np.testing.assert_allclose(h[0], h1, rtol=1e-5, atol=1e-6)


def test_simsiam_one_sgd_step_lowers_the_loss_on_fixed_views(setup):
  *_, params, _, loss_and_grad = setup
  before, g = loss_and_grad(params)
  after, _ = loss_and_grad(jax.tree.map(lambda p, d: p - 0.05 * d, params, g))
  assert -1.0 <= float(after) < float(before) <= 1.0


def test_simsiam_bad_configs_fail_in_make():
  config = load_config("configs/simsiam.py:smoke")
  config.views.num_views = 1
  with pytest.raises(ValueError, match="SimSiam compares exactly 2 views"):
    methods.make(config)
  config = load_config("configs/simsiam.py:smoke")
  del config.predictor
  with pytest.raises(ValueError, match=r"needs config fields \['predictor'\]"):
    methods.make(config)


def test_simsiam_fix_pred_lr_holds_the_predictor_at_the_peak_lr(setup):
  """--fix-pred-lr: in the warm-up's first step (lr 0) only the predictor moves;
  without it nothing does."""
  config, _, _, params, _, loss_and_grad = setup
  assert load_config("configs/simsiam.py:cifar10").fix_pred_lr
  assert load_config("configs/simsiam.py:imagenet").fix_pred_lr
  _, g = loss_and_grad(params)
  moved = {}
  for fixed in (True, False):
    config.fix_pred_lr = fixed
    m = methods.make(config)
    assert m.constant_lr == (("predictor",) if fixed else ())
    tx, sched = schedules.make_optimizer(config.optimizer, global_batch=16, total_steps=100,
                                         steps_per_epoch=5, constant_lr=m.constant_lr)
    assert float(sched(0)) == 0.0
    upd, _ = tx.update(g, tx.init(params), params)
    moved[fixed] = {k: any(bool(np.any(np.asarray(u) != 0)) for u in jax.tree.leaves(v))
                    for k, v in upd.items()}
  assert moved[True]["predictor"] and not moved[True]["encoder"]
  assert not any(moved[False].values())
