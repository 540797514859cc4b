"""I-JEPA's predictor and the ViT context pass with padded token lists.

Assran et al. 2023, "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture", Sec. 3 ("Prediction") and App. A;
facebookresearch/ijepa `src/models/vision_transformer.py`
(`VisionTransformerPredictor`).

`Predictor`: a narrow ViT over [context tokens, mask tokens]. The context
encoder's tokens are linearly mapped to the predictor width and get the
predictor's fixed 2-D sin-cos position embedding of their patch; every target
block gets its own sequence of shared learned mask tokens plus the sin-cos
embedding of the target positions, appended to the context (the blocks of one
image do not see each other). After the blocks and a LayerNorm the mask-token
outputs are mapped back to the encoder width. Output rows are ordered
i*M_c*B + j*B + b (target block i, context mask j, image b) as ijepa's
`x.repeat(len(masks), 1, 1)` + `repeat_interleave_batch` give.

Padding (`jssl.masks.multiblock` pads token lists to static lengths): padded
context and target slots are masked as attention keys. Each sequence is
packed so its valid tokens come first (padding a suffix of the row, which the
cuDNN sequence-length masking of `jssl.models.vit.attention` requires) and
unpacked after the blocks.

`apply_with_key_valid`: runs a jssl ViT with a `key_valid` mask passed to
every transformer block (a flax method interceptor), so the context encoder
is the unchanged `jssl.models.vit.ViT` (same parameters, same forward) and its
padded context tokens are never attended to.

Deviations from ijepa: weights are initialised as jssl's ViT (xavier-uniform
Dense kernels, as MAE), not trunc-normal(0.02) with the per-depth rescaling of
`fix_init_weight`; the mask token is normal(0.02) (ijepa: trunc-normal 0.02).
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from jssl.models.vit import LN_EPS, XAVIER, Block, remat_block, sincos_2d


def apply_with_key_valid(module: nn.Module, variables, x, key_valid, **kwargs):
  """`module.apply(variables, x, **kwargs)` with `key_valid` `[B, S]` given to
  every `Block` call that does not pass its own (S = the block's sequence
  length: for jssl's ViT the cls token then the kept patch tokens)."""
  def interceptor(next_fun, args, kw, context):
    if (isinstance(context.module, Block) and context.method_name == "__call__"
        and len(args) == 1 and kw.get("key_valid") is None):
      kw = dict(kw, key_valid=key_valid)
    return next_fun(*args, **kw)

  with nn.intercept_methods(interceptor):
    return module.apply(variables, x, **kwargs)


def _pack(seq, valid):
  """Valid tokens first (stable): (packed seq, packed valid, inverse order)."""
  order = jnp.argsort(~valid, axis=1, stable=True)
  inverse = jnp.argsort(order, axis=1)
  packed = jnp.take_along_axis(seq, order[..., None], axis=1)
  return packed, jnp.take_along_axis(valid, order, axis=1), inverse


class Predictor(nn.Module):
  """I-JEPA predictor (module doc).

  Call: `(context [M_c*B, N_c, D_enc], context_idx [M_c, B, N_c],
  context_valid [M_c, B, N_c], target_idx [M_t, B, N_t], target_valid
  [M_t, B, N_t], grid (gh, gw)) -> [M_t*M_c*B, N_t, out_dim]` float32.
  """
  width: int = 384
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  out_dim: int = 768
  dtype: Any = jnp.float32
  attention_impl: str = "auto"
  remat: str = "none"

  @nn.compact
  def __call__(self, context, context_idx, context_valid, target_idx, target_valid, grid):
    m_c, b, n_c = context_idx.shape
    m_t, _, n_t = target_idx.shape
    if context.shape[:2] != (m_c * b, n_c):
      raise ValueError(f"context {context.shape} does not match context_idx {context_idx.shape}")
    pos = jnp.asarray(sincos_2d(self.width, *grid)).astype(self.dtype)    # [N, W]
    x = nn.Dense(self.width, dtype=self.dtype, kernel_init=XAVIER, name="embed")(context)
    x = x + pos[context_idx.reshape(m_c * b, n_c)]
    mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
    q = mask_token.astype(self.dtype) + pos[target_idx]                   # [M_t, B, N_t, W]
    rows = m_t * m_c * b
    q = jnp.broadcast_to(q[:, None], (m_t, m_c, b, n_t, self.width)).reshape(rows, n_t, -1)
    x = jnp.broadcast_to(x[None], (m_t, m_c * b, n_c, self.width)).reshape(rows, n_c, -1)
    q_valid = jnp.broadcast_to(target_valid[:, None], (m_t, m_c, b, n_t)).reshape(rows, n_t)
    x_valid = jnp.broadcast_to(context_valid[None], (m_t, m_c, b, n_c)).reshape(rows, n_c)
    seq, valid, inverse = _pack(jnp.concatenate([x, q], axis=1),
                                jnp.concatenate([x_valid, q_valid], axis=1))
    block = remat_block(Block, self.remat)
    for i in range(self.depth):
      seq = block(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, dtype=self.dtype,
                  attention_impl=self.attention_impl, name=f"block{i + 1}")(seq, valid)
    seq = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm")(seq)
    seq = jnp.take_along_axis(seq, inverse[..., None], axis=1)[:, n_c:]
    # The loss input: float32 (jssl.precision).
    return nn.Dense(self.out_dim, dtype=jnp.float32, kernel_init=XAVIER, name="proj")(
        seq).astype(jnp.float32)
