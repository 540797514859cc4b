"""SwAV: 1 vs 8 devices, codes without gradient, unit / frozen prototypes,
queue FIFO, one step lowers the loss, bad configs."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jssl import losses, methods, sharding as shd
from jssl.methods import swav
from jssl_testing import load_config
import methods_testing as mt

B = 16   # global batch of these tests (the smoke preset uses 32)
# One setting for every test, so the compiled programs are shared (in-process
# and through the persistent compilation cache): 2 steps per epoch; prototypes
# frozen in steps 0-1; the queue (2 batches) fills from step 1 and is used
# from step 3.
SETTINGS = dict(queue_length=2 * B, epoch_queue_starts=0.5, freeze_prototypes_epochs=1.0)
LENGTH = methods.TrainLength(10, 2.0)   # the harness's default run length


def _config(**swav_kw):
  c = load_config("configs/swav.py:smoke")
  c.batch_size = B
  c.swav.update(**{**SETTINGS, **swav_kw})
  return c


def _views(seed=0, num_local=2):
  r = np.random.RandomState(seed)
  return (tuple(jnp.asarray(r.randn(B, 16, 16, 3), jnp.float32) for _ in range(2))
          + tuple(jnp.asarray(r.randn(B, 8, 8, 3), jnp.float32) for _ in range(num_local)))


@pytest.fixture(scope="module")
def setup():
  """The 1-device harness build of the shared setting (its programs are the
  ones `test_one_device_equals_eight...` compiled: persistent cache), its
  initial state, and one jitted `value_and_grad` of the loss for the direct
  checks (views and step are arguments, so it compiles once)."""
  config = _config()
  mesh = shd.make_mesh(devices=jax.devices()[:1])
  batches = mt.digit_batches(config, 3)
  method, init_fn, step = mt.build(config, mesh, batches[0])
  state = init_fn()

  @jax.jit
  def loss_and_grad(params, method_state, views, step_index):
    def f(p):
      return method.loss(p, method_state, views, None, jax.random.key(1), step_index)
    return jax.value_and_grad(f, has_aux=True)(params)

  return dict(method=method, mesh=mesh, batches=batches, step=step, state=state,
              loss_and_grad=loss_and_grad)


def test_one_device_equals_eight_with_queue_and_frozen_prototypes():
  config = _config()
  batches = mt.digit_batches(config, 4)
  (s1, h1), _ = mt.assert_one_device_equals_eight(config, batches)
  assert [h["queue_in_use"] for h in h1] == [0.0, 0.0, 0.0, 1.0]
  q = np.asarray(s1.method_state["queue"])
  assert q.shape == (2, 2 * B, 16)
  np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, rtol=1e-5)


def test_prototypes_frozen_first_epoch_then_updated(setup):
  assert setup["method"].frozen == ((swav.PROTOTYPES, 2),)
  # A copy: the step donates its input state, which other tests reuse.
  state = jax.tree.map(jnp.copy, setup["state"])
  w0 = np.asarray(state.params[swav.PROTOTYPES]["kernel"])
  enc0 = np.asarray(jax.tree.leaves(state.params["encoder"])[0])
  kernels = []
  for b in setup["batches"]:
    state, _ = setup["step"](state, shd.to_global(b, setup["mesh"]))
    kernels.append(np.asarray(state.params[swav.PROTOTYPES]["kernel"]))
  # Steps 0 and 1 (epoch 0): fixed; step 2: trained; the encoder trains throughout.
  np.testing.assert_array_equal(kernels[0], w0)
  np.testing.assert_array_equal(kernels[1], w0)
  assert not np.allclose(kernels[2], w0)
  assert not np.allclose(np.asarray(jax.tree.leaves(state.params["encoder"])[0]), enc0)


def test_codes_have_no_gradient_and_scores_use_unit_prototypes(setup):
  params, mstate = setup["state"].params, setup["state"].method_state
  views = _views()
  w = params[swav.PROTOTYPES]["kernel"]
  np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, rtol=1e-5)  # unit at init
  # The forward uses unit prototypes: scaling the stored ones changes nothing
  # but the gradient's scale (1 / norm).
  scaled = dict(params, **{swav.PROTOTYPES: {"kernel": 3.0 * w}})
  (l0, _), g0 = setup["loss_and_grad"](params, mstate, views, 0)
  (l1, _), g1 = setup["loss_and_grad"](scaled, mstate, views, 0)
  np.testing.assert_allclose(l0, l1, rtol=1e-5)
  np.testing.assert_allclose(3.0 * g1[swav.PROTOTYPES]["kernel"],
                             g0[swav.PROTOTYPES]["kernel"], rtol=1e-4, atol=1e-7)

  # Sinkhorn's output is a constant: d codes / d scores == 0.
  s = jax.random.normal(jax.random.key(2), (B, 16))
  jac = jax.jit(jax.jacobian(lambda x: losses.sinkhorn(x, epsilon=0.05, num_iters=3)))(s)
  assert not np.any(np.asarray(jac))
  # So the loss gradient w.r.t. the scores of the crops that get codes is only
  # the prediction term: with the codes held fixed the gradient is the same.
  hi = jax.random.normal(jax.random.key(3), (2, B, 16))
  lo = jax.random.normal(jax.random.key(4), (2, B, 16))
  _, q = losses.swav(hi, lo)

  def fixed_codes(h):
    logp = jax.nn.log_softmax(jnp.concatenate([h, lo]) / 0.1, -1)
    ce = -jnp.einsum("ibk,vbk->iv", q, logp) / B
    mask = np.arange(2)[:, None] != np.arange(4)[None, :]
    return jnp.sum(jnp.where(mask, ce, 0.0)) / (3 * 2)

  g = jax.jit(jax.grad(lambda h: losses.swav(h, lo)[0]))(hi)
  np.testing.assert_allclose(g, jax.jit(jax.grad(fixed_codes))(hi), rtol=1e-5, atol=1e-7)


def test_queue_is_fifo_and_starts_at_its_epoch(setup):
  params, mstate = setup["state"].params, setup["state"].method_state
  views = _views()
  assert mstate["queue"].shape == (2, 2 * B, 16) and not np.any(mstate["queue"])
  (_, (s0, m)), _ = setup["loss_and_grad"](params, mstate, views, 0)
  assert not np.any(s0["queue"]) and m["queue_in_use"] == 0.0   # step 0: before its epoch
  (l_empty, (s1, m)), _ = setup["loss_and_grad"](params, mstate, views, 1)
  assert m["queue_in_use"] == 0.0 and np.all(np.asarray(s1["queue"])[:, B:] == 0)

  # Hand check: a push puts the current global-crop embeddings first and drops
  # the oldest B rows. The first push's rows are those embeddings (unit rows).
  emb = np.asarray(s1["queue"])[:, :B]
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)
  old = jax.random.normal(jax.random.key(5), (2, 2 * B, 16))
  # Placed like the state's queue, so the jitted function is not recompiled.
  old = jax.device_put(old / jnp.linalg.norm(old, axis=-1, keepdims=True),
                       mstate["queue"].sharding)
  (l_full, (s2, m)), _ = setup["loss_and_grad"](params, dict(mstate, queue=old), views, 1)
  q = np.asarray(s2["queue"])
  np.testing.assert_allclose(q[:, :B], emb, rtol=1e-6)
  np.testing.assert_array_equal(q[:, B:], np.asarray(old[:, :B]))
  # A full queue is used (last row non-zero): it changes the codes, hence the loss.
  assert m["queue_in_use"] == 1.0
  assert abs(float(l_full) - float(l_empty)) > 1e-4


def test_one_sgd_step_lowers_the_loss_on_fixed_views(setup):
  params, mstate = setup["state"].params, setup["state"].method_state
  views = _views(seed=1)
  (l0, _), g = setup["loss_and_grad"](params, mstate, views, 0)
  assert float(optax.global_norm(g[swav.PROTOTYPES])) > 0   # prototypes get gradients
  tx = optax.sgd(0.05)
  upd, _ = tx.update(g, tx.init(params), params)
  (l1, _), _ = setup["loss_and_grad"](optax.apply_updates(params, upd), mstate, views, 0)
  assert float(l1) < float(l0)


def test_bad_configs_fail_in_make():
  c = _config()
  c.views.num_views = 3
  with pytest.raises(ValueError, match="exactly 2 global crops"):
    methods.make(c, LENGTH)
  with pytest.raises(ValueError, match="shorter than the global batch"):
    methods.make(_config(queue_length=B - 1), LENGTH)
  with pytest.raises(ValueError, match="run length"):
    methods.make(_config())
  # An odd queue length is rounded down to whole batches (main_swav.py).
  m = methods.make(_config(queue_length=2 * B + 3), LENGTH)
  _, st = jax.eval_shape(m.init, jax.random.key(0), _views())
  assert st["queue"].shape == (2, 2 * B, 16)
  # Views the method cannot use: the view fn and the config disagree.
  with pytest.raises(ValueError, match="2 global \\+ 2 local"):
    jax.eval_shape(m.init, jax.random.key(0), _views(num_local=1))
