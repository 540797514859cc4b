"""I-JEPA's latent regression loss on the predicted target-block tokens."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C


def _layer_norm(x, eps):
  """F.layer_norm over the last axis, no affine, biased variance."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def ijepa(pred, target_tokens, masks_pred, num_context: int = 1,
          valid: Optional[jax.Array] = None, *, beta: float = 1.0, eps: float = 1e-5):
  """Smooth-L1 between predictions and layer-normed target-encoder tokens.

  ::

    h = layer_norm(sg target_tokens) over D      (no affine, biased var, eps 1e-5)
    H = cat_i gather(h, masks_pred[i])                  [M_p*B, P, D], mask-major
    H = each block of B rows repeated M_c times        [M_p*M_c*B, P, D]
    L = mean over rows x P x D of smoothL1_beta(pred - H)
        (0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta)

  With `valid` (padded target lists, `jssl.masks.multiblock`) the mean runs
  over the valid tokens only: sum over valid elements / (#valid tokens x D),
  which is the plain mean when every token is valid.

  Args:
    pred: [M_p*M_c*B, P, D] predictor outputs, row i*M_c*B + j*B + b for
      target mask i, context mask j, image b (ijepa's predictor order).
    target_tokens: [B, N, D] target-encoder outputs (stop-gradient inside).
    masks_pred: [M_p, B, P] int patch indices of the target blocks.
    num_context: M_c, context masks per image.
    valid: optional [M_p, B, P] bool, False = padding slot.
    beta: smooth-L1 threshold (1.0: `F.smooth_l1_loss` default).
    eps: layer-norm epsilon (1e-5: `F.layer_norm` default).

  Returns:
    (loss, aux) with aux = {'targets': H, 'loss_mse': masked mean of (pred - H)^2}.

  Reference: Assran et al. 2023, "Self-Supervised Learning from Images with a
  Joint-Embedding Predictive Architecture", Sec. 3 (eq. 1: the average L2
  distance; the released code uses smooth-L1); facebookresearch/ijepa
  src/train.py::forward_target / loss_fn and src/utils/tensors.py
  (apply_masks, repeat_interleave_batch).

  Example:
    >>> t = jnp.ones((2, 4, 8))
    >>> m = jnp.zeros((1, 2, 3), jnp.int32)
    >>> float(ijepa(jnp.zeros((2, 3, 8)), t, m)[0])
    0.0
  """
  C.check_rank("pred", pred, 3, "[M_p*M_c*B, P, D]")
  C.check_rank("target_tokens", target_tokens, 3, "[B, N, D]")
  if masks_pred.ndim != 3:
    raise ValueError(f"masks_pred must have shape [M_p, B, P], got {masks_pred.shape}")
  m_p, b, p = masks_pred.shape
  d = target_tokens.shape[-1]
  if target_tokens.shape[0] != b:
    raise ValueError(f"masks_pred {masks_pred.shape} and target_tokens {target_tokens.shape} "
                     "disagree on B")
  if pred.shape != (m_p * num_context * b, p, d):
    raise ValueError(f"pred must have shape [M_p*M_c*B, P, D] = "
                     f"{(m_p * num_context * b, p, d)}, got {pred.shape}")
  h = _layer_norm(jax.lax.stop_gradient(target_tokens), eps)
  # [M_p, B, P, D]: gather each mask's tokens from its image.
  gathered = jax.vmap(lambda idx: jnp.take_along_axis(h, idx[..., None].astype(jnp.int32),
                                                      axis=1))(masks_pred)
  tgt = jnp.broadcast_to(gathered[:, None], (m_p, num_context, b, p, d)).reshape(pred.shape)
  diff = pred - tgt
  ad = jnp.abs(diff)
  sl1 = jnp.where(ad < beta, 0.5 * jnp.square(diff) / beta, ad - 0.5 * beta)
  sq = jnp.square(diff)
  if valid is None:
    return jnp.mean(sl1), {"targets": tgt, "loss_mse": jnp.mean(sq)}
  if valid.shape != masks_pred.shape:
    raise ValueError(f"valid must have masks_pred's shape {masks_pred.shape}, got {valid.shape}")
  w = jnp.broadcast_to(valid[:, None], (m_p, num_context, b, p)).reshape(pred.shape[:2])
  w = w.astype(pred.dtype)[..., None]
  denom = jnp.maximum(jnp.sum(w), 1.0) * d
  return (jnp.sum(sl1 * w) / denom,
          {"targets": tgt, "loss_mse": jnp.sum(sq * w) / denom})
