"""Transformer text encoder of the image-text dual encoders (CLIP, SigLIP, LiT).

Architecture: the text tower of CLIP (Radford et al. 2021, Sec. 2.4; openai/CLIP
`clip/model.py`, `CLIP.encode_text`): token embedding + learned position
embedding -> pre-norm transformer blocks -> final LayerNorm, with two options:

  causal=True   CLIP: masked (autoregressive) self-attention; the feature of a
                text is the final-normed token at its EOS, the last non-zero
                token of the row (openai takes `text.argmax(-1)`, its EOS having
                the largest id; jssl's tokenizers pad with 0 and end every row in
                EOS, `jssl.text.tokenizers`, so the last non-zero token is EOS
                whatever its id).
  causal=False  big_vision (`models/proj/image_text/text_transformer.py`, used
                by SigLIP and LiT): bidirectional self-attention. big_vision
                attends over the padding too and pools the last position
                ('last', with "sticky" EOS padding) or the mean of ALL
                positions; jssl masks the padding keys (id 0) instead and pools
                'mean' over the non-pad tokens or 'cls' (the first token, BOS).
                'eos' works here as well.

Block: the pre-norm block of `jssl.models.vit` (`vit.Block`: LayerNorm eps 1e-6
-> MSA -> residual; LayerNorm -> 4x MLP, exact GELU -> residual; q/v/out biases,
no key bias: see `vit.SelfAttention`), its attention by
`jax.nn.dot_product_attention` with `is_causal` (causal=True) or a key padding
mask (causal=False); `attention_impl` and `remat` as the ViT's
(`vit.resolve_attention_impl`, `vit.remat_block`). Deviations from openai
CLIP: exact GELU instead of QuickGELU (open_clip's default for new models and
big_vision's), LayerNorm eps 1e-6 (CLIP: 1e-5), xavier-uniform Dense kernels
(CLIP: normal with std width^-0.5 scaled by depth).
Initialisation: token embedding normal(0.02), position embedding normal(0.01)
(openai CLIP `initialize_parameters`).

Sizes (`SIZES`, width / depth / heads, MLP ratio 4):
  tiny  32 / 2 / 2        tests and the quickstart
  S     384 / 12 / 6      big_vision `vit.decode_variant('S')` (the S text
                          tower of SigLIP / LiT S models)
  B     512 / 12 / 8      CLIP's text transformer of ViT-B/32 and ViT-B/16
                          (Radford et al. 2021, App. F; openai
                          `build_model`: transformer_width 512, heads 8,
                          layers 12). big_vision's 'B' text tower (SigLIP
                          B/16) is 768 / 12 / 12: set width=768, num_heads=12.

Call: `apply(variables, tokens int32 [B, L], train=bool)` -> dict
  'pre_logits' `[B, W]` float32 (pooled), 'tokens' `[B, L, W]` (every
  position after the final norm, compute dtype; FILIP), 'mask' `[B, L]` bool
  (True at non-pad tokens). No dropout or batch norm: `train` changes nothing.
The context length L is fixed by the position table at init.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jssl.models.vit import LN_EPS, Block, check_attention_config, remat_block

# name: (width, depth, heads); see the module docstring for the sources.
SIZES = {
    "tiny": (32, 2, 2),
    "S": (384, 12, 6),
    "B": (512, 12, 8),
}
POOLS = ("eos", "mean", "cls")


def eos_index(tokens: jax.Array) -> jax.Array:
  """`[B]` index of the last non-zero token of each row (0 for an all-pad row)."""
  pos = jnp.arange(tokens.shape[-1])
  return jnp.max(jnp.where(tokens != 0, pos, 0), axis=-1)


class TextTransformer(nn.Module):
  """Text tower (module docstring). Attributes: `vocab_size`, `width`,
  `depth`, `num_heads`, `mlp_ratio`, `causal`, `pool` ('eos' | 'mean' |
  'cls'), `dtype` (compute; params stay float32), `attention_impl`
  ('auto' | 'xla' | 'cudnn'), `remat` ('none' | 'block' | 'dots')."""
  vocab_size: int
  width: int = 512
  depth: int = 12
  num_heads: int = 8
  mlp_ratio: float = 4.0
  causal: bool = True
  pool: str = "eos"
  dtype: Any = jnp.float32
  attention_impl: str = "auto"
  remat: str = "none"

  @property
  def feature_dim(self) -> int:
    return self.width

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    del train  # no dropout: train and eval are the same
    if tokens.ndim != 2:
      raise ValueError(f"text encoder expects token ids [B, L], got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"text encoder expects integer token ids, got dtype {tokens.dtype}")
    if self.pool not in POOLS:
      raise ValueError(f"text pool must be one of {POOLS}, got {self.pool!r}")
    b, n = tokens.shape
    tokens = tokens.astype(jnp.int32)
    valid = tokens != 0
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 dtype=self.dtype, name="token_embed")(tokens)
    pos = self.param("pos_embedding", nn.initializers.normal(0.01), (1, n, self.width))
    x = x + pos.astype(self.dtype)
    # causal: query q sees keys k <= q; the padding follows the EOS, so no
    # query at or before the EOS sees it. Bidirectional: every query sees the
    # non-pad keys.
    key_valid = None if self.causal else valid
    block = remat_block(Block, self.remat)
    for i in range(self.depth):
      x = block(self.num_heads, self.mlp_ratio, self.dtype, self.attention_impl, self.causal,
                name=f"block{i + 1}")(x, key_valid)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm")(x)
    xf = x.astype(jnp.float32)
    if self.pool == "eos":
      pooled = jnp.take_along_axis(xf, eos_index(tokens)[:, None, None], axis=1)[:, 0]
    elif self.pool == "cls":
      pooled = xf[:, 0]
    else:  # mean over the non-pad tokens, in float32
      w = valid.astype(jnp.float32)[..., None]
      pooled = jnp.sum(xf * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
    return {"pre_logits": pooled, "tokens": x, "mask": valid}


def text_transformer(name: str, *, vocab_size: int, causal: bool = True, pool: str = "eos",
                     dtype: Any = jnp.float32, width: int | None = None,
                     depth: int | None = None, num_heads: int | None = None,
                     mlp_ratio: float = 4.0, attention_impl: str = "auto",
                     remat: str = "none") -> TextTransformer:
  """A named size (`SIZES`); width / depth / heads override it."""
  if name not in SIZES:
    raise ValueError(f"unknown text model size {name!r}; available: {', '.join(SIZES)}")
  if int(vocab_size) < 3:
    raise ValueError(f"text model vocab_size must be >= 3 (pad, BOS, EOS), got {vocab_size}")
  if pool not in POOLS:
    raise ValueError(f"text pool must be one of {POOLS}, got {pool!r}")
  d, l, h = SIZES[name]
  d, l, h = width or d, depth or l, num_heads or h
  if d % h:
    raise ValueError(f"text model width {d} is not divisible by num_heads {h}")
  check_attention_config(attention_impl, remat, dtype)
  return TextTransformer(vocab_size=int(vocab_size), width=d, depth=l, num_heads=h,
                         mlp_ratio=float(mlp_ratio), causal=bool(causal), pool=pool,
                         dtype=dtype, attention_impl=attention_impl, remat=remat)
