"""Patch-mask samplers as keyed pure functions with static output shapes.

`multiblock`: I-JEPA's multi-block masking (Assran et al. 2023, "Self-Supervised
Learning from Images with a Joint-Embedding Predictive Architecture", Sec. 3
"Targets" / "Context" and Fig. 4; facebookresearch/ijepa
`src/masks/multiblock.py::MaskCollator`). Per batch, one target block size
(h, w) and one context block size are drawn (`_sample_block_size`: ONE uniform
u sets both scale and aspect ratio; max_keep = int(N s); h = round(sqrt(max_keep
a)), w = round(sqrt(max_keep / a)), each clipped to at most grid - 1). Per
image, `num_targets` target blocks of size (h, w) are placed uniformly
(top in [0, H - h - 1], `torch.randint(0, H - h)`, exclusive high, as the
official code does; `placement="uniform"` is the deviation below), then
`num_context` context blocks, each restricted to the complement of all targets
and re-placed (up to `context_tries` = 20 tries, the official timeout) until
more than `min_keep` tokens remain.

Static shapes (what jit needs; the official counts vary per step). Token lists
are PADDED to fixed lengths derived from the config, with validity masks:
  * targets `[M_t, B, N_t]`, N_t = the largest h*w the target settings can give;
    the valid tokens of a block (raster order) come first, slot s < h*w.
  * context `[M_c, B, N_c]`, N_c = the largest context block area, or N minus
    the smallest target block when that is fewer; the image's context tokens
    (block minus targets, raster order) first.
The padding is always a suffix of each row (what cuDNN's sequence-length
masking needs). Deviations from the official collator, all for static shapes:
  * no truncation to the batch minimum: every image keeps ALL its context and
    target tokens (the official code truncates context lists to the smallest in
    the batch, dropping the bottom-right context tokens of the other images);
    the encoder and predictor mask the padding as attention keys and the loss
    averages over valid target tokens only, so a step sees a superset of the
    official tokens.
  * the block-size draw u takes one of `LEVELS` = 4096 equally spaced values
    k / 4096 (the official u is a float32 in [0, 1)); the block-size tables are
    then exact and fixed at trace time.
  * context retries: 20 candidate positions are drawn at once and the first
    with more than `min_keep` tokens is used; when none has, the candidate with
    the most tokens (the official code then drops target constraints one by one
    and retries, letting the context overlap a target). The context can then be
    tiny (even empty); jssl's ViT keeps its cls token as a valid key, so no
    attention row is empty.
Block placement (`placement`): "ijepa" (default) is the official code's. Its
exclusive corner bound and its grid - 1 size cap mean no block ever covers the
last row or column, and a context block of the largest size has one possible
corner: on the paper's 14 x 14 grid the context is always the top-left 13 x 13
block (86% of the image, as the paper's scale 0.85-1.0 asks). On a small grid
that costs much more: on 4 x 4, 7 of the 16 tokens are never context nor
target, and the context is at most 3 x 3 (56%). "uniform" is the paper's
description instead (Sec. 3: blocks at random positions, the context a block
of scale 0.85-1.0 of the image): corners uniform over every position where the
block fits (top in [0, H - h]) and blocks up to the whole grid.

`blockwise`: the BEiT / iBOT block-wise masking as DINOv2 uses it
(facebookresearch/dinov2 `dinov2/data/masking.py::MaskingGenerator` and
`dinov2/data/collate.py::collate_data_and_cast`): int(B p) images of the batch
are masked, image i with a ratio drawn uniformly in the i-th of int(B p) equal
slices of `mask_ratio_range`, the rest not at all, then the order is shuffled.
Each masked image receives rectangles of random area (uniform in [4, remaining])
and log-uniform aspect ratio in [min_aspect, 1/min_aspect] until its target
count int(N r) is reached; a rectangle is accepted when it adds between 1 and
`remaining` new tokens. Deviation: a fixed number of proposals (`num_tries`)
per image instead of the official loop, which stops after 10 consecutive
rejected proposals; so this version can mask slightly more in crowded cases.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jssl.errors import ConfigError

LEVELS = 4096          # discrete levels of the block-size draw u (module doc)
CONTEXT_TRIES = 20     # ijepa multiblock.py: timeout = og_timeout = 20
PLACEMENTS = ("ijepa", "uniform")   # block placement (module doc)


class MultiBlock(NamedTuple):
  """Output of `multiblock`: padded token indices into the row-major patch
  grid (int32) and their validity (bool; False = padding)."""
  context: jax.Array          # [M_c, B, N_c]
  context_valid: jax.Array    # [M_c, B, N_c]
  targets: jax.Array          # [M_t, B, N_t]
  target_valid: jax.Array     # [M_t, B, N_t]


@functools.lru_cache(maxsize=64)
def block_size_table(grid_hw: tuple[int, int], scale: tuple[float, float],
                     aspect: tuple[float, float],
                     placement: str = "ijepa") -> tuple[np.ndarray, np.ndarray]:
  """(h, w) per level u_k = k / LEVELS, as `MaskCollator._sample_block_size`
  (capped at grid - 1; at the grid with `placement="uniform"`, module doc).

  Returns two int32 arrays `[LEVELS]` (heights, widths); entries may be 0 when
  the scale is too small for the grid (`check_multiblock` rejects that).
  """
  gh, gw = grid_hw
  cap = 0 if placement == "uniform" else 1
  hs, ws = np.zeros(LEVELS, np.int32), np.zeros(LEVELS, np.int32)
  for k in range(LEVELS):
    u = k / LEVELS
    s = scale[0] + u * (scale[1] - scale[0])
    max_keep = int(gh * gw * s)
    a = aspect[0] + u * (aspect[1] - aspect[0])
    h = int(round(math.sqrt(max_keep * a)))
    w = int(round(math.sqrt(max_keep / a)))
    hs[k], ws[k] = min(h, gh - cap), min(w, gw - cap)
  return hs, ws


def max_block_area(grid_hw, scale, aspect, placement: str = "ijepa") -> int:
  """The largest h*w the settings can draw: the static token count."""
  hs, ws = block_size_table(tuple(grid_hw), tuple(scale), tuple(aspect), placement)
  return int(np.max(hs * ws))


def _pair(value, field: str) -> tuple[float, float]:
  try:
    lo, hi = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ConfigError(f"{field}={value!r} must be a pair (low, high)") from None
  return lo, hi


def check_multiblock(grid_hw: Sequence[int], *, num_targets: int,
                     target_scale, target_aspect, num_context: int, context_scale,
                     context_aspect, min_keep: int, placement: str = "ijepa",
                     prefix: str = "masks") -> None:
  """Raises a one-line `ConfigError` naming `<prefix>.<field>` when the
  multi-block settings cannot fit the grid or leave no target / context."""
  gh, gw = (int(g) for g in grid_hw)
  n = gh * gw
  if placement not in PLACEMENTS:
    raise ConfigError(f"{prefix}.placement={placement!r} must be one of {list(PLACEMENTS)}")
  if gh < 2 or gw < 2:
    raise ConfigError(f"{prefix}: the patch grid {gh}x{gw} is too small for block masks "
                      "(a target and a context need 2 x 2 patches or more); use a smaller "
                      "model.patch_size")
  for name, v in (("num_targets", num_targets), ("num_context", num_context)):
    if int(v) < 1:
      raise ConfigError(f"{prefix}.{name}={v} must be >= 1")
  if int(min_keep) < 0:
    raise ConfigError(f"{prefix}.min_keep={min_keep} must be >= 0")
  areas = {}
  for kind, scale, aspect in (("target", target_scale, target_aspect),
                              ("context", context_scale, context_aspect)):
    s = _pair(scale, f"{prefix}.{kind}_scale")
    a = _pair(aspect, f"{prefix}.{kind}_aspect")
    if not 0.0 < s[0] <= s[1] <= 1.0:
      raise ConfigError(f"{prefix}.{kind}_scale={scale} must satisfy 0 < low <= high <= 1")
    if not 0.0 < a[0] <= a[1]:
      raise ConfigError(f"{prefix}.{kind}_aspect={aspect} must satisfy 0 < low <= high")
    hs, ws = block_size_table((gh, gw), s, a, placement)
    smallest = int(np.min(hs * ws))
    if smallest < 1:
      raise ConfigError(f"{prefix}.{kind}_scale={scale} gives {kind} blocks of 0 tokens on "
                        f"the {gh}x{gw} patch grid (raise it or use a smaller patch)")
    areas[kind] = smallest
  if areas["target"] <= int(min_keep):
    # The official collator re-draws a target block until it has > min_keep
    # tokens; a full block never gets bigger, so it would retry forever.
    raise ConfigError(f"{prefix}.min_keep={min_keep} must be below the smallest target block "
                      f"({areas['target']} tokens on the {gh}x{gw} grid)")
  if areas["context"] <= int(min_keep):
    raise ConfigError(f"{prefix}.context_scale={context_scale} gives context blocks of "
                      f"{areas['context']} tokens, not more than {prefix}.min_keep={min_keep}")
  if int(num_targets) * areas["target"] >= n:
    raise ConfigError(f"{prefix}.num_targets={num_targets} blocks of >= {areas['target']} "
                      f"tokens can cover the whole {gh}x{gw} grid, leaving no context")


def _blocks(tops, lefts, h, w, grid_hw):
  """bool [..., N]: the h x w blocks at (tops, lefts) `[...]` on the row-major grid."""
  gh, gw = grid_hw
  rows = jnp.arange(gh)
  cols = jnp.arange(gw)
  in_r = (rows >= tops[..., None]) & (rows < (tops + h)[..., None])       # [..., gh]
  in_c = (cols >= lefts[..., None]) & (cols < (lefts + w)[..., None])     # [..., gw]
  return (in_r[..., :, None] & in_c[..., None, :]).reshape(*tops.shape, gh * gw)


def _scaled(u, n):
  """floor(u * n): uniform over 0 .. n - 1 for u uniform in [0, 1)."""
  return jnp.floor(u * n).astype(jnp.int32)


def multiblock(key, batch: int, grid_hw: Sequence[int], *, num_targets: int = 4,
               target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5), num_context: int = 1,
               context_scale=(0.85, 1.0), context_aspect=(1.0, 1.0),
               min_keep: int = 10, placement: str = "ijepa") -> MultiBlock:
  """I-JEPA multi-block masks for a batch (module doc; defaults: the paper's
  ImageNet settings, ijepa `configs/in1k_vith14_ep300.yaml`).

  Args:
    key: PRNG key of this step (the only randomness: same key, same masks).
    batch: B. grid_hw: the patch grid (H/p, W/p).
    num_targets / num_context: M_t / M_c blocks per image.
    target_scale, target_aspect, context_scale, context_aspect: ranges of the
      block scale (fraction of the grid) and aspect ratio (h / w).
    min_keep: a context block must keep more than this many tokens.
    placement: "ijepa" (the official code's corners and size cap) or
      "uniform" (corners over every fitting position, blocks up to the grid);
      module doc.

  Returns:
    `MultiBlock` (context `[M_c, B, N_c]`, targets `[M_t, B, N_t]` + validity);
    shapes depend only on the arguments, never on the key. Targets never
    overlap the context of the same image, except in the fallback described in
    the module doc (no context candidate kept more than `min_keep` tokens).
  """
  grid_hw = (int(grid_hw[0]), int(grid_hw[1]))
  target_scale, target_aspect = tuple(target_scale), tuple(target_aspect)
  context_scale, context_aspect = tuple(context_scale), tuple(context_aspect)
  check_multiblock(grid_hw, num_targets=num_targets, target_scale=target_scale,
                   target_aspect=target_aspect, num_context=num_context,
                   context_scale=context_scale, context_aspect=context_aspect,
                   min_keep=min_keep, placement=placement)
  gh, gw = grid_hw
  t_hs, t_ws = block_size_table(grid_hw, target_scale, target_aspect, placement)
  c_hs, c_ws = block_size_table(grid_hw, context_scale, context_aspect, placement)
  th, tw, ch, cw = (jnp.asarray(t) for t in (t_hs, t_ws, c_hs, c_ws))
  n_t = int(np.max(t_hs * t_ws))
  # The context never overlaps a target (module doc), so it keeps at most
  # N - (the smallest target block) tokens: a shorter static length when the
  # context block can be the whole grid ("uniform"; 12 instead of 16 on 4 x 4).
  n_c = min(int(np.max(c_hs * c_ws)), gh * gw - int(np.min(t_hs * t_ws)))
  # Corner positions per axis: G - h (official, exclusive high) or G - h + 1.
  room = 1 if placement == "uniform" else 0
  b, m_t, m_c, tries = batch, num_targets, num_context, CONTEXT_TRIES
  # All the step's randomness in one draw (one threefry program to compile).
  sizes = (2, b * m_t * 2, b * m_c * tries * 2)
  u = jax.random.uniform(key, (sum(sizes),))
  u_size, u_t, u_c = jnp.split(u, [sizes[0], sizes[0] + sizes[1]])
  # One block size per batch (MaskCollator.__call__: p_size, then e_size).
  lp, le = _scaled(u_size[0], LEVELS), _scaled(u_size[1], LEVELS)
  h, w, eh, ew = th[lp], tw[lp], ch[le], cw[le]
  # Targets: corners [B, M_t]; slot s of a block is row s // w, column s % w
  # (raster order), valid for s < h * w.
  u_t = u_t.reshape(b, m_t, 2)
  tops, lefts = _scaled(u_t[..., 0], gh - h + room), _scaled(u_t[..., 1], gw - w + room)
  slots = jnp.arange(n_t)
  t_valid = jnp.broadcast_to(slots < h * w, (b, m_t, n_t))
  t_idx = (tops[..., None] + slots // w) * gw + lefts[..., None] + slots % w
  t_idx = jnp.where(t_valid, t_idx, 0).astype(jnp.int32)
  covered = jnp.any(_blocks(tops, lefts, h, w, grid_hw), axis=1)          # [B, N]
  # Context: `tries` candidate corners per block [B, M_c, R], targets removed;
  # the first with more than min_keep tokens, else the fullest.
  u_c = u_c.reshape(b, m_c, tries, 2)
  cand = _blocks(_scaled(u_c[..., 0], gh - eh + room), _scaled(u_c[..., 1], gw - ew + room),
                 eh, ew, grid_hw) & ~covered[:, None, None]                        # [B, M_c, R, N]
  counts = jnp.sum(cand, axis=-1)
  ok = counts > min_keep
  pick = jnp.where(jnp.any(ok, axis=-1), jnp.argmax(ok, axis=-1), jnp.argmax(counts, axis=-1))
  chosen = jnp.take_along_axis(cand, pick[..., None, None], axis=2)[:, :, 0]   # [B, M_c, N]
  count = jnp.take_along_axis(counts, pick[..., None], axis=2)                  # [B, M_c, 1]
  # Compact: kept tokens first, each group in raster order (stable sort).
  c_idx = jnp.argsort(~chosen, axis=-1, stable=True)[..., :n_c].astype(jnp.int32)
  c_valid = jnp.arange(n_c) < count
  c_idx = jnp.where(c_valid, c_idx, 0)
  mb = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731  [B, M, ...] -> [M, B, ...]
  return MultiBlock(mb(c_idx), mb(c_valid), mb(t_idx), mb(t_valid))


def check_blockwise(grid_hw: Sequence[int], *, mask_ratio_range, mask_probability: float,
                    min_aspect: float, prefix: str = "masks") -> None:
  """One-line `ConfigError`s naming `<prefix>.<field>` for `blockwise`."""
  lo, hi = _pair(mask_ratio_range, f"{prefix}.mask_ratio_range")
  if not 0.0 <= lo <= hi < 1.0:
    raise ConfigError(f"{prefix}.mask_ratio_range={mask_ratio_range} must satisfy "
                      "0 <= low <= high < 1")
  if not 0.0 <= float(mask_probability) <= 1.0:
    raise ConfigError(f"{prefix}.mask_probability={mask_probability} must be in [0, 1]")
  if not 0.0 < float(min_aspect) <= 1.0:
    raise ConfigError(f"{prefix}.min_aspect={min_aspect} must be in (0, 1]")
  gh, gw = (int(g) for g in grid_hw)
  if gh < 2 or gw < 2:
    raise ConfigError(f"{prefix}: the patch grid {gh}x{gw} is too small for block masks")


def blockwise(key, batch: int, grid_hw: Sequence[int], *, mask_ratio_range=(0.1, 0.5),
              mask_probability: float = 0.5, min_aspect: float = 0.3,
              max_aspect: float | None = None, min_num_patches: int = 4,
              max_num_patches: int | None = None, num_tries: int = 64) -> jax.Array:
  """iBOT / BEiT block-wise masks as in DINOv2's collate (module doc).

  Args:
    key: PRNG key; batch: B; grid_hw: patch grid (H/p, W/p).
    mask_ratio_range: ratios of the masked images are linearly spread over it
      (DINOv2 `mask_ratio_min_max` (0.1, 0.5)).
    mask_probability: share of images masked at all (DINOv2 0.5).
    min_aspect / max_aspect: rectangle aspect ratio range (0.3, 1 / 0.3).
    min_num_patches / max_num_patches: rectangle area range (4, 0.5 N: DINOv2
      `max_num_patches=0.5 * N`).
    num_tries: rectangle proposals per image (module doc).

  Returns:
    bool `[B, N]`, True = masked, row-major over the grid.
  """
  grid_hw = (int(grid_hw[0]), int(grid_hw[1]))
  check_blockwise(grid_hw, mask_ratio_range=mask_ratio_range,
                  mask_probability=mask_probability, min_aspect=min_aspect)
  gh, gw = grid_hw
  n = gh * gw
  max_aspect = max_aspect or 1.0 / min_aspect
  log_ar = (math.log(min_aspect), math.log(max_aspect))
  max_patches = 0.5 * n if max_num_patches is None else max_num_patches
  n_masked = int(batch * mask_probability)
  edges = np.linspace(mask_ratio_range[0], mask_ratio_range[1], n_masked + 1)
  # All the randomness in one draw: ratios, the shuffle, 4 per proposal.
  sizes = (n_masked, batch, batch * num_tries * 4)
  u = jax.random.uniform(key, (sum(sizes),))
  u_ratio, u_perm, u_prop = jnp.split(u, [sizes[0], sizes[0] + sizes[1]])
  ratios = (jnp.asarray(edges[:-1], jnp.float32)
            + u_ratio * jnp.asarray(np.diff(edges), jnp.float32))
  counts = jnp.concatenate([jnp.floor(n * ratios).astype(jnp.int32),
                            jnp.zeros((batch - n_masked,), jnp.int32)])
  counts = counts[jnp.argsort(u_perm)]              # random.shuffle(masks_list)
  u_prop = u_prop.reshape(num_tries, batch, 4)

  def body(i, carry):
    mask, count = carry                                   # [B, N], [B]
    ua, ur, ut, ul = (u_prop[i, :, j] for j in range(4))
    limit = jnp.minimum(counts - count, max_patches).astype(jnp.float32)
    area = min_num_patches + ua * (limit - min_num_patches)
    ar = jnp.exp(log_ar[0] + ur * (log_ar[1] - log_ar[0]))
    h = jnp.round(jnp.sqrt(area * ar)).astype(jnp.int32)
    w = jnp.round(jnp.sqrt(area / ar)).astype(jnp.int32)
    fits = (w < gw) & (h < gh)
    # random.randint(0, H - h): both ends inclusive.
    top = _scaled(ut, jnp.maximum(gh - h + 1, 1))
    left = _scaled(ul, jnp.maximum(gw - w + 1, 1))
    block = _blocks(top, left, h, w, grid_hw)
    new = jnp.sum(block & ~mask, axis=-1)
    accept = (count < counts) & fits & (new > 0) & (new <= limit)
    return mask | (block & accept[:, None]), count + jnp.where(accept, new, 0)

  mask, _ = jax.lax.fori_loop(0, num_tries, body, (jnp.zeros((batch, n), bool),
                                                   jnp.zeros((batch,), jnp.int32)))
  return mask
