"""MMCR: maximum manifold capacity representations (Yerxa, Kuang, Simoncelli, Chung 2023,
"Learning Efficient Coding of Natural Images with Maximum Manifold Capacity
Representations", NeurIPS; Sec. 3, eq. 3-4).

Each image b gives a small "manifold" of views; the centroid c_b is the mean of its view
embeddings. The loss maximises the nuclear norm (sum of singular values) of the centroid
matrix C = (c_1 .. c_B), which spreads the centroids over many orthogonal directions, and
optionally (lambda > 0) penalises the nuclear norm of each image's own view matrix, which
compresses the manifolds:

  L = -||C||_* + lambda * (1/B) * sum_b ||Z_b||_*

Two conventions are shipped, equal for lambda = 0 on unit-norm inputs:

* `mmcr`: lightly `lightly/loss/mmcr_loss.py` (`MMCRLoss(lmda)`): inputs are NOT
  normalised; Z_b stacks the online AND momentum views of image b.
* `mmcr_official`: ThomasYerxa/mmcr `mmcr/imagenet/loss_mmcr_momentum.py`
  (`MMCR_Momentum_Loss`) and, without momentum outputs, `mmcr/cifar_stl/loss_mmcr.py`
  (`MMCR_Loss`): rows L2-normalised inside, rows sample-major (b * N + n), centroids
  averaged over the online and the momentum views, local term over the online views only.

Nuclear norms come from `jnp.linalg.svd(compute_uv=False)`; its gradient is U V^T, well
defined when the singular values are distinct and non-zero (generic inputs).
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from jssl.losses import _common as C


class MMCRTerms(NamedTuple):
  """The two nuclear norms: `global_nuc` = ||C||_* of the centroids, `local_nuc` =
  sum_b ||Z_b||_* of the per-image view matrices (a sum over images, not a mean)."""
  global_nuc: jnp.ndarray
  local_nuc: jnp.ndarray


def nuclear_norm(x):
  """Sum of the singular values of the trailing two axes: `[..., m, n] -> [...]`."""
  return jnp.sum(jnp.linalg.svd(x, compute_uv=False), axis=-1)


def mmcr(online, momentum, *, lmda: float = 5e-3):
  """MMCR in lightly's convention; returns `(loss, MMCRTerms)`.

  ::

    Z_b = [online_b ; momentum_b]              (2k, D): the views of image b, raw
    c_b = mean of the 2k rows of Z_b            C = (c_1 .. c_B)  (B, D)
    L   = -||C||_* + lmda * (1/B) * sum_b ||Z_b||_*

  No normalisation happens here (lightly leaves it to the caller); feed unit rows to
  match `mmcr_official`. Nothing is stop-gradient: the momentum outputs are constants
  only when the caller computes them without gradient.

  Args:
    online, momentum: `[B, k, D]` k views of B images from the online and the
      momentum network (the same k for both).
    lmda: weight of the local (manifold compression) term; lightly's default 5e-3.

  Returns:
    (loss, MMCRTerms(global_nuc, local_nuc)), scalars.

  Reference: Yerxa et al. 2023 eq. 3-4; lightly `MMCRLoss.forward`.

  Example:
    >>> z = jax.random.normal(jax.random.key(0), (8, 2, 16))
    >>> loss, terms = mmcr(z, z, lmda=0.0)
    >>> bool(loss == -terms.global_nuc)
    True
  """
  C.check_same("online", online, "momentum", momentum, 3, "[B, k, D]")
  a, b = C.upcast(online, momentum)
  z = jnp.concatenate([a, b], axis=1)               # (B, 2k, D)
  global_nuc = nuclear_norm(jnp.mean(z, axis=1))
  local_nuc = jnp.sum(nuclear_norm(z))
  loss = -global_nuc + lmda * local_nuc / z.shape[0]
  return loss, MMCRTerms(global_nuc, local_nuc)


def mmcr_official(z, z_m=None, *, num_views: int, lmbda: float = 0.0):
  """MMCR as the official code computes it; returns `(loss, MMCRTerms)`.

  ::

    u = z / ||z||, u_m = z_m / ||z_m||            per row (F.normalize, eps 1e-12)
    rows b * N + n hold view n of image b           (einops '(B N) C -> B C N')
    c_b = 0.5 * (mean_n u_{b,n} + mean_n u_m{b,n})  C = (c_1 .. c_B)
    L   = -||C||_* + lmbda * (1/B) * sum_b ||U_b||_*      U_b: the N ONLINE views of b

  With `z_m=None` this is the momentum-free `MMCR_Loss` (c_b = mean_n u_{b,n}), which
  equals `mmcr_official(z, z)`. As the official code, `local_nuc` is 0 (and its B SVDs
  are skipped) when `lmbda == 0`.

  Args:
    z: `[B * N, C]` online projections, rows sample-major.
    z_m: `[B * N, C]` momentum projections (same layout), or None.
    num_views: N, the views per image (`n_aug`).
    lmbda: weight of the local term; the official runs use 0.

  Returns:
    (loss, MMCRTerms(global_nuc, local_nuc)), scalars.

  Deviation: the official momentum loss drops centroid rows that are not finite before
  the SVD (a data-dependent shape); here a non-finite row makes the loss non-finite.

  Reference: Yerxa et al. 2023 Sec. 3; ThomasYerxa/mmcr
  `mmcr/imagenet/loss_mmcr_momentum.py` (`MMCR_Momentum_Loss`, distributed=False),
  `mmcr/cifar_stl/loss_mmcr.py` (`MMCR_Loss`).

  Example:
    >>> z = jax.random.normal(jax.random.key(0), (16, 8))
    >>> loss, terms = mmcr_official(z, num_views=2)
    >>> float(terms.local_nuc)
    0.0
  """
  C.check_rank("z", z, 2, "[B * N, C]")
  if z_m is not None:
    C.check_same("z", z, "z_m", z_m, 2, "[B * N, C]")
  n = int(num_views)
  if n < 1 or z.shape[0] % n:
    raise ValueError(f"z has {z.shape[0]} rows, not a multiple of num_views={num_views}")
  u = C.l2_normalize(C.upcast(z)).reshape(-1, n, z.shape[1])      # (B, N, C)
  centroids = jnp.mean(u, axis=1)
  if z_m is not None:
    u_m = C.l2_normalize(C.upcast(z_m)).reshape(u.shape)
    centroids = 0.5 * (centroids + jnp.mean(u_m, axis=1))
  global_nuc = nuclear_norm(centroids)
  if lmbda == 0:
    local_nuc = jnp.zeros((), global_nuc.dtype)
  else:
    local_nuc = jnp.sum(nuclear_norm(u))  # singular values of (N, C) = of (C, N)
  loss = -global_nuc + lmbda * local_nuc / u.shape[0]
  return loss, MMCRTerms(global_nuc, local_nuc)


__all__ = ["MMCRTerms", "mmcr", "mmcr_official", "nuclear_norm"]

