"""Vision Transformer encoders (and the MAE decoder) returning a dict of features.

Architecture: Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words" (ViT;
Table 1 widths/depths/heads; Ti and S from Touvron et al. 2021, DeiT), with the
pre-norm block of timm `vision_transformer.py` (`Block`): LayerNorm (eps 1e-6,
as MAE / MoCo v3 / DINO) -> multi-head self-attention (qkv bias) -> residual;
LayerNorm -> MLP (4x, exact GELU) -> residual; a final LayerNorm.

Position embeddings: fixed 2-D sin-cos by default (`pos_embed='sincos'`), as in
MAE (facebookresearch/mae `util/pos_embed.py`, `get_2d_sincos_pos_embed`) and
MoCo v3 (`vits.py`, `build_2d_sincos_position_embedding`); the cls token's
position embedding is zero. `pos_embed='learned'` gives timm/DINO's learned
table (normal, std 0.02), whose size fixes the input resolution.

Patch embedding: a p x p, stride-p convolution, written as `patchify` + Dense:
the Dense kernel `[p*p*C, D]` reshaped to `[p, p, C, D]` IS the HWIO conv
kernel (the same row-major (p, p, C) order as MAE's target, `jssl.patches`), and a
matmul is the fastest form of a non-overlapping conv on every backend.

Initialisation (MAE `models_mae.py::initialize_weights`, MoCo v3 `vits.py`):
Dense kernels xavier-uniform (q, k and v each on their own [D, D] matrix, as
MoCo v3 and big_vision do), biases zero, the patch embedding xavier-uniform on
its flattened kernel, the cls token normal(0.02).

Deviation from timm: no key bias (see `SelfAttention`; softmax cancels it).

Token masking: `keep_indices` `[B, N_keep]` selects the visible patches after
the position embeddings are added (MAE's encoder sees the visible patches only;
the cls token is always kept).

Mask token (`use_mask_token=True`, SimMIM / iBOT / DINOv2): `mask` `[B, N]`
bool replaces the embeddings of the masked patches by one learned token
`mask_token` `[1, 1, D]` BEFORE the position embeddings are added, so a masked
token still knows its place: microsoft/SimMIM `models/simmim.py`
(`VisionTransformerForSimMIM.forward`: patch_embed, blend with the mask token,
cat cls, `+ pos_embed`) and facebookresearch/dinov2
`dinov2/models/vision_transformer.py` (`prepare_tokens_with_masks`:
`torch.where(masks, mask_token, x)`, then cat cls and add the position
encoding). Initialised as SimMIM: truncated normal, std 0.02, cut at +-0.02
(its `_trunc_normal_(std=.02)` passes a=-std, b=std; DINOv2 keeps zeros).
Without `use_mask_token` the parameter does not exist (old checkpoints load).

Drop-path (stochastic depth; Huang et al. 2016, "Deep Networks with Stochastic
Depth"; timm `layers/drop.py` `DropPath`, used by DINO / iBOT / DINOv2 / I-JEPA
/ SimMIM): with `drop_path_rate` r, block i of L (0-based) drops each residual
branch (attention and MLP) per example with probability r_i = r i / (L - 1)
(timm / DINO `vision_transformer.py`: `torch.linspace(0, r, depth)`) and
scales the kept ones by 1 / (1 - r_i). Only when `train=True`; the keys come
from the flax rng stream 'dropout' (`apply(..., rngs={'dropout': key})`), one
Bernoulli draw per example of the global batch, so a step does not depend on
how the batch is sharded.

Probe feature 'cls_last4': DINO (facebookresearch/dino `eval_linear.py`:
`model.get_intermediate_layers(inp, n_last_blocks)`, each output through the
model's final norm, then `torch.cat([x[:, 0] for x in intermediate_output],
dim=-1)`; "n_last_blocks ... We typically set this to 4 for ViT-Small") and
iBOT (bytedance/ibot `evaluation/eval_linear.py`, `n_last_blocks` default 4) train
their linear probes on the normed cls tokens of the last 4 blocks,
concatenated. `eval.linear_feature='cls_last4'` selects it for the linear
probe; kNN keeps the final cls token ('pre_logits'), as DINO's `eval_knn.py`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jssl.errors import ConfigError
from jssl.patches import patchify

LN_EPS = 1e-6   # MAE / MoCo v3 / DINO: partial(nn.LayerNorm, eps=1e-6)
XAVIER = nn.initializers.xavier_uniform()
# Blocks whose normed cls tokens make 'cls_last4' (module doc).
PROBE_BLOCKS = 4

# name: (width D, depth, heads). Ti/S: DeiT (Touvron et al. 2021, Table 1);
# B: ViT (Dosovitskiy et al. 2021, Table 1). MLP ratio 4 for all.
_VARIANTS = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    # Test-only: 2 blocks of width 32.
    "vit_test": (32, 2, 2),
}
VARIANTS = tuple(_VARIANTS)
# `attention_impl` config values (`resolve_attention_impl`) and `remat`
# policies (`remat_block`).
ATTENTION_IMPLS = ("auto", "xla", "cudnn")
REMATS = ("none", "block", "dots")


def sincos_2d(width: int, grid_h: int, grid_w: int) -> np.ndarray:
  """Fixed 2-D sin-cos position embeddings `[grid_h * grid_w, width]` (row-major).

  MAE's `get_2d_sincos_pos_embed`: half the channels encode the row, half the
  column; each half is [sin(pos * w_k), cos(pos * w_k)] with
  w_k = 1 / 10000^(k / (width/4)), k = 0 .. width/4 - 1. (MAE feeds the column
  index to the first half -- `np.meshgrid(grid_w, grid_h)` -- and so do we.)
  """
  if width % 4:
    raise ValueError(f"sin-cos position embeddings need width % 4 == 0, got {width}")
  quarter = width // 4
  omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
  rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64),
                           np.arange(grid_w, dtype=np.float64), indexing="ij")

  def embed(pos):
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  return np.concatenate([embed(cols), embed(rows)], axis=1).astype(np.float32)


def resolve_attention_impl(impl: str, *, dtype: Any, head_dim: int,
                           backend: str | None = None) -> str | None:
  """The `implementation=` of `jax.nn.dot_product_attention` for a config value.

  'xla' -> 'xla'; 'cudnn' -> 'cudnn' (cuDNN flash attention; jax raises at
  trace time off CUDA or when the shapes/dtype are unsupported); 'auto' ->
  'cudnn' on a CUDA GPU when the compute dtype is bfloat16/float16 and the
  head dim is a multiple of 8 and <= 128 (jax 0.10 `jax/_src/cudnn/
  fused_attention_stablehlo.py`, `check_layout` / `check_is_flash_attention`:
  Q/K/V fp16/bf16/fp8 only; head dim <= 128 before Hopper, <= 256 from
  Hopper, multiple of 8), else None. jax 0.10's None is XLA's own attention
  (`dot_product_attention`: "defaults to `None`, which currently falls back
  to `xla`"), so 'auto' picks cuDNN itself where it is known to apply.
  """
  if impl not in ATTENTION_IMPLS:
    raise ConfigError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
  if impl != "auto":
    return impl
  backend = jax.default_backend() if backend is None else backend
  if (backend in ("gpu", "cuda") and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
      and head_dim % 8 == 0 and head_dim <= 128):
    return "cudnn"
  return None


def attention(q, k, v, *, impl: str | None, is_causal: bool = False,
              key_valid: jax.Array | None = None) -> jax.Array:
  """softmax(q k^T / sqrt(H)) v over `[B, T, N, H]` q/k/v (jax layout) by
  `jax.nn.dot_product_attention(..., implementation=impl)`.

  `is_causal`: query t sees keys s <= t. `key_valid` `[B, S]` bool: keys that
  may be attended (False = padding). XLA gets it as a boolean mask
  `[B, 1, 1, S]`; cuDNN gets `key_value_seq_lengths` = its row sums (a dense
  mask would become a materialised bias there), which is the same mask when
  the padding is a suffix of the row, as jssl's tokenizers make it. The logits
  and softmax are float32 for every dtype (XLA: `preferred_element_type`
  float32, softmax in float32; cuDNN: float32 accumulation).
  """
  kw = {}
  if key_valid is not None:
    if impl == "cudnn":
      kw["key_value_seq_lengths"] = jnp.sum(key_valid, axis=-1, dtype=jnp.int32)
    else:
      kw["mask"] = key_valid[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, is_causal=is_causal, implementation=impl, **kw)


class SelfAttention(nn.Module):
  """Multi-head self-attention (Vaswani et al. 2017) with q / k / v / out Dense
  layers, the attention itself by `jax.nn.dot_product_attention` (`attention`;
  `attention_impl` 'auto' | 'xla' | 'cudnn', see `resolve_attention_impl`).
  The key projection has NO bias: a key bias adds q . b_k to every
  logit of a query's row, which softmax cancels, so its gradient is zero in
  exact arithmetic and float noise in practice -- noise Adam rescales into
  lr-sized random steps (seen as 1-vs-8-device mismatches). timm's qkv Linear
  carries it (D parameters per block more); the function class is the same.
  The softmax runs in float32 whatever the compute dtype.

  Call: `(x [B, N, D], key_valid=None [B, N] bool)`; `is_causal` (attribute)
  masks keys after the query (the text tower's CLIP mode)."""
  num_heads: int
  dtype: Any = jnp.float32
  attention_impl: str = "auto"
  is_causal: bool = False

  @nn.compact
  def __call__(self, x, key_valid=None):
    b, n, d = x.shape
    h = self.num_heads
    dense = lambda name, bias=True: nn.Dense(  # noqa: E731
        d, use_bias=bias, dtype=self.dtype, kernel_init=XAVIER, name=name)
    q = dense("query")(x).reshape(b, n, h, d // h)
    k = dense("key", bias=False)(x).reshape(b, n, h, d // h)
    v = dense("value")(x).reshape(b, n, h, d // h)
    impl = resolve_attention_impl(self.attention_impl, dtype=q.dtype, head_dim=d // h)
    y = attention(q, k, v, impl=impl, is_causal=self.is_causal, key_valid=key_valid)
    return dense("out")(y.reshape(b, n, d))


def drop_path(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  """Stochastic depth on a residual branch `x` `[B, ...]` (timm `drop_path`):
  each example's branch is zeroed with probability `rate`, the others scaled by
  1 / (1 - rate)."""
  keep = 1.0 - rate
  alive = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(alive, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


class Block(nn.Module):
  """Pre-norm transformer block (timm `Block`): x + MSA(LN(x)); x + MLP(LN(x)).

  `drop_path`: the stochastic-depth rate of both residual branches, applied
  unless `deterministic` (module doc; rng stream 'dropout').

  Call: `(x [B, N, D], key_valid=None [B, N] bool)` (see `SelfAttention`)."""
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  attention_impl: str = "auto"
  is_causal: bool = False
  drop_path: float = 0.0
  deterministic: bool = True

  def _branch(self, y):
    if self.deterministic or self.drop_path == 0.0:
      return y
    return drop_path(y, self.drop_path, self.make_rng("dropout"))

  @nn.compact
  def __call__(self, x, key_valid=None):
    d = x.shape[-1]
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm1")(x)
    y = SelfAttention(self.num_heads, self.dtype, self.attention_impl, self.is_causal,
                      name="attn")(y, key_valid)
    x = x + self._branch(y)
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm2")(x)
    y = nn.Dense(int(d * self.mlp_ratio), dtype=self.dtype, kernel_init=XAVIER,
                 name="mlp_fc1")(y)
    # Exact (erf) GELU: torch nn.GELU, which timm / MAE / DINO use.
    y = nn.gelu(y, approximate=False)
    y = nn.Dense(d, dtype=self.dtype, kernel_init=XAVIER, name="mlp_fc2")(y)
    return x + self._branch(y)


def remat_block(block_cls: type[nn.Module], remat: str) -> type[nn.Module]:
  """`block_cls` under the rematerialisation policy `remat` (`REMATS`).

  'none': every activation of the backward pass is kept (fastest, most
  memory). 'block': `nn.remat` with `jax.checkpoint_policies.nothing_saveable`
  -- only each block's input survives the forward pass and the block is
  recomputed in the backward pass (~1/3 more FLOPs per step). 'dots': `nn.remat`
  with `jax.checkpoint_policies.dots_with_no_batch_dims_saveable` -- the
  outputs of the Dense layers (matmuls without batch dimensions) are kept, the
  attention matrices, softmax, LayerNorm and GELU outputs are recomputed.
  (Policy names: `jax.checkpoint_policies` in jax 0.10, which also has
  `everything_saveable`, `dots_saveable`, `save_only_these_names`, ...; see the
  JAX docs "Gradient checkpointing with jax.checkpoint".) Parameter names are
  those of the plain block, so checkpoints load under any policy.
  """
  if remat not in REMATS:
    raise ConfigError(f"remat must be one of {REMATS}, got {remat!r}")
  if remat == "none":
    return block_cls
  policy = (jax.checkpoint_policies.nothing_saveable if remat == "block"
            else jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
  return nn.remat(block_cls, policy=policy)


def _gather_tokens(x, keep_indices):
  """x `[B, N, D]`, keep_indices `[B, K]` int -> `[B, K, D]`."""
  if keep_indices.ndim != 2 or keep_indices.shape[0] != x.shape[0]:
    raise ValueError(f"keep_indices must be [B, N_keep] with B={x.shape[0]}, got "
                     f"{keep_indices.shape}")
  return jnp.take_along_axis(x, keep_indices[..., None].astype(jnp.int32), axis=1)


class ViT(nn.Module):
  """Vision Transformer trunk (no classifier head).

  Attributes:
    width: D, token width. depth: blocks. num_heads: attention heads.
    mlp_ratio: MLP hidden width / D (4).
    patch_size: p (16 for 224 px, 4 for 32 px inputs).
    pos_embed: 'sincos' (fixed, default; MAE / MoCo v3) or 'learned' (DINO).
    pool: 'cls' (default; the cls token after the final norm) or 'gap' (mean
      of the normed patch tokens) gives 'pre_logits'.
    dtype: compute dtype; params stay float32.
    attention_impl: 'auto' (default) | 'xla' | 'cudnn' (`resolve_attention_impl`).
    remat: 'none' (default) | 'block' | 'dots' (`remat_block`).
    use_mask_token: creates the learned `mask_token` `[1, 1, D]` that `mask`
      puts in place of masked patches (module doc; SimMIM / iBOT).
    drop_path_rate: stochastic depth r (0 = off), linear over the blocks from
      0 to r (module doc; DINO / iBOT / SimMIM use 0.1).

  Call: `apply(variables, x [B, H, W, C], train=bool, keep_indices=None,
  mask=None, rngs={'dropout': key})` (the rng only for `train=True` with
  `drop_path_rate > 0`). `mask` `[B, N]` bool: True = patch replaced by the
  mask token (needs `use_mask_token`). No batch norm, so there are no
  'batch_stats'; `train` only switches drop-path on. Returns a dict: 'pre_logits' `[B, D]` float32,
  'cls' `[B, D]`, 'tokens' `[B, N, D]` (patch tokens after the final norm;
  N = N_keep under `keep_indices`), in the compute dtype except 'pre_logits',
  and 'cls_last4' `[B, 4D]` float32: the cls token of each of the last 4 blocks
  (of all blocks when depth < 4), each through the final norm, concatenated
  oldest first; the linear-probe feature of DINO / iBOT for ViT-S
  (`eval.linear_feature`; module doc).
  """
  width: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  patch_size: int = 16
  pos_embed: str = "sincos"
  pool: str = "cls"
  dtype: Any = jnp.float32
  attention_impl: str = "auto"
  remat: str = "none"
  use_mask_token: bool = False
  drop_path_rate: float = 0.0

  @property
  def feature_dim(self) -> int:
    return self.width

  def drop_path_rates(self) -> list[float]:
    """r_i = r i / (depth - 1), i = 0 .. depth - 1 (timm / DINO linspace)."""
    if self.depth == 1:
      return [0.0]
    return [self.drop_path_rate * i / (self.depth - 1) for i in range(self.depth)]

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               keep_indices: jax.Array | None = None,
               mask: jax.Array | None = None) -> dict[str, jax.Array]:
    stochastic = bool(train) and self.drop_path_rate > 0.0
    if stochastic and not self.has_rng("dropout"):
      raise ConfigError(f"model.drop_path_rate={self.drop_path_rate} needs a 'dropout' rng in "
                        "train mode (apply(..., rngs={'dropout': key})); this method does not "
                        "pass one: set model.drop_path_rate=0")
    if mask is not None and not self.use_mask_token:
      raise ValueError("ViT got a token mask but has no mask token (build it with "
                       "use_mask_token=True)")
    if x.ndim != 4:
      raise ValueError(f"ViT expects x [B, H, W, C], got shape {x.shape}")
    if self.pool not in ("cls", "gap"):
      raise ValueError(f"pool must be 'cls' or 'gap', got {self.pool!r}")
    b, h, w, _ = x.shape
    p = self.patch_size
    gh, gw = h // p, w // p
    # [B, N, p*p*C] -> [B, N, D]: the stride-p conv as a matmul (module doc).
    tokens = nn.Dense(self.width, dtype=self.dtype, kernel_init=XAVIER,
                      name="patch_embed")(patchify(x.astype(self.dtype), p))
    n = gh * gw
    if self.use_mask_token:
      # SimMIM's init: trunc_normal_(std=.02, a=-.02, b=.02) (module doc).
      mask_token = self.param("mask_token", nn.initializers.truncated_normal(0.02, lower=-1.0,
                                                                            upper=1.0),
                              (1, 1, self.width))
      if mask is not None:
        if mask.shape != (b, n):
          raise ValueError(f"mask must be [B, N] = {(b, n)}, got {mask.shape}")
        # Before the position embeddings (SimMIM, DINOv2: module doc).
        tokens = jnp.where(mask[..., None].astype(bool), mask_token.astype(self.dtype), tokens)
    if self.pos_embed == "sincos":
      pos = jnp.asarray(sincos_2d(self.width, gh, gw))[None]
    elif self.pos_embed == "learned":
      # One row per patch (no cls row: the cls token itself is learned).
      pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, n, self.width))
    else:
      raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {self.pos_embed!r}")
    tokens = tokens + pos.astype(self.dtype)
    if keep_indices is not None:
      # After the position embeddings, so each visible token keeps its place.
      tokens = _gather_tokens(tokens, keep_indices)
    cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, self.width))
    # The cls token's position embedding is zero (MAE), so it is added as is.
    seq = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, self.width)),
                           tokens], axis=1)
    block = remat_block(Block, self.remat)
    last_cls = []  # the cls token after each of the last PROBE_BLOCKS blocks
    for i, rate in enumerate(self.drop_path_rates()):
      seq = block(self.num_heads, self.mlp_ratio, self.dtype, self.attention_impl,
                  drop_path=rate, deterministic=not stochastic, name=f"block{i + 1}")(seq)
      if i >= self.depth - PROBE_BLOCKS:
        last_cls.append(seq[:, :1])
    norm = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm")
    seq = norm(seq)
    out = {"cls": seq[:, 0], "tokens": seq[:, 1:]}
    # DINO / iBOT's ViT-S linear-probe input: the final norm applied to each
    # of the last blocks' outputs, cls tokens concatenated (module doc). Only
    # the cls rows are normed again; unused outputs cost nothing under jit.
    out["cls_last4"] = jnp.concatenate(
        [norm(c)[:, 0] for c in last_cls[:-1]] + [out["cls"]], axis=-1).astype(jnp.float32)
    # Pool in float32: a mean over N tokens loses bits in bfloat16.
    out["pre_logits"] = (out["cls"].astype(jnp.float32) if self.pool == "cls"
                         else jnp.mean(out["tokens"].astype(jnp.float32), axis=1))
    return out


class MAEDecoder(nn.Module):
  """MAE's lightweight decoder (He et al. 2022, Sec. 3; `models_mae.py`
  `forward_decoder`): project the encoder's tokens to the decoder width, put
  a shared learned mask token at every removed patch, add the decoder's own
  fixed sin-cos position embeddings, transformer blocks, LayerNorm, and a
  linear map to the p*p*C pixels of each patch.

  Call: `(encoded [B, 1 + K, D_enc] (cls first), keep_indices [B, K],
  grid (gh, gw)) -> [B, N, p*p*C]` predictions for every patch (cls dropped).
  `attention_impl` and `remat` as in `ViT`.
  """
  width: int = 512
  depth: int = 8
  num_heads: int = 16
  mlp_ratio: float = 4.0
  out_dim: int = 768    # p * p * C
  dtype: Any = jnp.float32
  attention_impl: str = "auto"
  remat: str = "none"

  @nn.compact
  def __call__(self, encoded, keep_indices, grid):
    b = encoded.shape[0]
    gh, gw = grid
    n = gh * gw
    x = nn.Dense(self.width, dtype=self.dtype, kernel_init=XAVIER,
                 name="embed")(encoded)
    mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
    # Scatter the visible tokens into a sequence of mask tokens, i.e. MAE's
    # "concatenate mask tokens, then unshuffle with ids_restore".
    full = jnp.broadcast_to(mask_token.astype(x.dtype), (b, n, self.width))
    rows = jnp.arange(b)[:, None]
    full = full.at[rows, keep_indices.astype(jnp.int32)].set(x[:, 1:])
    pos = jnp.asarray(sincos_2d(self.width, gh, gw))[None].astype(x.dtype)
    # cls keeps a zero position embedding, as in the encoder.
    x = jnp.concatenate([x[:, :1], full + pos], axis=1)
    block = remat_block(Block, self.remat)
    for i in range(self.depth):
      x = block(self.num_heads, self.mlp_ratio, self.dtype, self.attention_impl,
                name=f"block{i + 1}")(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm")(x)
    # The loss input: computed in float32 (jssl.precision), not rounded to bf16.
    x = nn.Dense(self.out_dim, dtype=jnp.float32, kernel_init=XAVIER, name="pred")(x)
    return x[:, 1:].astype(jnp.float32)


def vit(name: str, *, patch_size: int = 16, pos_embed: str = "sincos",
        pool: str = "cls", dtype: Any = jnp.float32, width: int | None = None,
        depth: int | None = None, num_heads: int | None = None,
        mlp_ratio: float = 4.0, attention_impl: str = "auto", remat: str = "none",
        use_mask_token: bool = False, drop_path_rate: float = 0.0) -> ViT:
  """Builds a named ViT variant (see `VARIANTS`); width/depth/heads override it.

  `attention_impl` ('auto' | 'xla' | 'cudnn') and `remat` ('none' | 'block' |
  'dots'): see `resolve_attention_impl` and `remat_block`. `use_mask_token`,
  `drop_path_rate` (in [0, 1)): see `ViT`."""
  if name not in _VARIANTS:
    raise ValueError(f"unknown ViT {name!r}; available: {', '.join(VARIANTS)}")
  d, l, h = _VARIANTS[name]
  d, l, h = width or d, depth or l, num_heads or h
  if d % h:
    raise ValueError(f"ViT width {d} is not divisible by num_heads {h}")
  if pool not in ("cls", "gap"):
    raise ValueError(f"pool must be 'cls' or 'gap', got {pool!r}")
  if pos_embed not in ("sincos", "learned"):
    raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
  check_attention_config(attention_impl, remat, dtype)
  if not 0.0 <= float(drop_path_rate) < 1.0:
    raise ConfigError(f"model.drop_path_rate must be in [0, 1), got {drop_path_rate}")
  return ViT(width=d, depth=l, num_heads=h, mlp_ratio=float(mlp_ratio),
             patch_size=int(patch_size), pos_embed=pos_embed, pool=pool, dtype=dtype,
             attention_impl=attention_impl, remat=remat, use_mask_token=bool(use_mask_token),
             drop_path_rate=float(drop_path_rate))


def check_attention_config(attention_impl: str, remat: str, dtype: Any) -> None:
  """Build-time checks of the `attention_impl` / `remat` config keys: one-line
  `ConfigError`s instead of a failure deep inside tracing."""
  if attention_impl not in ATTENTION_IMPLS:
    raise ConfigError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {attention_impl!r}")
  if remat not in REMATS:
    raise ConfigError(f"remat must be one of {REMATS}, got {remat!r}")
  if attention_impl == "cudnn" and jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
    raise ConfigError(f"attention_impl='cudnn' needs dtype bfloat16 or float16 (cuDNN flash "
                      f"attention), got {jnp.dtype(dtype).name}; use 'auto' or 'xla'")
