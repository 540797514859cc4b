"""Pieces the methods share: the joint two-view forward pass (SimCLR, Barlow
Twins, VICReg, SupCon), the online network and per-view forward pass of the
methods with a predictor and/or an EMA target network (BYOL, SimSiam, MoCo
v3), the EMA target (initialisation, momentum schedule, update, forward) and
the collapse metrics.

Joint forward: SimCLR (`tf2/model.py`), Barlow Twins and VICReg concatenate
the views before the encoder, so batch-norm statistics span all V*B images of
the global batch (`joint_forward`).

Batch norm per view: BYOL (deepmind-research `byol_experiment.py`,
`apply_once_fn` called once per view), SimSiam (`simsiam/builder.py`) and
MoCo v3 (`moco/builder.py`) run the encoder once per view, so batch-norm
statistics span the B images of one view of the global batch (SyncBN), not
all 2B images as SimCLR's concatenation does; running statistics are updated
once per view, as PyTorch / Haiku do when a module is called twice.
`apply_per_view` reproduces that by applying the network view after view,
threading the batch stats. (A `jax.lax.scan` over the stacked views compiles
the network once, but measured on XLA:CPU, BYOL quickstart, it compiled no
faster (42.6 vs 45.8 CPU-s) and each step ran 1.5x slower (3.14 vs 2.09
CPU-s), so the views are unrolled.)
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import errors, models, precision, schedules
from jssl.methods import base


class EncoderProjector(nn.Module):
  """encoder f -> projector g; returns (the encoder's feature dict, g(h))."""
  encoder: nn.Module
  projector: nn.Module

  def __call__(self, x, *, train: bool):
    feats = self.encoder(x, train=train)
    return feats, self.projector(feats["pre_logits"], train=train)


def projector_of(config):
  """`config.projector` built in the run's compute dtype unless it sets its own
  (`jssl.precision.head_config`; its output layer is float32 by policy)."""
  return models.make_projector(precision.head_config(config.projector, config))


def build_joint(config):
  """(encoder, `EncoderProjector`, init) from `config.model`, `.projector`."""
  encoder = models.make_encoder(config.model)
  net = EncoderProjector(encoder=encoder, projector=projector_of(config))

  def init(key, views):
    variables = net.init(key, views[0], train=True)
    return variables["params"], {"batch_stats": variables["batch_stats"]}

  return encoder, net, init


def joint_forward(net: nn.Module, params: dict, method_state: dict,
                  views: Sequence[jax.Array]):
  """All V views in one train-mode pass of `net` (BN over the V*B images).

  Returns `(feats, z, new_method_state)`: the encoder's features of the
  concatenated batch (`[V*B, ...]`, view-major), the projections split per
  view `[V, B, P]` (float32, the loss input) and `{'batch_stats': ...}`
  after the pass.
  """
  x = jnp.concatenate(views, axis=0)
  (feats, z), new_vars = net.apply({"params": params, **method_state}, x,
                                   train=True, mutable=["batch_stats"])
  # The loss input, float32 whatever the compute dtype (jssl.precision).
  z = jnp.stack(jnp.split(precision.cast_to_f32(z), len(views)), axis=0)
  return feats, z, {"batch_stats": new_vars["batch_stats"]}


class SiameseNet(nn.Module):
  """encoder f -> projector g -> optional predictor q.

  Returns `(h, z, p)`: `h` the encoder's `pre_logits` `[B, D]`, `z = g(h)`
  `[B, P]` and `p = q(z)` `[B, P]` (`None` without a predictor: the EMA target
  of BYOL / MoCo v3 has no predictor).
  """
  encoder: nn.Module
  projector: nn.Module
  predictor: Optional[nn.Module] = None

  def __call__(self, x, *, train: bool):
    h = self.encoder(x, train=train)["pre_logits"]
    z = self.projector(h, train=train)
    p = None if self.predictor is None else self.predictor(z, train=train)
    return h, z, p


def build_nets(config, *, predictor_from: str = "predictor"):
  """(encoder, online net with predictor, target net without) from config.

  `predictor_from='projector'` builds the predictor with `make_projector`
  (MoCo v3's predictor is the same MLP as its projector and may end in BN).
  """
  encoder = models.make_encoder(config.model)
  projector = projector_of(config)
  make_pred = (models.make_projector if predictor_from == "projector"
               else models.make_predictor)
  predictor = make_pred(precision.head_config(config.predictor, config))
  online = SiameseNet(encoder=encoder, projector=projector, predictor=predictor)
  target = SiameseNet(encoder=encoder, projector=projector, predictor=None)
  return encoder, online, target


def apply_per_view(net: nn.Module, variables: dict, views: Sequence[jax.Array],
                   *, train: bool = True):
  """Runs `net` on each view in turn (batch norm per view, see module doc).

  Args:
    net: a `SiameseNet`.
    variables: `{'params': ..., 'batch_stats': ...}`.
    views: V arrays `[B, H, W, C]`.
    train: batch statistics (True) or running averages (False).

  Returns:
    `((h, z, p), batch_stats)`: each output stacked `[V, B, ...]` (`p` None
    without a predictor) and the batch stats after the V updates.
  """
  params = variables["params"]
  stats = variables.get("batch_stats", {})

  outs = []
  for x in views:
    out, new = net.apply({"params": params, "batch_stats": stats}, x,
                         train=train, mutable=["batch_stats"])
    if train:  # running statistics move once per view (PyTorch / Haiku)
      stats = new.get("batch_stats", stats)
    outs.append(out)
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *outs)
  return stacked, stats


def num_local_views(config) -> int:
  """L, the multi-crop local views of `config.views` (0 without `views.local`).

  Read from the config, as `jssl.data.recipes.local_crops` does (a negative or
  absent `num` is 0): methods never import the data package (DESIGN rule 2;
  tests/test_layering.py), and the recipe's fields are the contract.
  """
  local = config.views.get("local", None)
  return max(0, int(local.get("num", 0))) if local is not None else 0


def require_views(config, method: str, num: int = 2) -> None:
  if config.views.num_views != num:
    raise errors.ConfigError(
        f"{method} compares exactly {num} views of each image; "
        f"config.views.num_views={config.views.num_views}")
  num_local = num_local_views(config)
  if num_local:
    raise errors.ConfigError(
        f"{method} uses no multi-crop local views; "
        f"config.views.local.num={num_local} (set it to 0)")


def multicrop_groups(views: Sequence[jax.Array], num_global: int,
                     num_local: int, method: str) -> list[jax.Array]:
  """The views as resolution groups: `[global crops concatenated]` plus
  `[local crops concatenated]` when there are local crops, so the network
  runs once per resolution (DINO `MultiCropWrapper`, SwAV `MultiPrototypes`
  forward over `unique_consecutive` crop sizes)."""
  if len(views) != num_global + num_local:
    raise ValueError(
        f"{method} expects {num_global} global + {num_local} local views "
        f"(config.views.num_views, config.views.local.num); the view function "
        f"gave {len(views)}: the multi-crop settings and the data pipeline "
        "disagree")
  groups = [jnp.concatenate(views[:num_global], axis=0)]
  if num_local:
    local = views[num_global:]
    if len({v.shape for v in local}) != 1:
      raise ValueError(f"{method}: local views must share one shape, got "
                       f"{[v.shape for v in local]}")
    groups.append(jnp.concatenate(local, axis=0))
  return groups


def require_fields(config, method: str, fields: Sequence[str]) -> None:
  missing = [f for f in fields if f not in config]
  if missing:
    raise errors.ConfigError(f"{method} needs config fields {missing} "
                             f"(see configs/{config.method}.py)")


# --------------------------------------------------------------------------
# EMA target network.

def momentum_schedule(config, length, what: str):
  """`tau(step)`: cosine from `config.ema.base_momentum` to
  `config.ema.final_momentum` over the run (BYOL Sec. 3.2; moco-v3
  `adjust_moco_momentum` with `--moco-m-cos`)."""
  length = base.require_length(length, what)
  start, end = float(config.ema.base_momentum), float(config.ema.final_momentum)
  if not 0.0 <= start <= end <= 1.0:
    raise errors.ConfigError(f"{what}: need 0 <= ema.base_momentum <= "
                             f"ema.final_momentum <= 1, got {start}, {end}")
  return schedules.cosine_between(start, end, length.total_steps)


def target_init(params: dict, batch_stats: dict) -> dict:
  """The target starts as a copy of the online encoder + projector.

  moco-v3 `builder.py` copies the base encoder into the momentum encoder;
  BYOL initialises the target from a different seed and reports no
  difference (`byol_experiment.py`, `_make_initial_state`); the copy makes the
  first targets meaningful and is what solo-learn does for both.
  """
  keep = ("encoder", "projector")
  # Copies, not aliases: the state is donated and the two must be distinct
  # buffers.
  copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731
  return {"params": copy({k: params[k] for k in keep}),
          "batch_stats": copy({k: batch_stats[k] for k in keep
                               if k in batch_stats})}


def target_update(params: dict, target: dict, momentum: jax.Array) -> dict:
  """`xi <- tau xi + (1 - tau) theta` for the target's parameters.

  Only parameters are averaged: the target's batch-norm running statistics
  come from its own train-mode forward passes (byol `target_state`, the
  momentum encoder's buffers in moco-v3 are not averaged either).
  """
  online = {k: params[k] for k in target["params"]}
  return {"params": schedules.ema_update(target["params"], online, momentum),
          "batch_stats": target["batch_stats"]}


def online_target_init(online: nn.Module):
  """`init(key, views)` of an online network with an EMA target copy."""
  def init(key, views):
    variables = online.init(key, views[0], train=True)
    params, stats = variables["params"], variables.get("batch_stats", {})
    return params, {"batch_stats": stats, "target": target_init(params, stats)}
  return init


def online_target_forward(online: nn.Module, target_net: nn.Module,
                          params: dict, method_state: dict,
                          views: Sequence[jax.Array]):
  """Per-view train-mode passes of the online and the target network.

  Returns `(h, p, z_t, new_method_state)`: the online representations and
  predictions `[V, B, ...]` (p float32), the target projections `[V, B, P]`
  (float32) under
  `stop_gradient` (targets only: the target is an EMA, never trained by the
  gradient; BYOL eq. 2 `sg(z'_xi)`, moco-v3's keys under `no_grad`), and the
  state with both networks' new batch statistics.
  """
  (h, _, p), stats = apply_per_view(
      online, {"params": params, "batch_stats": method_state["batch_stats"]},
      views)
  target = method_state["target"]
  (_, z_t, _), t_stats = apply_per_view(target_net, target, views)
  new_state = dict(method_state, batch_stats=stats,
                   target={"params": target["params"], "batch_stats": t_stats})
  # Loss inputs in float32 (jssl.precision).
  p, z_t = precision.cast_to_f32((p, z_t))
  return h, p, jax.lax.stop_gradient(z_t), new_state


def target_update_fn(momentum, key: str = "target"):
  """`update_state` that moves the target `method_state[key]` towards the
  just-updated online parameters with momentum `momentum(step)`."""
  def update_state(params, method_state, step):
    return dict(method_state, **{key: target_update(
        params, method_state[key], momentum(step))})
  return update_state


def online_target_state(new_vars: dict, target_vars: dict, method_state: dict,
                        key: str = "target") -> dict:
  """The method state after a step's train-mode passes: the online network's
  new batch-norm statistics, and the EMA target `method_state[key]` with its
  parameters as they were (the EMA moves them in `update_state`) and its own
  new batch-norm statistics. `new_vars` / `target_vars` are the mutable
  collections the two passes returned (empty without batch norm)."""
  target = method_state[key]
  return {"batch_stats": new_vars.get("batch_stats", method_state["batch_stats"]),
          key: {"params": target["params"],
                "batch_stats": target_vars.get("batch_stats", target["batch_stats"])}}


# --------------------------------------------------------------------------
# Metrics.

def unit(x: jax.Array) -> jax.Array:
  """Rows L2-normalised in float32 (zero rows stay zero)."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-12))


def feature_std(x: jax.Array) -> jax.Array:
  """Collapse alarm: per-dimension std of L2-normalised rows `[B, D]`,
  averaged; ~1/sqrt(D) for well-spread features, -> 0 under collapse
  (SimSiam Fig. 2)."""
  return jnp.mean(jnp.std(unit(x), axis=0))


def mean_cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  num = jnp.sum(a * b, -1)
  den = jnp.sqrt(jnp.maximum(jnp.sum(a * a, -1) * jnp.sum(b * b, -1), 1e-24))
  return jnp.mean(num / den)

