"""The jitted train step and the sharded state initialiser.

One `jax.jit` step, built once, with explicit in/out shardings over the mesh
and the state donated (big_vision `train.py`, nanodo `train.py`). The step
body is pure and method-agnostic: device-side views -> method loss and grads
-> optimiser -> method state update. It holds no loss math and names no mesh
axis; collectives come from XLA's propagation over the global arrays.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jssl import errors
from jssl import sharding as shd
from jssl.methods.base import PROBE_FEATURES, Method
from jssl.state import TrainState

ViewFn = Callable[[jax.Array, Any], tuple]


class OnlineProbe(NamedTuple):
  """A linear classifier trained during pretraining on stop-gradient encoder
  features of the first view and the batch labels, with its own optimiser,
  so the representation's linear accuracy is logged with the loss at no
  extra forward pass (BYOL `byol_experiment.py`: a classifier on
  `stop_gradient` of the online embedding; solo-learn `BaseMethod`'s online
  classifier). It never changes the encoder's gradients. Its accuracy is on
  the augmented training batch, so it tracks, not replaces, the end-of-run
  linear probe.
  """
  num_classes: int
  tx: optax.GradientTransformation


def make_online_probe(cfg, *, num_classes: int, total_steps: int) -> Optional[OnlineProbe]:
  """From `config.online_probe` (`enabled`, `lr`, `momentum`): SGD with
  momentum and a cosine-decayed learning rate (solo-learn: classifier lr 0.1,
  no weight decay, the backbone's cosine schedule). None when disabled."""
  if cfg is None or not cfg.get("enabled", False):
    return None
  unknown = sorted(set(cfg) - {"enabled", "lr", "momentum"})
  if unknown:
    raise errors.ConfigError(f"config.online_probe has unknown keys {unknown}; "
                             "expected enabled, lr, momentum")
  if num_classes < 2:
    raise ValueError(f"online probe needs >= 2 classes, got {num_classes}")
  lr = optax.cosine_decay_schedule(float(cfg.get("lr", 0.1)), max(int(total_steps), 1))
  return OnlineProbe(int(num_classes),
                     optax.sgd(lr, momentum=float(cfg.get("momentum", 0.9))))


def _probe_init(probe: OnlineProbe, feature_dim: int) -> dict:
  params = {"kernel": jnp.zeros((feature_dim, probe.num_classes), jnp.float32),
            "bias": jnp.zeros((probe.num_classes,), jnp.float32)}
  return {"params": params, "opt_state": probe.tx.init(params)}


def _probe_step(probe: OnlineProbe, state: dict, features, labels):
  """One optimiser step of the probe; returns (state, metrics)."""
  x = jax.lax.stop_gradient(features).astype(jnp.float32)

  def loss_fn(p):
    logits = x @ p["kernel"] + p["bias"]
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return loss, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  updates, opt_state = probe.tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  top1 = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
  return ({"params": params, "opt_state": opt_state},
          {"online_probe/top1": top1, "online_probe/loss": loss})


class Diagnostics(NamedTuple):
  """Representation diagnostics (`jssl.evals.diagnostics`) of the first view's
  encoder features, computed inside the step on steps `every, 2 * every, ...`
  and the last one (`total_steps`), NaN on the others: RankMe, uniformity,
  per-dimension std ratio (collapse), Vendi and, with labels in the batch, NC1,
  intra-class variance and class separation. Logged as `diag/<name>`."""
  every: int
  total_steps: int
  num_classes: Optional[int] = None


def make_diagnostics(cfg, *, every: int, total_steps: int,
                     num_classes: Optional[int]) -> Optional[Diagnostics]:
  """From `config.diagnostics` (`enabled`; `every_steps`, 0 = the log
  cadence `every`, else a multiple of it: metrics are read only on log
  steps, so diagnostics of other steps would be computed and never seen).
  None when disabled."""
  if cfg is None or not cfg.get("enabled", False):
    return None
  unknown = sorted(set(cfg) - {"enabled", "every_steps"})
  if unknown:
    raise errors.ConfigError(f"config.diagnostics has unknown keys {unknown}; expected "
                             "enabled, every_steps")
  n = int(cfg.get("every_steps", 0)) or int(every)
  if n < 1:
    raise errors.ConfigError(f"diagnostics every_steps must be >= 1, got {n}")
  if n % int(every):
    raise errors.ConfigError(f"config.diagnostics.every_steps={n} must be a multiple of "
                             f"log_every_steps={every}: metrics are read on log steps only")
  return Diagnostics(n, int(total_steps), num_classes)


def _diagnostics_metrics(diag: Diagnostics, step, features, labels) -> dict:
  from jssl.evals import diagnostics as diag_lib  # pylint: disable=import-outside-toplevel
  x = jax.lax.stop_gradient(features).astype(jnp.float32)
  if labels is not None and diag.num_classes is None:
    labels = None

  def compute(_):
    out = diag_lib.diagnostics(x, labels, num_classes=diag.num_classes)
    return {f"diag/{k}": v.astype(jnp.float32) for k, v in out.items()
            if k != "spectrum"}

  nan = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype),
                     jax.eval_shape(compute, None))
  done = step + 1
  due = (done % diag.every == 0) | (done == diag.total_steps)
  return jax.lax.cond(due, compute, lambda _: nan, None)


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
              view_fn: ViewFn, mesh, batch_spec: Any, *, seed: int,
              probe: Optional[OnlineProbe] = None):
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
    probe_state = {}
    if probe is not None:
      dim = method.encoder.apply(
          method.encoder_variables(params, method_state), views[0],
          train=False)["pre_logits"].shape[-1]
      probe_state = _probe_init(probe, dim)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), method_state=method_state,
                      key=jax.random.key_data(k_train), probe=probe_state)

  shapes = jax.eval_shape(init)
  shardings = shd.state_shardings(mesh, shapes)
  return jax.jit(init, out_shardings=shardings), shardings


def make_train_step(method: Method, tx: optax.GradientTransformation,
                    view_fn: ViewFn, schedule: optax.Schedule, mesh,
                    state_shardings: Any, probe: Optional[OnlineProbe] = None,
                    diagnostics: Optional[Diagnostics] = None):
  """Returns `step(state, batch) -> (state, metrics)`, jitted and donating.

  With `probe` (and a state built by `make_init(..., probe=probe)`), the
  online linear probe takes one step on the loss's `PROBE_FEATURES` and
  `batch['label']`, and its metrics join the step's. With `diagnostics`, the
  same features give `diag/*` metrics on the steps it names (NaN elsewhere).
  """

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
    if method.project is not None:  # e.g. CLIP's logit-scale clamp
      params = method.project(params)
    method_state = method.update_state(params, method_state, state.step)
    metrics = dict(metrics)
    features = metrics.pop(PROBE_FEATURES, None)
    probe_state = state.probe
    if probe is not None:
      if features is None:
        raise ValueError(f"the online probe needs the method's loss to return "
                         f"metrics[{PROBE_FEATURES!r}] (encoder features)")
      if "label" not in batch:
        raise ValueError("the online probe needs batch['label']; set "
                         "config.online_probe.enabled=False for unlabelled data")
      probe_state, probe_metrics = _probe_step(probe, state.probe, features,
                                               batch["label"])
      metrics.update(probe_metrics)
    if diagnostics is not None:
      if features is None:
        raise ValueError(f"diagnostics need the method's loss to return "
                         f"metrics[{PROBE_FEATURES!r}] (encoder features)")
      metrics.update(_diagnostics_metrics(diagnostics, state.step, features,
                                          batch.get("label")))
    grad_norm = optax.global_norm(grads)
    # Read by the host at log and save steps (jssl.faults.FiniteGuard): a
    # non-finite step stops the run before anything after it is saved.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    metrics = dict(metrics, loss=loss, lr=schedule(state.step),
                   grad_norm=grad_norm, param_norm=optax.global_norm(params),
                   finite=finite)
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state, method_state=method_state,
                              probe=probe_state)
    return new_state, metrics

  return jax.jit(
      step_fn,
      in_shardings=(state_shardings, shd.data_sharding(mesh)),
      out_shardings=(state_shardings, shd.replicated(mesh)),
      donate_argnums=(0,))
