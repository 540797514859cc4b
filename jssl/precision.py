"""jssl's mixed-precision policy, in one place.

One switch, `config.model.dtype` ('float32' default | 'bfloat16' | 'float16';
`config.text.model.dtype` for the text tower of image-text runs), picks the
*compute* dtype. Everything else is fixed by this policy:

1. Parameters are stored in float32 (`PARAM_DTYPE`) whatever the compute
   dtype: every module passes `param_dtype=PARAM_DTYPE` and casts the kernel
   to the compute dtype at use (flax `nn.Dense` / `nn.Conv` semantics, and
   `jssl.models.conv.Conv`). The gradient of a float32 parameter read through
   a cast is float32 (the cast's transpose casts the cotangent back), so the
   optimiser sees float32 gradients and optax keeps its state (momentum,
   Adam/LARS moments: `zeros_like(params)`) in float32 too. EMA teachers,
   MoCo queues, DINO's center and SwAV's queue are float32 state as well.
   No loss scaling: bfloat16 has float32's exponent range, so gradients do
   not underflow (the flax ImageNet example, `examples/imagenet/train.py`,
   uses `DynamicScale` only for float16 on GPU; bfloat16 on TPU runs
   without). float16 is accepted but, without loss scaling, not recommended.

2. Compute in the compute dtype: the convolutions and matmuls of the trunks
   (ResNet, ViT, text transformer) and of the MLP heads (projector,
   predictor, DINO's MLP) take `dtype=compute dtype`. The heads follow
   `config.model.dtype` unless their own `dtype` field says otherwise
   (`head_config`).

3. Float32 islands, where 8 mantissa bits are not enough:
   - Batch-norm statistics, running averages and the normalisation itself:
     flax `nn.BatchNorm` (and `nn.LayerNorm`) with `force_float32_reductions=
     True` (flax's default, passed explicitly in jssl) promotes the input to
     float32 for the mean/variance (`flax/linen/normalization.py`,
     `_compute_stats`), keeps `batch_stats` in float32 and normalises in
     float32 (`_normalize`: `x - mean` promotes to float32); only the output
     is cast back to the compute dtype.
   - Attention softmax (ViT, text tower): logits cast to float32 before the
     softmax (`jax.nn.dot_product_attention`'s XLA path does the same,
     `jax/_src/nn/functions.py`, `_dot_product_attention_core`).
   - Pooling: the encoders' `'pre_logits'` are float32 (a mean over h*w
     pixels or N tokens in bfloat16 loses bits).
   - The layer that produces the loss input runs in float32: the output
     Linear (+BN) of every `MLPHead` (projector, predictor), DINO's
     weight-normalised last layer, SwAV's prototypes and the image-text
     projections. Its FLOPs are < 1% of the trunk's, and its output is
     divided by a temperature (0.04-0.2) or multiplied by a logit scale (up
     to 100) before a softmax: bfloat16's relative step of 2^-8 on a
     cosine near 1 would become a logit step of ~0.1-0.4. big_vision does
     the same (`big_vision/models/vit.py`: matmuls in `dtype_mm`, the
     `head` Dense without a dtype, i.e. float32).
   - Losses: every method passes its loss inputs (projections, predictions,
     logits, prototype scores, teacher outputs, reconstructions) through
     `cast_to_f32` before the loss, and every `jssl.losses` function upcasts
     narrower inputs to float32 again (`jssl.losses._common.upcast`), so
     softmax / logsumexp / normalisations / Sinkhorn run in float32 and the
     loss value is float32.

tests/test_precision.py checks each point for every method with
`model.dtype='bfloat16'`: parameters, optimiser state and method state are
float32; the loss and the gradients are float32; the loss's jaxpr has no
exp / log / rsqrt / sqrt / reduction on a 16-bit float, while its matmuls and
convolutions do run in bfloat16; and SimCLR trained in bfloat16 on the digits
learns (its linear probe beats the random-init encoder's).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

PARAM_DTYPE = jnp.float32   # parameters, optimiser state, method state
LOSS_DTYPE = jnp.float32    # loss inputs, loss values, BN statistics, softmax
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name: Any) -> Any:
  """'float32' | 'bfloat16' | 'float16' | a dtype | None (float32) -> a jnp dtype."""
  if name is None or name == "":
    return jnp.float32
  if isinstance(name, str):
    if name not in DTYPES:
      raise ValueError(f"dtype must be one of {list(DTYPES)}, got {name!r}")
    return DTYPES[name]
  return jnp.dtype(name).type


def compute_dtype(config) -> Any:
  """The compute dtype of a run: `config.model.dtype` (float32 when absent)."""
  model = config.get("model", None) if hasattr(config, "get") else None
  name = model.get("dtype", None) if model is not None else None
  return as_dtype(name)


def dtype_name(dtype: Any) -> str:
  """jnp.bfloat16 -> 'bfloat16'."""
  return jnp.dtype(dtype).name


def head_config(head_cfg: Mapping[str, Any], config) -> dict:
  """A head's config (`config.projector`, `.predictor`, `.head`) as a dict whose
  `dtype` is its own when set, else the run's compute dtype (policy point 2)."""
  d = dict(head_cfg.to_dict() if hasattr(head_cfg, "to_dict") else head_cfg)
  if not d.get("dtype"):
    d["dtype"] = dtype_name(compute_dtype(config))
  return d


def _is_narrow_float(x) -> bool:
  dt = getattr(x, "dtype", None)
  return (dt is not None and jnp.issubdtype(dt, jnp.floating)
          and jnp.finfo(dt).bits < 32)


def cast_to_f32(tree):
  """Every 16-bit float array leaf of `tree` cast to float32 (float32 and
  float64 leaves, integers, bools and None unchanged): what a method applies
  to its loss inputs (policy point 3)."""
  return jax.tree.map(lambda x: x.astype(LOSS_DTYPE) if _is_narrow_float(x) else x, tree)
