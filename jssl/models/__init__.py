"""Encoders and heads, built from config.

  make_encoder(cfg)   -> ResNet; apply(v, x [B, H, W, C], train=...) -> dict with
                         'pre_logits' [B, D], 'feature_map', 'stage1'..'stageN'
                      -> ViT (name 'vit_*'); apply(v, x, train=..., keep_indices=None, mask=None)
                         -> dict with 'pre_logits' [B, D], 'cls' [B, D], 'tokens' [B, N, D]
  feature_dim(cfg)    -> D
  make_projector(cfg) -> MLPHead; apply(v, h [B, D], train=...) -> [B, P]
  make_predictor(cfg) -> MLPHead (BYOL / SimSiam q)
  make_text_encoder(cfg) -> TextTransformer; apply(v, tokens int32 [B, L], train=...)
                         -> dict with 'pre_logits' [B, W], 'tokens' [B, L, W], 'mask' [B, L]

`cfg` is an `ml_collections.ConfigDict` or a plain dict. Unknown keys raise
`ValueError`, so a typo in `--config.model.x=` fails loudly.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from jssl.models import heads, resnet, text, vit
from jssl.models.conv import Conv, conv2d
from jssl.models.heads import MLPHead
from jssl.models.resnet import VARIANTS, ResNet
from jssl.models.text import TextTransformer
from jssl.models.vit import VARIANTS as VIT_VARIANTS, ViT

__all__ = ["Conv", "conv2d", "MLPHead", "ResNet", "VARIANTS", "ViT", "VIT_VARIANTS",
           "make_encoder", "feature_dim", "make_projector", "make_predictor", "is_vit",
           "TextTransformer", "make_text_encoder"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_ENCODER_KEYS = ("name", "stem", "dtype", "width_multiplier", "conv_impl", "zero_init_residual")
_VIT_KEYS = ("name", "patch_size", "dtype", "pos_embed", "pool", "width", "depth", "num_heads",
             "mlp_ratio", "attention_impl", "remat", "drop_path_rate")
_TEXT_KEYS = ("name", "vocab_size", "causal", "pool", "dtype", "width", "depth", "num_heads",
              "mlp_ratio", "attention_impl", "remat")
_HEAD_KEYS = ("hidden_dims", "out_dim", "use_bn", "last_bn", "last_bn_scale", "last_bn_center",
              "dtype")


def _as_dict(cfg: Any, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
  d = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
  unknown = sorted(set(d) - set(allowed))
  if unknown:
    raise ValueError(f"unknown {what} config keys {unknown}; allowed: {list(allowed)}")
  return d


def _dtype(name: Any) -> Any:
  if name is None:
    return jnp.float32
  if isinstance(name, str):
    if name not in _DTYPES:
      raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {name!r}")
    return _DTYPES[name]
  return name


def is_vit(cfg: Mapping[str, Any]) -> bool:
  """True when an encoder config names a ViT ('vit_tiny', 'vit_small', ...)."""
  name = cfg.get("name") if hasattr(cfg, "get") else None
  return isinstance(name, str) and name.startswith("vit")


def make_encoder(cfg: Mapping[str, Any]) -> ResNet | ViT:
  """Builds an encoder.

  Args:
    cfg: ResNet: `name` in VARIANTS ('resnet18', 'resnet34', 'resnet50',
      'resnet_small', 'resnet_tiny'); optional `stem` ('cifar' default |
      'imagenet'), `dtype` ('float32' default | 'bfloat16'), `width_multiplier`
      (1.0), `conv_impl` ('auto' | 'xla' | 'matmul'), `zero_init_residual` (True).
      ViT: `name` in VIT_VARIANTS ('vit_tiny', 'vit_small', 'vit_base', test-only
      'vit_test'); optional `patch_size` (16; 4 for 32 px inputs), `dtype`,
      `pos_embed` ('sincos' default | 'learned'), `pool` ('cls' default | 'gap'),
      `width` / `depth` / `num_heads` / `mlp_ratio` (override the variant's),
      `attention_impl` ('auto' default | 'xla' | 'cudnn': the
      `jax.nn.dot_product_attention` implementation, `vit.resolve_attention_impl`),
      `remat` ('none' default | 'block' | 'dots': rematerialisation of each
      block, `vit.remat_block`), `drop_path_rate` (0.0: stochastic depth of
      the blocks in train mode, linear 0 -> rate over depth; needs the
      method to pass a 'dropout' rng, as DINO and SimMIM do).

  Returns:
    An unbound Flax module.
  """
  if is_vit(cfg):
    d = _as_dict(cfg, _VIT_KEYS, "ViT encoder")
    name = d.pop("name")
    d["dtype"] = _dtype(d.get("dtype"))
    return vit.vit(name, **d)
  d = _as_dict(cfg, _ENCODER_KEYS, "encoder")
  if "name" not in d:
    raise ValueError(f"encoder config needs a 'name', one of {list(VARIANTS + VIT_VARIANTS)}")
  return resnet.resnet(d["name"], stem=d.get("stem", "cifar"),
                       width_multiplier=float(d.get("width_multiplier", 1.0)),
                       dtype=_dtype(d.get("dtype")), conv_impl=d.get("conv_impl", "auto"),
                       zero_init_residual=bool(d.get("zero_init_residual", True)))


def feature_dim(cfg: Mapping[str, Any]) -> int:
  """D, the width of 'pre_logits' for an encoder config (no tracing)."""
  return make_encoder(cfg).feature_dim


def make_projector(cfg: Mapping[str, Any]) -> MLPHead:
  """Builds a projector from `hidden_dims`, `out_dim`, `use_bn`, `last_bn`, ... (see heads)."""
  d = _as_dict(cfg, _HEAD_KEYS, "projector")
  d["dtype"] = _dtype(d.get("dtype"))
  return heads.projector(**d)


def make_predictor(cfg: Mapping[str, Any]) -> MLPHead:
  """Builds a BYOL / SimSiam predictor from `hidden_dims`, `out_dim`, `use_bn`, `dtype`."""
  d = _as_dict(cfg, ("hidden_dims", "out_dim", "use_bn", "dtype"), "predictor")
  d["dtype"] = _dtype(d.get("dtype"))
  return heads.predictor(**d)


def make_text_encoder(cfg: Mapping[str, Any], *, vocab_size: int | None = None) -> TextTransformer:
  """Builds the text tower of an image-text run (`config.text.model`).

  Args:
    cfg: `name` in ('tiny', 'S', 'B'; `jssl.models.text.SIZES`), `vocab_size`
      (0 = take `vocab_size` from the argument, i.e. the tokenizer's),
      `causal` (True: CLIP), `pool` ('eos' | 'mean' | 'cls'), `dtype`;
      optional `width` / `depth` / `num_heads` / `mlp_ratio` overrides,
      `attention_impl` and `remat` (as the ViT's).
    vocab_size: the tokenizer's vocabulary size, used when `cfg.vocab_size`
      is 0 or absent.

  Returns:
    An unbound `TextTransformer`.
  """
  d = _as_dict(cfg, _TEXT_KEYS, "text model")
  if "name" not in d:
    raise ValueError(f"text model config needs a 'name', one of {list(text.SIZES)}")
  vocab = int(d.pop("vocab_size", 0) or 0) or int(vocab_size or 0)
  if vocab <= 0:
    raise ValueError("text model vocab_size is 0 (= from the tokenizer) but no tokenizer "
                     "vocabulary size was given")
  name = d.pop("name")
  d["dtype"] = _dtype(d.get("dtype"))
  return text.text_transformer(name, vocab_size=vocab, **d)
