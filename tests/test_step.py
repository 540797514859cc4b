"""The train step on 1 device and on a mesh of 8 gives the same numbers."""
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
  return jax.device_get(state), losses


def test_step_one_device_equals_eight_devices():
  config = load_config("configs/simclr.py:smoke")
  arrays = digits.load_arrays("digits", size=16)
  src = sources.ArraySource(arrays.train_images, arrays.train_labels)
  it = src.train_batches(config.batch_size, seed=0)
  batches = [next(it) for _ in range(3)]
  s1, l1 = _run(shd.make_mesh(devices=jax.devices()[:1]), config, batches)
  s8, l8 = _run(shd.make_mesh(), config, batches)
  assert jax.device_count() == 8
  np.testing.assert_allclose(l1, l8, rtol=2e-5)
  assert l1[2] != l1[0]  # it is training, not a constant
  flat1 = jax.tree.leaves(s1.params)
  flat8 = jax.tree.leaves(s8.params)
  for a, b in zip(flat1, flat8):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
  for a, b in zip(jax.tree.leaves(s1.method_state), jax.tree.leaves(s8.method_state)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
