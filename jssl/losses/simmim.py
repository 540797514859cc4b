"""SimMIM's masked-pixel L1 regression loss."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C


def simmim(pred, target, mask, *, channels: int = 3, eps: float = 1e-5,
           axis_name: Optional[str] = None):
  """Mean absolute error over the pixels of the masked patches only.

  ::

    L = sum_{b,n} mask_bn sum_P |pred_bnP - target_bnP|
        / (sum_{b,n} mask_bn * P / C + eps) / C                 mask 1 = masked patch

  i.e. the L1 error averaged over every channel of every masked pixel, with
  the official code's `+ 1e-5` in the pixel count: microsoft/SimMIM
  `models/simmim.py` (`SimMIM.forward`: `(l1 * mask).sum() / (mask.sum() +
  1e-5) / in_chans`, `mask` the per-pixel [B, 1, H, W] mask, so mask.sum() is
  the number of masked pixels, P / C per patch).

  Args:
    pred: [B, N, P] predicted pixels (P = p*p*C per patch).
    target: [B, N, P] patchified (normalised) images (`jssl.patches.patchify`).
    mask: [B, N] 1/True where the patch was masked.
    channels: C (3 for RGB), P must be a multiple of it.
    eps: added to the masked-pixel count (1e-5, official).
    axis_name: mesh axis inside `shard_map` (global sums).

  Returns:
    Scalar loss.

  Reference: Xie et al. 2022, "SimMIM: A Simple Framework for Masked Image
  Modeling", CVPR, Sec. 3.3 (prediction target / l1 loss, eq. 1).

  Example:
    >>> x = jnp.ones((1, 4, 3))
    >>> float(simmim(x, x, jnp.ones((1, 4))))
    0.0
  """
  C.check_rank("pred", pred, 3, "[B, N, P]")
  C.check_rank("target", target, 3, "[B, N, P]")
  if pred.shape != target.shape:
    raise ValueError(f"pred and target must have the same shape, got {pred.shape} and "
                     f"{target.shape}")
  if mask.shape != pred.shape[:2]:
    raise ValueError(f"mask must be [B, N] = {pred.shape[:2]}, got {mask.shape}")
  p = pred.shape[-1]
  if p % channels:
    raise ValueError(f"P = {p} values per patch is not a multiple of channels={channels}")
  m = mask.astype(jnp.float32)
  err = jnp.sum(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=-1)
  num = jnp.sum(m * err)
  masked_pixels = jnp.sum(m) * (p // channels)
  if axis_name is not None:
    num = jax.lax.psum(num, axis_name)
    masked_pixels = jax.lax.psum(masked_pixels, axis_name)
  return num / (masked_pixels + eps) / channels
