"""Helpers for the per-method tests: build a method from a config and run its
jitted train step on a given mesh, exactly as `jssl.train` does."""
from __future__ import annotations

import jax
import numpy as np

from jssl import methods, schedules, sharding as shd, step as step_lib
from jssl.data import digits, sources
from jssl.data import device_views as views_lib


def digit_batches(config, n: int, *, seed: int = 0) -> list[dict]:
  """`n` host batches `{'image', 'label'}` of the digits data at the config's
  batch size and `config.data.kwargs.size` (16 px by default)."""
  size = int(config.data.get("kwargs", {}).get("size", 16))
  arrays = digits.load_arrays("digits", size=size)
  src = sources.ArraySource(arrays.train_images, arrays.train_labels)
  it = src.train_batches(config.batch_size, seed=seed)
  return [next(it) for _ in range(n)]


def build(config, mesh, batch, *, total_steps: int = 10,
          steps_per_epoch: float = 2.0):
  """(method, init_fn, train_step) as `jssl.train.run` builds them."""
  length = methods.TrainLength(total_steps, steps_per_epoch)
  method = methods.make(config, length, mesh=mesh)
  tx, sched = schedules.make_optimizer(
      config.optimizer, global_batch=config.batch_size,
      total_steps=total_steps, steps_per_epoch=steps_per_epoch,
      frozen=method.frozen, model=config.model, constant_lr=method.constant_lr)
  view_fn = views_lib.make_view_fn(config.views, config.views.num_views)
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  # The online probe as the run book configures it (on by default): every
  # method must hand the step its first view's encoder features.
  probe = step_lib.make_online_probe(config.get("online_probe"), num_classes=10,
                                     total_steps=total_steps)
  init_fn, sh = step_lib.make_init(method, tx, view_fn, mesh, spec,
                                   seed=config.seed, probe=probe)
  # And the in-step diagnostics, on every other step as with log_every=2.
  diag = step_lib.make_diagnostics(config.get("diagnostics"), every=2,
                                   total_steps=total_steps, num_classes=10)
  train_step = step_lib.make_train_step(method, tx, view_fn, sched, mesh, sh,
                                        probe=probe, diagnostics=diag)
  return method, init_fn, train_step


def _run(config, mesh, batches, **kwargs):
  """(train_step, host final state, per-step metrics)."""
  _, init_fn, train_step = build(config, mesh, batches[0], **kwargs)
  state = init_fn()
  history = []
  for b in batches:
    state, m = train_step(state, shd.to_global(b, mesh))
    history.append({k: float(v) for k, v in jax.device_get(m).items()})
  return train_step, jax.device_get(state), history


def run_steps(config, mesh, batches, **kwargs):
  """Runs the train step over `batches`; returns (host state, per-step metrics)."""
  _, state, history = _run(config, mesh, batches, **kwargs)
  return state, history


def step_loss_before_after(train_step, state, batch, mesh):
  """The loss on one fixed batch and key before and after one optimisation step.

  The step's metrics give the loss at the parameters it was called with, and
  the step key is `fold_in(state.key, state.step)`: calling the compiled step
  again on the same state with only the parameters replaced by the updated
  ones recomputes the loss on the same views, masks and method state (queues,
  teachers, centers). Momentum buffers are zeroed (integer step counts kept:
  they drive the lr schedule), so the update is this batch's own
  (preconditioned) gradient step, not a momentum carried from other batches.
  Both calls reuse the compiled step; host states are passed because the step
  donates its input.
  """
  start = state.replace(opt_state=jax.tree.map(
      lambda x: x if np.issubdtype(x.dtype, np.integer) else np.zeros_like(x),
      state.opt_state))
  stepped, m0 = train_step(start, shd.to_global(batch, mesh))
  moved = start.replace(params=jax.device_get(stepped.params))
  _, m1 = train_step(moved, shd.to_global(batch, mesh))
  return float(m0["loss"]), float(m1["loss"])


def assert_trees_close(a, b, **tol):
  """Leaf by leaf; a lost, extra or renamed leaf fails (`jax.tree.map` checks
  that both trees have one structure), unlike `zip` over their leaves."""
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


def assert_one_device_equals_eight(config, batches, *, rtol=2e-5,
                                   param_rtol=1e-4, atol=2e-6, **kwargs):
  """The same steps on a 1-device mesh and on the 8 test devices agree:
  losses, parameters and method state (EMA teachers, queues, centers); and
  the step trains (`step_loss_before_after` on the last batch)."""
  assert jax.device_count() == 8
  step1, s1, h1 = _run(config, shd.make_mesh(devices=jax.devices()[:1]),
                              batches, **kwargs)
  s8, h8 = run_steps(config, shd.make_mesh(), batches, **kwargs)
  np.testing.assert_allclose([h["loss"] for h in h1], [h["loss"] for h in h8],
                             rtol=rtol)
  assert_trees_close(s1.params, s8.params, rtol=param_rtol, atol=atol)
  assert_trees_close((s1.method_state, s1.probe), (s8.method_state, s8.probe),
                     rtol=param_rtol, atol=atol)
  if "online_probe/loss" in h1[0]:
    np.testing.assert_allclose([h["online_probe/loss"] for h in h1],
                               [h["online_probe/loss"] for h in h8], rtol=1e-4)
  for key in ("diag/rankme", "diag/uniformity"):
    if key in h1[0]:  # NaN on the skipped steps, on both meshes
      np.testing.assert_allclose([h[key] for h in h1], [h[key] for h in h8],
                                 rtol=1e-3)
  # It trains: one step of the compiled train step lowers the loss on a fixed
  # batch and key (not two different batches' losses compared).
  before, after = step_loss_before_after(
      step1, s1, batches[-1], shd.make_mesh(devices=jax.devices()[:1]))
  assert after < before, (before, after)
  return (s1, h1), (s8, h8)
