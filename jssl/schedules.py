"""Schedules (learning rate, weight decay, EMA momentum) and optimisers (optax).

The SimCLR recipe (Chen et al. 2020, Sec. B.1; google-research/simclr
`tf2/lars_optimizer.py` / `model_util.py`): LARS with momentum 0.9, learning
rate `base_lr * global_batch / 256` (linear scaling), linear warm-up then
cosine decay to 0 without restarts, weight decay, and both the weight decay
and the LARS trust ratio skipped for biases and batch-norm parameters.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from jssl import errors


def scaled_learning_rate(cfg: Any, global_batch: int) -> float:
  """`base_lr * B / 256` ('linear'), `base_lr * sqrt(B)` ('sqrt') or `base_lr`."""
  scaling = cfg.get("lr_scaling", "linear")
  if scaling == "linear":
    return cfg.base_lr * global_batch / 256
  if scaling == "sqrt":  # SimCLR paper, small-batch / long-training variant.
    return cfg.base_lr * math.sqrt(global_batch)
  if scaling == "none":
    return cfg.base_lr
  raise errors.ConfigError(
      f"optimizer.lr_scaling={scaling!r}: expected 'linear', 'sqrt' or 'none'")


def warmup_cosine(peak: float, total_steps: int, warmup_steps: int,
                  end_value: float = 0.0) -> optax.Schedule:
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=end_value)


def cosine_between(start: float, end: float,
                   total_steps: int) -> optax.Schedule:
  """`end - (end - start) * (cos(pi * step / total_steps) + 1) / 2`, held at
  `end` after `total_steps`.

  BYOL's target momentum (Grill et al. 2020, Sec. 3.2: tau = 1 - (1 - tau_base)
  (cos(pi k / K) + 1) / 2) is `cosine_between(tau_base, 1.0, K)`; DINO's
  teacher momentum 0.996 -> 1 and weight decay 0.04 -> 0.4 (dino
  `utils.cosine_scheduler`, no warm-up) are the same curve.
  """
  total = max(int(total_steps), 1)

  def schedule(step):
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / total, 0.0, 1.0)
    return end - (end - start) * (jnp.cos(jnp.pi * frac) + 1.0) / 2.0

  return schedule


def ema_update(target: Any, online: Any, momentum: jax.Array) -> Any:
  """`target <- momentum * target + (1 - momentum) * online`, leaf-wise.

  The EMA teacher of BYOL / MoCo / DINO (optax's `incremental_update`).
  """
  return optax.incremental_update(online, target, 1.0 - momentum)


def _decayed_weights(weight_decay: float | optax.Schedule,
                     mask: Any) -> optax.GradientTransformation:
  """`optax.add_decayed_weights`, with an optional step schedule for the rate.

  optax takes only a constant rate; DINO's weight decay follows a cosine from
  0.04 to 0.4 (dino `main_dino.py` `wd_schedule`), so the schedule needs its
  own step counter.
  """
  if not callable(weight_decay):
    return optax.add_decayed_weights(weight_decay, mask=mask)

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params):
    wd = weight_decay(state.count)
    updates = jax.tree.map(lambda u, p: u + wd * p, updates, params)
    return updates, optax.ScaleByScheduleState(
        count=optax.safe_increment(state.count))

  return optax.masked(optax.GradientTransformation(init_fn, update_fn), mask)


def freeze(frozen: Sequence[tuple[str, int]]) -> optax.GradientTransformation:
  """Zeroes the updates of parameters whose path starts with a prefix while
  the step is below its limit: `frozen = (("head/last_layer", 1000), ...)`.

  DINO freezes the head's last layer for the first epoch
  (`cancel_gradients_last_layer`) and SwAV its prototypes
  (`freeze_prototypes_niters`); in PyTorch their gradients are set to None,
  so neither the update nor the weight decay touches them. Chained after the
  optimiser, this zeroes the whole update, weight decay included.
  """
  frozen = tuple((str(p).strip("/"), int(n)) for p, n in frozen)

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params

    def zero(path, u):
      name = _path_name(path)
      limits = [n for p, n in frozen if _under(name, p)]
      if not limits:
        return u
      return jnp.where(state.count < max(limits), jnp.zeros_like(u), u)

    updates = jax.tree_util.tree_map_with_path(zero, updates)
    return updates, optax.ScaleByScheduleState(
        count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_grouped_lr(schedule: optax.Schedule, constant: Sequence[str],
                        constant_lr: float) -> optax.GradientTransformation:
  """`optax.scale_by_learning_rate(schedule)`, except that parameters whose
  path starts with a prefix in `constant` (e.g. `("predictor",)`) take the
  fixed learning rate `constant_lr` at every step, warm-up included.

  SimSiam's `--fix-pred-lr` (facebookresearch/simsiam `main_simsiam.py`:
  the predictor's param group keeps `init_lr` while `adjust_learning_rate`
  cosine-decays the others; solo-learn's `static_lr` the same). Scaling the
  finished update by `constant_lr / schedule(step)` instead would divide by
  zero at a warm-up's first step, so the rate is chosen per leaf here.
  """
  constant = tuple(str(p).strip("/") for p in constant)

  def fixed(path) -> bool:
    return any(_under(_path_name(path), p) for p in constant)

  def init_fn(params):
    names = [_path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    for p in constant:
      if not any(_under(n, p) for n in names):
        raise ValueError(f"constant-lr prefix {p!r} matches no parameter (top level: "
                         f"{sorted({n.split('/')[0] for n in names})})")
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    lr = schedule(state.count)
    updates = jax.tree_util.tree_map_with_path(
        lambda path, u: -(constant_lr if fixed(path) else lr) * u, updates)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def is_kernel(params: Any) -> Any:
  """True for weight matrices / conv kernels, False for biases and BN params.

  Decided by rank: every bias and batch-norm scale/offset is 1-D, every dense
  or conv kernel is >= 2-D. This is what "exclude bias and BN" means in SimCLR
  and solo-learn (`exclude_bias_n_norm`).
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


# ViT parameters at the input end: layer 0 of the layer-wise decay (MAE
# `util/lr_decay.py` `get_layer_id_for_vit`: cls_token, pos_embed, patch_embed;
# the mask token of SimMIM / iBOT with them).
_EMBED_PARAMS = ("patch_embed", "cls_token", "pos_embedding", "mask_token")


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]


def _path_name(path) -> str:
  """'a/b/c' for a tree path (the names `freeze` and `constant_lr` match)."""
  return "/".join(_path_names(path))


def _under(name: str, prefix: str) -> bool:
  """Whether parameter `name` is `prefix` or lies under it, per path component
  ('head/lastx' is not under 'head/last')."""
  return name == prefix or name.startswith(prefix + "/")


def layer_decay_factor(names: Sequence[str], decay: float, depth: int,
                       patch_embed_mult: float = 1.0) -> float:
  """The lr scale of the parameter at `names` (its path in the params tree).

  Layer-wise lr decay of BEiT (Bao et al. 2022, Sec. 2.4 / App.) and MAE
  fine-tuning (facebookresearch/mae `util/lr_decay.py` `param_groups_lrd`,
  also the iBOT / DINOv2 recipes): with L = depth, the ViT encoder at
  `params['encoder']` has layer ids 0 (patch_embed, cls_token,
  pos_embedding, mask_token), i (its block `block{i}`, i = 1 .. L) and L + 1
  (everything else: the final norm); the scale is decay^(L + 1 - id).
  Parameters outside `params['encoder']` (heads, decoders, predictors) get 1.
  `patch_embed_mult` further scales the patch embedding (DINOv2's
  `optim.patch_embed_lr_mult`, 0.2 in `configs/ssl_default_config.yaml`,
  applied in `dinov2/utils/param_groups.py` to the parameters named
  `patch_embed`; not to the class token or position embeddings).
  """
  if len(names) < 2 or names[0] != "encoder":
    return 1.0
  top = names[1]
  if top == "patch_embed" and patch_embed_mult != 1.0:
    return patch_embed_mult * layer_decay_factor(names, decay, depth)
  if top in _EMBED_PARAMS:
    layer = 0
  elif top.startswith("block") and top[5:].isdigit():
    layer = int(top[5:])
  else:
    layer = depth + 1
  return float(decay) ** (depth + 1 - layer)


def scale_by_layer_decay(decay: float, depth: int,
                         patch_embed_mult: float = 1.0) -> optax.GradientTransformation:
  """Multiplies each update by its static `layer_decay_factor` (chained after
  the optimiser, this scales the learning rate of each parameter group, as
  MAE's `lr_scale` per param group does; weight decay included, as torch's
  AdamW multiplies its decay by the group's lr)."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params

    def scale(path, u):
      f = layer_decay_factor(_path_names(path), decay, depth, patch_embed_mult)
      return u if f == 1.0 else u * jnp.asarray(f, u.dtype)

    return jax.tree_util.tree_map_with_path(scale, updates), state

  return optax.GradientTransformation(init_fn, update_fn)


def _layer_decay_depth(decay: float, model: Any, patch_embed_mult: float = 1.0) -> int:
  """Checks `optimizer.layer_decay` and `optimizer.patch_embed_lr_mult`
  against the encoder; returns its depth."""
  if not 0.0 < decay <= 1.0:
    raise errors.ConfigError(f"optimizer.layer_decay={decay}: must be in (0, 1] (1 = off)")
  if not patch_embed_mult > 0.0:
    raise errors.ConfigError(f"optimizer.patch_embed_lr_mult={patch_embed_mult}: must be > 0 "
                             "(1 = off)")
  if decay == 1.0:  # name the field that is set in the errors below
    decay_field = f"optimizer.patch_embed_lr_mult={patch_embed_mult}"
  else:
    decay_field = f"optimizer.layer_decay={decay}"
  # Imported here: only layer decay needs the model code.
  from jssl import models  # pylint: disable=import-outside-toplevel
  if model is None:
    raise errors.ConfigError(f"{decay_field} needs the ViT encoder's config "
                             "(make_optimizer(..., model=config.model))")
  encoder = model if isinstance(model, models.ViT) else (
      models.make_encoder(model) if models.is_vit(model) else None)
  if encoder is None:
    name = model.get("name") if hasattr(model, "get") else type(model).__name__
    raise errors.ConfigError(f"{decay_field} is for ViT encoders; "
                             f"config.model.name={name!r} is not one (set it to 1.0)")
  return int(encoder.depth)


_OPTIMIZER_KEYS = ("name", "base_lr", "lr_scaling", "weight_decay",
                   "weight_decay_end", "momentum", "trust_coefficient",
                   "warmup_epochs", "min_lr", "grad_clip_norm", "b1", "b2",
                   "nesterov", "layer_decay", "patch_embed_lr_mult")


def make_optimizer(cfg: Any, *, global_batch: int, total_steps: int,
                   steps_per_epoch: float,
                   frozen: Sequence[tuple[str, int]] = (), model: Any = None,
                   constant_lr: Sequence[str] = ()
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Optimiser and its learning-rate schedule from `config.optimizer`.

  Fields: `name` ('lars' | 'sgd' | 'adamw'), `base_lr`, `lr_scaling`,
  `weight_decay` (and optional `weight_decay_end`: cosine from one to the
  other over the run, DINO), `warmup_epochs`, `min_lr` (cosine floor, 0),
  `momentum` (and `nesterov`, SGD only: Nesterov momentum as in SimCLR's
  linear evaluation / fine-tuning), `trust_coefficient` (LARS eta), `b1`/`b2` (AdamW),
  `grad_clip_norm` (0 = off), `layer_decay` (1 = off: the per-layer lr
  scale of a ViT encoder, `layer_decay_factor`), `patch_embed_lr_mult` (1 =
  off: the ViT patch embedding's extra lr scale, DINOv2). `frozen`: see
  `freeze` (from the method). `model`: the encoder's config (`config.model`)
  or a `ViT`; needed only for `layer_decay` or `patch_embed_lr_mult` != 1.
  `constant_lr`: parameter path prefixes (from the method) that keep the
  peak learning rate for the whole run (`scale_by_grouped_lr`: SimSiam's
  fixed predictor lr); empty: one schedule for every parameter.
  """
  unknown = sorted(set(cfg.keys()) - set(_OPTIMIZER_KEYS))
  if unknown:
    raise errors.ConfigError(f"unknown optimizer config keys {unknown}; allowed: "
                             f"{list(_OPTIMIZER_KEYS)}")
  lr = scaled_learning_rate(cfg, global_batch)
  warmup = int(round(cfg.get("warmup_epochs", 0) * steps_per_epoch))
  schedule = warmup_cosine(lr, total_steps, warmup,
                           end_value=cfg.get("min_lr", 0.0))
  wd = cfg.weight_decay
  if cfg.get("weight_decay_end", None) is not None:
    wd = cosine_between(cfg.weight_decay, cfg.weight_decay_end, total_steps)
  name = cfg.name
  if constant_lr:
    scale_lr = scale_by_grouped_lr(schedule, constant_lr, lr)
  else:
    scale_lr = optax.scale_by_learning_rate(schedule)
  if cfg.get("nesterov", False) and name != "sgd":
    raise ValueError(f"optimizer.nesterov is an SGD option; optimizer.name={name!r}")
  if name == "lars":
    # optax.lars, with a weight decay that may follow a schedule.
    tx = optax.chain(
        _decayed_weights(wd, is_kernel),
        optax.masked(optax.scale_by_trust_ratio(
            trust_coefficient=cfg.get("trust_coefficient", 0.001), eps=0.0),
                     mask=is_kernel),
        scale_lr,
        optax.trace(decay=cfg.get("momentum", 0.9)))
  elif name == "sgd":
    # optax.sgd, spelled out so the rate can be grouped: trace(momentum) then
    # the learning rate (PyTorch's order: the lr scales the momentum buffer),
    # nested as optax.sgd nests it, so the optimiser state keeps its structure.
    tx = optax.chain(
        _decayed_weights(wd, is_kernel),
        optax.chain(optax.trace(decay=cfg.get("momentum", 0.9),
                                nesterov=bool(cfg.get("nesterov", False))),
                    scale_lr))
  elif name == "adamw":
    # optax.adamw (decoupled decay, scaled by the LR), schedulable decay.
    tx = optax.chain(
        optax.scale_by_adam(b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999)),
        _decayed_weights(wd, is_kernel),
        scale_lr)
  else:
    raise ValueError(
        f"optimizer.name={name!r}: expected one of 'lars', 'sgd', 'adamw'")
  if cfg.get("grad_clip_norm", 0.0):
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  decay = float(cfg.get("layer_decay", 1.0))
  mult = float(cfg.get("patch_embed_lr_mult", 1.0))
  if decay != 1.0 or mult != 1.0:
    # Linear in the update for every optimiser here (momentum included), so
    # scaling the final update is scaling each group's learning rate.
    tx = optax.chain(tx, scale_by_layer_decay(decay, _layer_decay_depth(decay, model, mult),
                                              mult))
  if frozen:
    tx = optax.chain(tx, freeze(frozen))
  return tx, schedule
