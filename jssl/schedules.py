"""Learning-rate schedules and optimisers built from config (all optax).

The SimCLR recipe (Chen et al. 2020, Sec. B.1; google-research/simclr
`tf2/lars_optimizer.py` / `model_util.py`): LARS with momentum 0.9, learning
rate `base_lr * global_batch / 256` (linear scaling), linear warm-up then
cosine decay to 0 without restarts, weight decay, and both the weight decay
and the LARS trust ratio skipped for biases and batch-norm parameters.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import optax


def scaled_learning_rate(cfg: Any, global_batch: int) -> float:
  """`base_lr * B / 256` ('linear'), `base_lr * sqrt(B)` ('sqrt') or `base_lr`."""
  scaling = cfg.get("lr_scaling", "linear")
  if scaling == "linear":
    return cfg.base_lr * global_batch / 256
  if scaling == "sqrt":  # SimCLR paper, small-batch / long-training variant.
    return cfg.base_lr * math.sqrt(global_batch)
  if scaling == "none":
    return cfg.base_lr
  raise ValueError(
      f"optimizer.lr_scaling={scaling!r}: expected 'linear', 'sqrt' or 'none'")


def warmup_cosine(peak: float, total_steps: int, warmup_steps: int,
                  end_value: float = 0.0) -> optax.Schedule:
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=end_value)


def is_kernel(params: Any) -> Any:
  """True for weight matrices / conv kernels, False for biases and BN params.

  Decided by rank: every bias and batch-norm scale/offset is 1-D, every dense
  or conv kernel is >= 2-D. This is what "exclude bias and BN" means in SimCLR
  and solo-learn (`exclude_bias_n_norm`).
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(cfg: Any, *, global_batch: int, total_steps: int,
                   steps_per_epoch: float) -> tuple[optax.GradientTransformation,
                                                    optax.Schedule]:
  """Optimiser and its learning-rate schedule from `config.optimizer`."""
  lr = scaled_learning_rate(cfg, global_batch)
  warmup = int(round(cfg.get("warmup_epochs", 0) * steps_per_epoch))
  schedule = warmup_cosine(lr, total_steps, warmup)
  name = cfg.name
  if name == "lars":
    tx = optax.lars(
        learning_rate=schedule,
        weight_decay=cfg.weight_decay,
        weight_decay_mask=is_kernel,
        trust_coefficient=cfg.get("trust_coefficient", 0.001),
        eps=0.0,
        trust_ratio_mask=is_kernel,
        momentum=cfg.get("momentum", 0.9),
    )
  elif name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=is_kernel),
        optax.sgd(schedule, momentum=cfg.get("momentum", 0.9)))
  elif name == "adamw":
    tx = optax.adamw(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                     weight_decay=cfg.weight_decay, mask=is_kernel)
  else:
    raise ValueError(
        f"optimizer.name={name!r}: expected one of 'lars', 'sgd', 'adamw'")
  if cfg.get("grad_clip_norm", 0.0):
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, schedule
