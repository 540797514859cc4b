"""MoCo v2: sharding (queue and key encoder included), the FIFO queue, the
key-encoder EMA, stop-gradients, one SGD step and config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods, models
from jssl.methods.common import EncoderProjector
from jssl_testing import load_config
import methods_testing as mt

B, K = 8, 16          # fixed-view tests: batch 8, queue of 2 batches
LENGTH = methods.TrainLength(total_steps=10, steps_per_epoch=2.0)


def _config(symmetric=True, **loss):
  c = load_config("configs/mocov2.py:smoke")
  c.batch_size = B
  c.loss.update(queue_size=K, symmetric=symmetric, **loss)
  return c


_CACHE = {}


def _setup(symmetric):
  """(config, method, views, params, state, jitted loss), built once per
  module: XLA compiles dominate these tests' time on CPU."""
  if symmetric not in _CACHE:
    config = _config(symmetric=symmetric)
    method = methods.make(config, LENGTH)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    views = tuple(jax.random.normal(k, (B, 16, 16, 3)) for k in (k1, k2))
    params, state = jax.jit(method.init)(k3, views)
    _CACHE[symmetric] = (config, method, views, params, state,
                         jax.jit(method.loss))
  return _CACHE[symmetric]


def _keys(config, state, x):
  """Unit keys of images x from the key network, by hand."""
  net = EncoderProjector(models.make_encoder(config.model),
                         models.make_projector(config.projector))
  k = _apply(net, {"params": state["key_params"],
                   "batch_stats": state["key_batch_stats"]}, x)
  return np.asarray(k / jnp.linalg.norm(k, axis=-1, keepdims=True))


def _apply(net, variables, x):
  """Projections of x in train mode (batch statistics), jitted: eager ResNet
  ops are slow on a busy CPU."""
  return jax.jit(lambda v, x: net.apply(v, x, train=True,
                                        mutable=["batch_stats"])[0][1])(
                                            variables, x)


def _with_ptr(state, ptr):
  return dict(state, queues=tuple(
      losses.QueueState(q.queue, jnp.asarray(ptr, jnp.int32))
      for q in state["queues"]))


def test_one_device_equals_eight_with_queue_and_key_encoder():
  config = load_config("configs/mocov2.py:smoke")   # symmetric, K = 3 x 32
  batches = mt.digit_batches(config, 4)             # the ring wraps at step 3
  # atol 1e-5: the queue holds unit-vector coordinates (|x| ~ 0.1) written
  # after 4 LARS steps, whose per-layer trust ratios amplify the float
  # reduction-order noise between 1 and 8 devices to ~3e-6 on a few entries.
  (s1, h1), _ = mt.assert_one_device_equals_eight(config, batches, atol=1e-5)
  for q in s1.method_state["queues"]:
    assert int(q.ptr) == (4 * 32) % 96
    np.testing.assert_allclose(np.linalg.norm(q.queue, axis=1), 1.0, rtol=1e-5)
  # The key encoder moved away from its initial copy of the query encoder,
  # but is not equal to it (EMA, not a copy).
  kp, qp = s1.method_state["key_params"], s1.params
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), kp, qp)
  assert max(jax.tree.leaves(diffs)) > 0
  assert np.all(np.isfinite([h["loss"] for h in h1]))


@pytest.mark.parametrize("symmetric", [False, True])
def test_queue_is_fifo_of_unit_keys_and_wraps(symmetric):
  config, _, views, params, state, loss = _setup(symmetric)
  state = _with_ptr(state, K - B)                   # last slot of the ring
  old = [np.asarray(q.queue) for q in state["queues"]]
  value, (new, _) = loss(params, state, views, {}, jax.random.key(1), 0)
  x_k = jnp.concatenate(views) if symmetric else views[1]
  k = _keys(config, state, x_k)
  # Query-view order of positives: official q<-view1, k<-view2; symmetric:
  # queue 1 collects view-1 keys, queue 2 view-2 keys.
  written = [k[:B], k[B:]] if symmetric else [k]
  for q_old, q_new, keys in zip(old, new["queues"], written):
    assert int(q_new.ptr) == 0                      # wrapped around
    np.testing.assert_allclose(q_new.queue[K - B:], keys, atol=1e-5)
    np.testing.assert_array_equal(q_new.queue[:K - B], q_old[:K - B])
    np.testing.assert_allclose(np.linalg.norm(q_new.queue, axis=1), 1.0,
                               rtol=1e-5)
  if not symmetric:
    # The loss read the queue BEFORE the keys were written (MoCo Alg. 1).
    net = EncoderProjector(models.make_encoder(config.model),
                           models.make_projector(config.projector))
    q = _apply(net, {"params": params, "batch_stats": state["batch_stats"]},
               views[0])
    q = np.asarray(q / jnp.linalg.norm(q, axis=-1, keepdims=True))
    logits = np.concatenate([np.sum(q * k, -1, keepdims=True), q @ old[0].T],
                            1) / config.loss.temperature
    ref = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
    np.testing.assert_allclose(value, ref, rtol=1e-4)
  # The next batch goes to the front of the ring; the previous one stays.
  views2 = tuple(v[::-1] for v in views)
  _, (new2, _) = loss(params, new, views2, {}, jax.random.key(2), 1)
  for q_new, q_new2 in zip(new["queues"], new2["queues"]):
    assert int(q_new2.ptr) == B
    np.testing.assert_array_equal(q_new2.queue[K - B:], q_new.queue[K - B:])
    assert not np.allclose(q_new2.queue[:B], q_new.queue[:B])


def test_no_gradient_into_key_encoder_or_queue():
  _, method, views, params, state, loss = _setup(True)
  assert set(params) == {"encoder", "projector"}     # theta_k is not trained

  def f(params, key_params, queues):
    s = dict(state, key_params=key_params, queues=tuple(
        losses.QueueState(q, old.ptr) for q, old in zip(queues,
                                                        state["queues"])))
    return method.loss(params, s, views, {}, jax.random.key(0), 0)[0]

  queues = tuple(q.queue for q in state["queues"])
  g_params, g_key, g_queue = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(
      params, state["key_params"], queues)
  assert all(np.all(g == 0) for g in jax.tree.leaves((g_key, g_queue)))
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_params)) > 0
  # The loss leaves theta_k alone; only update_state's EMA moves it.
  _, (new, _) = loss(params, state, views, {}, jax.random.key(0), 0)
  jax.tree.map(np.testing.assert_array_equal, new["key_params"], state["key_params"])


def test_key_encoder_ema_follows_the_cosine_momentum():
  _, _, _, params, state, _ = _setup(True)
  config = _config()
  config.momentum.update(base=0.9, final=0.99)
  method = methods.make(config, LENGTH)
  online = jax.tree.map(lambda p: p + 0.5, params)
  for step, m in ((0, 0.9), (LENGTH.total_steps // 2, 0.945),
                  (LENGTH.total_steps, 0.99)):
    new = method.update_state(online, state, step)
    jax.tree.map(lambda t, o, n: np.testing.assert_allclose(  # pylint: disable=cell-var-from-loop
        n, m * t + (1 - m) * o, rtol=1e-5, atol=1e-6),
                 state["key_params"], online, new["key_params"])
    assert new["queues"] is state["queues"]
  # A constant momentum (the paper's 0.999) needs no run length.
  config.momentum.update(base=0.999, final=0.999)
  const = methods.make(config)
  new = const.update_state(online, state, 123)
  t, o, n = (jax.tree.leaves(x)[0] for x in
             (state["key_params"], online, new["key_params"]))
  np.testing.assert_allclose(n, 0.999 * t + 0.001 * o, rtol=1e-4, atol=1e-6)


def test_one_sgd_step_lowers_the_loss_on_fixed_views():
  _, method, views, params, state, loss = _setup(False)

  def f(p):
    return method.loss(p, state, views, {}, jax.random.key(0), 0)[0]

  value, grads = jax.jit(jax.value_and_grad(f))(params)
  stepped = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
  after = loss(stepped, state, views, {}, jax.random.key(0), 0)[0]
  assert float(after) < float(value)


def test_bad_configs_fail_in_make():
  c = _config()
  c.loss.queue_size = 20
  with pytest.raises(ValueError, match="multiple of the global batch"):
    methods.make(c, LENGTH)
  c = _config()
  c.views.num_views = 3
  with pytest.raises(ValueError, match="num_views must be 2"):
    methods.make(c, LENGTH)
  c = _config()
  c.momentum.update(base=0.99, final=0.999)
  with pytest.raises(ValueError, match="depends on the run length"):
    methods.make(c)
  c = _config()
  c.momentum.final = 1.5
  with pytest.raises(ValueError, match="momentum.final"):
    methods.make(c, LENGTH)
