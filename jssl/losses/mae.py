"""MAE pixel reconstruction loss on the masked patches."""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from jssl.losses import _common as C


def mae(pred, target, mask, *, norm_pix_loss: bool = False, eps: float = 1e-6,
        axis_name: Optional[str] = None):
  """MAE mean squared error over the masked (removed) patches only.

  ::

    t = target                          or, with norm_pix_loss,
    t = (target - mean_P) / sqrt(var_P + eps)     per patch, var UNBIASED (torch .var())
    e_bn = mean_P (pred_bn - t_bn)^2
    L = sum_{b,n} mask_bn e_bn / sum_{b,n} mask_bn        mask 1 = removed patch

  Args:
    pred: [B, N, P] decoder predictions (P = p*p*C pixels per patch).
    target: [B, N, P] patchified images (see `jssl.patches.patchify`).
    mask: [B, N] 1/True where the patch was masked (the loss is only there).
    norm_pix_loss: per-patch normalised targets (paper Sec. 4 / Table 1, default False
      in main_pretrain.py, True in the recipe).
    eps: variance epsilon (1e-6).
    axis_name: mesh axis inside `shard_map` (global sums).

  Returns:
    Scalar loss.

  Reference: He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners",
  Sec. 3; facebookresearch/mae models_mae.py::forward_loss.

  Example:
    >>> x = jnp.ones((1, 4, 3))
    >>> float(mae(x, x, jnp.ones((1, 4))))
    0.0
  """
  C.check_same("pred", pred, "target", target, 3, "[B, N, P]")
  if tuple(mask.shape) != pred.shape[:2]:
    raise ValueError(f"mask must have shape [B, N] = {pred.shape[:2]}, got mask: "
                     f"{tuple(mask.shape)} for pred: {pred.shape}")
  x, t = C.upcast(pred, target)
  m = jnp.asarray(mask, x.dtype)
  if norm_pix_loss:
    mu = jnp.mean(t, axis=-1, keepdims=True)
    var = jnp.var(t, axis=-1, keepdims=True, ddof=1)
    t = (t - mu) / jnp.sqrt(var + eps)
  err = jnp.mean((x - t) ** 2, axis=-1)
  # max(., tiny): a batch with no masked patch gives 0, not 0/0 = NaN.
  denom = jnp.maximum(C.psum(jnp.sum(m), axis_name), jnp.finfo(x.dtype).tiny)
  return C.psum(jnp.sum(err * m), axis_name) / denom
