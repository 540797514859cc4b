"""W-MSE: whitening MSE (Ermolov, Siarohin, Sangineto, Sebe 2021, "Whitening for
Self-Supervised Representation Learning", ICML; Sec. 3-4, eq. 4-7).

The embeddings of each view are whitened (zero mean, identity covariance) with a
Cholesky whitener estimated on the batch, then the views of one image are pulled
together with the MSE of the L2-normalised whitened vectors. Whitening scatters the
batch over the sphere, so the positives-only MSE cannot collapse (no negatives needed).

Reference: htdt/self-supervised `methods/w_mse.py` (`WMSE.forward`),
`methods/whitening.py` (`Whitening2d`, track_running_stats=False) and
`methods/norm_mse.py` (`norm_mse_loss`); equal to lightly `WMSELoss` at w_size = bs.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C


def whiten(x, *, eps: float = 0.0):
  """Cholesky whitening of the rows of `x` `[n, D]` with their own statistics.

  ::

    Xc = x - mean ;  S = Xc^T Xc / (n - 1) ;  S' = (1 - eps) S + eps I
    L L^T = S'  (Cholesky, lower) ;  W = Xc L^{-T}

  The result has covariance exactly I (for eps = 0). This is NOT ZCA (S^{-1/2}): the two
  differ by a rotation, which changes the W-MSE loss (each view gets its own rotation).
  Gradients go through the Cholesky factor and the triangular solve. `x` needs n > D
  rows of full rank (W-MSE / lightly ask for n >= 2D).

  Reference: htdt/self-supervised `methods/whitening.py` `Whitening2d.forward`.
  """
  n, d = x.shape
  xc = x - jnp.mean(x, axis=0, keepdims=True)
  cov = xc.T @ xc / (n - 1)
  eye = jnp.eye(d, dtype=x.dtype)
  chol = jnp.linalg.cholesky((1.0 - eps) * cov + eps * eye)
  # W^T = L^{-1} Xc^T.
  return jax.scipy.linalg.solve_triangular(chol, xc.T, lower=True).T


def _norm_mse(a, b):
  """2 - 2 * mean_b cos(a_b, b_b) (htdt `norm_mse_loss`, F.normalize eps 1e-12)."""
  return 2.0 - 2.0 * jnp.mean(jnp.sum(C.l2_normalize(a) * C.l2_normalize(b), axis=-1))


def wmse(x, num_views: int, *, eps: float = 0.0, w_iter: int = 1,
         w_size: Optional[int] = None, key: Optional[jax.Array] = None):
  """W-MSE over V views; returns `(loss, whitened)`.

  ::

    rows v * bs + b (view-major) hold view v of image b; per iteration t:
      split the bs images into bs / w_size sub-batches (a random permutation from
      `key`, the same for every view; contiguous rows when w_size == bs)
      W_v[sub] = whiten(X_v[sub])                  per view and per sub-batch
      l_t = sum_{i<j} [2 - 2 * mean_b cos(W_i[b], W_j[b])]
    L = sum_t l_t / (w_iter * V (V - 1) / 2)

  Args:
    x: `[V * bs, D]` embeddings, view-major.
    num_views: V >= 2.
    eps: shrinkage of the covariance towards I (official `w_eps`, 0).
    w_iter: whitening iterations, each with a new random split (official `w_iter`).
    w_size: sub-batch size (official `w_size`; None: the whole batch). Must divide bs.
    key: PRNG key of the random splits; required when w_size < bs (each of the
      `w_iter` iterations draws its own permutation).

  Returns:
    (loss, whitened): the scalar loss and the whitened embeddings `[V * bs, D]` of
    the last iteration, in the input row order.

  Reference: Ermolov et al. 2021 eq. 4-7; htdt/self-supervised `methods/w_mse.py`,
  `methods/whitening.py`; lightly `WMSELoss`.

  Example:
    >>> z = jax.random.normal(jax.random.key(0), (32, 4))
    >>> loss, w = wmse(z, 2)
    >>> w.shape
    (32, 4)
  """
  C.check_rank("x", x, 2, "[V * bs, D]")
  v = int(num_views)
  if v < 2 or x.shape[0] % v:
    raise ValueError(f"wmse needs num_views >= 2 dividing the rows of x; got "
                     f"num_views={num_views} and x of shape {tuple(x.shape)}")
  bs, d = x.shape[0] // v, x.shape[1]
  w = bs if w_size is None else int(w_size)
  if w < 2 or bs % w:
    raise ValueError(f"wmse: w_size={w_size} must be >= 2 and divide the per-view batch "
                     f"{bs}")
  if w <= d:
    raise ValueError(f"wmse: w_size={w} must exceed the embedding dimension {d} (the "
                     "covariance is singular otherwise; W-MSE uses w_size >= 2 D)")
  if int(w_iter) < 1:
    raise ValueError(f"wmse: w_iter={w_iter} must be >= 1")
  if w < bs and key is None:
    raise ValueError("wmse: w_size < batch splits the batch at random; pass key")
  xs = C.upcast(x).reshape(v, bs, d)
  keys = jax.random.split(key, int(w_iter)) if w < bs else [None] * int(w_iter)
  white_all = jax.vmap(jax.vmap(lambda s: whiten(s, eps=eps)))  # over views, sub-batches

  total, white = 0.0, None
  for k in keys:
    if k is None:
      white = white_all(xs.reshape(v, 1, bs, d)).reshape(v, bs, d)
    else:
      perm = jax.random.permutation(k, bs)
      sub = xs[:, perm].reshape(v, bs // w, w, d)
      white = white_all(sub).reshape(v, bs, d)[:, jnp.argsort(perm)]
    for i in range(v - 1):
      for j in range(i + 1, v):
        total = total + _norm_mse(white[i], white[j])
  loss = total / (int(w_iter) * v * (v - 1) // 2)
  return loss, white.reshape(v * bs, d)


__all__ = ["whiten", "wmse"]
