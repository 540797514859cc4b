"""Every count, size and rate of a run config, checked before anything runs.

`validate(config)` is the first line of `jssl.train.run`, so the command
line and the notebook API both get it, before the mesh, the data, the
compile or the workdir are touched. Without it a bad value failed late or not
at all: `total_steps=0` silently trained for `total_epochs`,
`checkpoint.every_steps=0` was a ZeroDivisionError after the first compiled
step, `batch_size=-8` a TypeError about slices, a zero temperature NaN
training, and a negative learning rate or `checkpoint.keep=0` were accepted.

The run books differ (DINO has teacher temperatures, SwAV prototypes, MAE a
decoder), so each rule applies only to a field the config has. Every problem
is listed, one clause per field, `config.<field>=<value>: must be <allowed>`,
joined by '; ' in one `ConfigError`. Checks that need the devices (batch
divisible by the mesh) or the data stay where that is known
(`jssl.sharding.check_global_batch`, the methods).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Iterator, Mapping, Optional

from jssl.errors import ConfigError

# jssl.models._DTYPES, kept here so checking a config imports no JAX/Flax
# (tests/reliability/test_config_validation.py keeps the two equal).
DTYPES = ("float32", "bfloat16", "float16")
# eval.linear_feature: encoder outputs the linear probe can read.
LINEAR_FEATURES = ("pre_logits", "cls_last4")
# jssl.data.pipeline.SOURCES, for the same reason.
SOURCES = ("digits", "arrays", "folder", "npz", "tfds", "digits_captions",
           "shapes_captions")


@dataclasses.dataclass(frozen=True)
class Rule:
  """`ok(value)` is True for an allowed value; `allowed` says which are."""
  ok: Callable[[Any], bool]
  allowed: str


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return (isinstance(v, numbers.Real) and not isinstance(v, bool)
          and math.isfinite(float(v)))


def count(lo: Optional[int] = 1, *, sentinel: Optional[int] = None,
          meaning: str = "") -> Rule:
  """An integer >= lo (any integer when lo is None), or the `sentinel`."""
  def ok(v):
    return _is_int(v) and ((lo is None or v >= lo) or v == sentinel)
  what = "an integer" if lo is None else f"an integer >= {lo}"
  if sentinel is not None:
    what = f"{sentinel} ({meaning}) or {what}"
  return Rule(ok, what)


def _interval(lo, hi, lo_open, hi_open) -> tuple[Callable[[float], bool], str]:
  def inside(x):
    return ((lo is None or (x > lo if lo_open else x >= lo))
            and (hi is None or (x < hi if hi_open else x <= hi)))
  if hi is None:
    return inside, f"> {lo}" if lo_open else f">= {lo}"
  return inside, (f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


def real(lo=None, hi=None, *, lo_open=False, hi_open=False,
         none_ok: bool = False) -> Rule:
  """A finite number in the interval (`lo_open`: lo excluded, same for hi)."""
  inside, text = _interval(lo, hi, lo_open, hi_open)
  what = f"a number {text}"
  if none_ok:
    what += " or None"
  return Rule(lambda v: (none_ok and v is None) or (_is_real(v) and inside(v)), what)


def positive(**kw) -> Rule:
  return real(0, lo_open=True, **kw)


def nonnegative(**kw) -> Rule:
  return real(0, **kw)


PROB = real(0, 1)            # a probability
MOMENTUM = real(0, 1)        # an EMA / centring momentum (1 = frozen target)
BETA = real(0, 1, hi_open=True)  # optimiser momentum / Adam beta: 1 never forgets


def span(hi: Optional[float] = None) -> Rule:
  """A pair (lo, hi) with 0 < lo <= hi (<= `hi` when given)."""
  def ok(v):
    try:
      a, b = v
    except (TypeError, ValueError):
      return False
    return (_is_real(a) and _is_real(b) and 0 < a <= b
            and (hi is None or b <= hi))
  bound = "" if hi is None else f" <= {hi}"
  return Rule(ok, f"a pair (lo, hi) with 0 < lo <= hi{bound}")


def _sequence(item: Rule, what: str) -> Rule:
  def ok(v):
    return (isinstance(v, (list, tuple)) and all(item.ok(x) for x in v))
  return Rule(ok, what)


def one_of(*choices) -> Rule:
  return Rule(lambda v: isinstance(v, str) and v in choices,
              "one of " + ", ".join(repr(c) for c in choices))


SIZES = _sequence(count(1), "a sequence of integers >= 1")

# Every field of every run book's presets that is a count, size, rate or a
# choice among a few names. Rules apply to the fields a config has.
RULES: dict[str, Rule] = {
    # The loop.
    "seed": count(None),
    "batch_size": count(1),
    "total_steps": count(1, sentinel=-1, meaning="use total_epochs"),
    "total_epochs": positive(),
    "stop_at_step": count(1, sentinel=-1, meaning="no planned stop"),
    "log_every_steps": count(1),
    "eval_every_steps": count(0),
    "prefetch": count(0),
    "checkpoint.every_steps": count(1),
    "checkpoint.keep": count(1),
    "diagnostics.every_steps": count(0),
    "online_probe.lr": positive(),
    "online_probe.momentum": BETA,
    # Data and evaluation.
    "data.source": one_of(*SOURCES),
    "data.workers": count(0),
    "data.kwargs.size": count(1),
    "eval.batch_size": count(1),
    "eval.image_size": count(1),
    "eval.crop_fraction": real(0, 1, lo_open=True),
    "eval.knn_k": count(1),
    "eval.knn_temperature": positive(),
    "eval.linear_feature": one_of(*LINEAR_FEATURES),
    "eval.plots": one_of("", "pca", "tsne"),
    # Model and heads.
    "model.dtype": one_of(*DTYPES),
    "model.width_multiplier": positive(),
    "model.patch_size": count(1),
    "model.width": count(1),
    "model.depth": count(1),
    "model.num_heads": count(1),
    "model.mlp_ratio": positive(),
    "model.drop_path_rate": real(0, 1, hi_open=True),
    "projector.out_dim": count(1),
    "projector.hidden_dims": SIZES,
    "predictor.out_dim": count(1),
    "predictor.hidden_dims": SIZES,
    "head.out_dim": count(1),
    "head.hidden_dim": count(1),
    "head.bottleneck_dim": count(1),
    "head.num_layers": count(1),
    "decoder.width": count(1),
    "decoder.depth": count(1),
    "decoder.num_heads": count(1),
    "decoder.mlp_ratio": positive(),
    # Optimiser.
    "optimizer.name": one_of("lars", "sgd", "adamw"),
    "optimizer.lr_scaling": one_of("linear", "sqrt", "none"),
    "optimizer.base_lr": positive(),
    "optimizer.min_lr": nonnegative(),
    "optimizer.weight_decay": nonnegative(),
    "optimizer.weight_decay_end": nonnegative(none_ok=True),
    "optimizer.momentum": BETA,
    "optimizer.b1": BETA,
    "optimizer.b2": BETA,
    "optimizer.trust_coefficient": positive(),
    "optimizer.warmup_epochs": nonnegative(),
    "optimizer.grad_clip_norm": nonnegative(),
    "optimizer.layer_decay": real(0, 1, lo_open=True),
    "optimizer.patch_embed_lr_mult": positive(),
    # Losses: every temperature-like divisor is > 0 (0 gives inf / NaN).
    "loss.temperature": positive(),
    "loss.base_temperature": positive(),
    "loss.student_temp": positive(),
    "loss.teacher_temp": positive(),
    "loss.warmup_teacher_temp": positive(),
    "loss.warmup_teacher_temp_epochs": nonnegative(),
    "loss.sigma": positive(),
    "loss.epsilon": positive(),
    "loss.sinkhorn_iterations": count(1),
    "loss.center_momentum": MOMENTUM,
    "loss.queue_size": count(1),
    "loss.mask_ratio": real(0, 1, lo_open=True, hi_open=True),
    "loss.mask_patch_size": count(1),
    "loss.lambda_param": nonnegative(),
    "loss.scale": positive(),
    "loss.sim_coeff": nonnegative(),
    "loss.std_coeff": nonnegative(),
    "loss.cov_coeff": nonnegative(),
    # Target networks and method schedules.
    "ema.base_momentum": MOMENTUM,
    "ema.final_momentum": MOMENTUM,
    "momentum.base": MOMENTUM,
    "momentum.final": MOMENTUM,
    "swav.num_prototypes": count(1),
    "swav.queue_length": count(0),
    "swav.epoch_queue_starts": nonnegative(),
    "swav.freeze_prototypes_epochs": nonnegative(),
    "dino.clip_grad": nonnegative(),
    "dino.freeze_last_layer_epochs": nonnegative(),
    # Views (also checked inside views.per_view[i] and views.local.overrides).
    "views.num_views": count(1),
    "views.image_size": count(1),
    "views.std": _sequence(positive(), "a sequence of numbers > 0"),
    "views.crop.scale": span(1),
    "views.crop.ratio": span(),
    "views.flip.p": PROB,
    "views.color_jitter.p": PROB,
    "views.color_jitter.brightness": nonnegative(),
    "views.color_jitter.contrast": nonnegative(),
    "views.color_jitter.saturation": nonnegative(),
    "views.color_jitter.hue": real(0, 0.5),
    "views.grayscale.p": PROB,
    "views.blur.p": PROB,
    "views.blur.sigma": span(),
    "views.blur.kernel_fraction": real(0, 1, lo_open=True),
    "views.solarize.p": PROB,
    "views.solarize.threshold": real(0, 1),
    "views.local.num": count(0),
    "views.local.image_size": count(1),
    "views.local.scale": span(1),
    # Image-text runs (CLIP, SigLIP, LiT).
    "embed_dim": count(1),
    "data.captions_per_image": count(1),
    "text.tokenizer.name": one_of("bytes", "sentencepiece", "clip_bpe"),
    "text.tokenizer.context_length": count(2),
    "text.model.vocab_size": count(0),
    "text.model.pool": one_of("eos", "mean", "cls"),
    "text.model.dtype": one_of(*DTYPES),
    "loss.impl": one_of("global", "chunked", "ring"),
    "loss.similarity": one_of("global", "filip"),
    "loss.chunk_size": count(1),
    "loss.max_logit_scale": positive(),
}


def _flatten(d: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """(dotted path, leaf) of a ConfigDict or mapping; sequences are leaves."""
  for k, v in d.items():
    if isinstance(v, Mapping) or hasattr(v, "to_dict"):
      yield from _flatten(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def _show(v: Any) -> str:
  if hasattr(v, "item") and not isinstance(v, (list, tuple)):
    try:
      v = v.item()  # numpy scalars print as plain numbers
    except (TypeError, ValueError):
      pass
  return repr(v)


def problems(config: Any) -> list[str]:
  """Every problem as a `config.<field>=<value>: must be <allowed>` clause."""
  out = []

  def check(name: str, rule_key: str, value: Any) -> None:
    rule = RULES.get(rule_key)
    if rule is not None and not rule.ok(value):
      out.append(f"config.{name}={_show(value)}: must be {rule.allowed}")

  flat = dict(_flatten(config))
  for path, value in flat.items():
    local = "views.local.overrides."
    if path.startswith(local):  # local-crop overrides of view fields
      check(path, "views." + path[len(local):], value)
    elif path == "views.per_view":
      for i, override in enumerate(value or ()):
        if not isinstance(override, Mapping) and not hasattr(override, "to_dict"):
          continue  # its shape is checked by jssl.data.device_views
        for key, v in _flatten(override):
          check(f"views.per_view[{i}][{key!r}]", "views." + key, v)
    else:
      check(path, path, value)

  # 'cls_last4' is a ViT output (jssl.models.vit).
  feature, model = flat.get("eval.linear_feature"), flat.get("model.name")
  if (feature == "cls_last4" and isinstance(model, str)
      and not model.startswith("vit")):
    out.append(f"config.eval.linear_feature='cls_last4': needs a ViT encoder, "
               f"config.model.name={model!r} has no cls token; use 'pre_logits'")
  # Diagnostics are read with the metrics, on log steps only (jssl.step).
  diag, log_every = flat.get("diagnostics.every_steps"), flat.get("log_every_steps")
  if (flat.get("diagnostics.enabled", True) and _is_int(diag) and diag > 0
      and _is_int(log_every) and log_every > 0 and diag % log_every):
    out.append(f"config.diagnostics.every_steps={diag}: must be 0 (every log step) or "
               f"a multiple of config.log_every_steps={log_every}")
  return out


def validate(config: Any) -> None:
  """Raises `ConfigError` listing every bad count, size or rate of `config`."""
  found = problems(config)
  if found:
    raise ConfigError("; ".join(found))
