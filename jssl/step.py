"""The jitted train step and the sharded state initialiser.

One `jax.jit` step, built once, with explicit in/out shardings over the mesh
and the state donated (big_vision `train.py`, nanodo `train.py`). The step
body is pure and method-agnostic: device-side views -> method loss and grads
-> optimiser -> method state update. It holds no loss math and names no mesh
axis; collectives come from XLA's propagation over the global arrays.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jssl import sharding as shd
from jssl.methods.base import Method
from jssl.state import TrainState

ViewFn = Callable[[jax.Array, Any], tuple]


def _threefry_not_partitionable(fn):
  """Traces `fn` with the classic (non-partitionable) threefry lowering.

  Measured with jax 0.10 on XLA:CPU: every `jax.random` draw lowered with the
  partitionable threefry (JAX's default) costs ~4 s of compile time, so a
  ResNet init with ~60 parameter draws took minutes to compile; the classic
  lowering costs ~0.3 s per draw. Our draws are tiny (augmentation parameters
  per example, parameter init of replicated weights), so the partitionable
  lowering buys nothing here. Values stay independent of the sharding (tested
  1 vs 8 devices); they differ from the partitionable stream, so a seed gives
  the same run only under jssl's step.
  """

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.threefry_partitionable(False):
      return fn(*args, **kwargs)

  return wrapped


def make_init(method: Method, tx: optax.GradientTransformation,
              view_fn: ViewFn, mesh, batch_spec: Any, *, seed: int):
  """Returns `(init_fn, state_shardings)`; `init_fn()` builds the state sharded.

  Parameters are created directly with their target sharding
  (`jax.jit(..., out_shardings=...)`), never materialised on one device first.

  Args:
    batch_spec: pytree of `jax.ShapeDtypeStruct` of one global batch; used to
      trace the model once with the right view shapes.
  """

  @_threefry_not_partitionable
  def init():
    root = jax.random.key(seed)
    k_params, k_views, k_train = jax.random.split(root, 3)
    # Only the views' shapes matter for init: stand-ins of the right shapes,
    # so the augmentation graph is not compiled a second time here.
    del k_views
    view_shapes = jax.eval_shape(view_fn, jax.random.key(0), batch_spec)
    views = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), view_shapes)
    params, method_state = method.init(k_params, views)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), method_state=method_state,
                      key=jax.random.key_data(k_train))

  shapes = jax.eval_shape(init)
  shardings = shd.state_shardings(mesh, shapes)
  return jax.jit(init, out_shardings=shardings), shardings


def make_train_step(method: Method, tx: optax.GradientTransformation,
                    view_fn: ViewFn, schedule: optax.Schedule, mesh,
                    state_shardings: Any):
  """Returns `step(state, batch) -> (state, metrics)`, jitted and donating."""

  @_threefry_not_partitionable
  def step_fn(state: TrainState, batch):
    # One fresh key per step, derived from the state: the step is a pure
    # function of (state, batch), so resume and 1-vs-N devices give the same
    # augmentations.
    key = jax.random.fold_in(state.rng, state.step)
    k_views, k_loss = jax.random.split(key)
    views = view_fn(k_views, batch)

    def loss_fn(params):
      return method.loss(params, state.method_state, views, batch, k_loss,
                         state.step)

    (loss, (method_state, metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    method_state = method.update_state(params, method_state, state.step)
    metrics = dict(metrics, loss=loss, lr=schedule(state.step),
                   grad_norm=optax.global_norm(grads),
                   param_norm=optax.global_norm(params))
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state, method_state=method_state)
    return new_state, metrics

  return jax.jit(
      step_fn,
      in_shardings=(state_shardings, shd.data_sharding(mesh)),
      out_shardings=(state_shardings, shd.replicated(mesh)),
      donate_argnums=(0,))
