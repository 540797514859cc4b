"""The train step on 1 device and on a mesh of 8 gives the same numbers, and
one step of it lowers the loss on a fixed batch and key."""
import jax
import numpy as np

from jssl_testing import load_config
from jssl import methods, schedules, sharding as shd, step as step_lib
from jssl.data import digits, sources
from jssl.data import device_views as views_lib


def _run(mesh, config, batches):
  method = methods.make(config)
  tx, sched = schedules.make_optimizer(config.optimizer,
                                       global_batch=config.batch_size,
                                       total_steps=10, steps_per_epoch=2)
  view_fn = views_lib.make_view_fn(config.views, config.views.num_views)
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batches[0])
  init_fn, sh = step_lib.make_init(method, tx, view_fn, mesh, spec, seed=0)
  train_step = step_lib.make_train_step(method, tx, view_fn, sched, mesh, sh)
  state = init_fn()
  losses = []
  for b in batches:
    state, m = train_step(state, shd.to_global(b, mesh))
    losses.append(float(m["loss"]))
  return jax.device_get(state), losses, train_step


def test_step_one_device_equals_eight_devices():
  config = load_config("configs/simclr.py:smoke")
  arrays = digits.load_arrays("digits", size=16)
  src = sources.ArraySource(arrays.train_images, arrays.train_labels)
  it = src.train_batches(config.batch_size, seed=0)
  batches = [next(it) for _ in range(3)]
  one = shd.make_mesh(devices=jax.devices()[:1])
  s1, l1, step1 = _run(one, config, batches)
  s8, l8, _ = _run(shd.make_mesh(), config, batches)
  assert jax.device_count() == 8
  np.testing.assert_allclose(l1, l8, rtol=2e-5)
  # tree.map, not zip over leaves: a leaf lost or added on one side fails.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6),
               s1.params, s8.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6),
               s1.method_state, s8.method_state)

  # It trains: the step's loss is computed at the parameters it is given, with
  # the key fold_in(state.key, state.step). Calling the compiled step again on
  # the same state (same step, key, batch statistics) with only the updated
  # parameters swapped in gives the loss after one update on the same views.
  # Momentum buffers are zeroed (step counts kept: they drive the lr schedule),
  # so the update is this batch's own (LARS-preconditioned) gradient step, not
  # a momentum carried from other batches. Host states: the step donates its
  # input.
  start = s1.replace(opt_state=jax.tree.map(
      lambda x: x if np.issubdtype(x.dtype, np.integer) else np.zeros_like(x),
      s1.opt_state))
  stepped, before = step1(start, shd.to_global(batches[0], one))
  moved = start.replace(params=jax.device_get(stepped.params))
  _, after = step1(moved, shd.to_global(batches[0], one))
  assert float(after["loss"]) < float(before["loss"]), (before["loss"], after["loss"])
