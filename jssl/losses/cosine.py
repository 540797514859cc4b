"""Cosine-similarity losses of the non-contrastive family: BYOL, SimSiam, negative cosine."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C


def _cosine(x, y, eps):
  """x.y / (max(||x||, eps) max(||y||, eps)) per row (torch cosine_similarity guard)."""
  nx = jnp.sqrt(jnp.maximum(jnp.sum(x * x, -1), eps * eps))
  ny = jnp.sqrt(jnp.maximum(jnp.sum(y * y, -1), eps * eps))
  return jnp.sum(x * y, -1) / (nx * ny)


def _mean(x, axis_name):
  return C.psum(jnp.sum(x), axis_name) / C.psum(x.shape[0], axis_name)


def negative_cosine(x0, x1, *, eps: float = 1e-8, axis_name: Optional[str] = None):
  """Negative cosine similarity, L = -mean_i cos(x0_i, x1_i); no stop-gradient inside.

  Args:
    x0, x1: [B, D] paired rows.
    eps: norm guard, cos = x.y / (max(||x||, eps) max(||y||, eps)).
    axis_name: mesh axis inside `shard_map` (global mean).

  Returns:
    Scalar in [-1, 1].

  Reference: lightly loss/negative_cosine_similarity.py (torch cosine_similarity).

  Example:
    >>> float(negative_cosine(jnp.ones((2, 3)), jnp.ones((2, 3))))
    -1.0
  """
  C.check_same("x0", x0, "x1", x1, 2, "[B, D]")
  a, b = C.upcast(x0, x1)
  return -_mean(_cosine(a, b, eps), axis_name)


def simsiam(p1, p2, z1, z2, *, eps: float = 1e-8, axis_name: Optional[str] = None):
  """SimSiam symmetric negative cosine with the stop-gradient on the projections.

  ::

    L = 0.5 * D(p1, sg(z2)) + 0.5 * D(p2, sg(z1)),   D(p, z) = -mean_i cos(p_i, z_i)

  Directions are AVERAGED (range [-1, 1]), unlike BYOL which sums them.

  Args:
    p1, p2: [B, D] predictor outputs of views 1 and 2 (get gradients).
    z1, z2: [B, D] projector outputs of views 1 and 2 (stop-gradient inside).
    eps: cosine norm guard (torch default 1e-8).
    axis_name: mesh axis inside `shard_map`.

  Returns:
    Scalar loss.

  Reference: Chen & He 2021, "Exploring Simple Siamese Representation Learning",
  Algorithm 1 / eq. 3-4; facebookresearch/simsiam simsiam/builder.py (z.detach()),
  main_simsiam.py.

  Example:
    >>> x = jnp.ones((2, 3))
    >>> float(simsiam(x, x, x, x))
    -1.0
  """
  for n, a in (("p2", p2), ("z1", z1), ("z2", z2)):
    C.check_same("p1", p1, n, a, 2, "[B, D]")
  p1, p2, z1, z2 = C.upcast(p1, p2, z1, z2)
  # The stop-gradient on z is what prevents collapse in SimSiam (paper Sec. 4.1).
  z1, z2 = jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2)
  return -0.5 * (_mean(_cosine(p1, z2, eps), axis_name) + _mean(_cosine(p2, z1, eps), axis_name))


def byol_regression(p, z, *, axis_name: Optional[str] = None):
  """One BYOL direction, mean_i ||n(p_i) - n(z_i)||^2 = mean_i (2 - 2 cos(p_i, z_i)).

  No stop-gradient here (see `byol`). Normalisation x * rsqrt(max(sum x^2, 1e-12)) as
  in deepmind-research byol/utils/helpers.py::l2_normalize.

  Args:
    p: [B, D] online predictions.
    z: [B, D] targets.
    axis_name: mesh axis inside `shard_map`.

  Returns:
    Scalar in [0, 4].
  """
  C.check_same("p", p, "z", z, 2, "[B, D]")
  p, z = C.upcast(p, z)
  pn = p * jax.lax.rsqrt(jnp.maximum(jnp.sum(p * p, -1, keepdims=True), 1e-12))
  zn = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, -1, keepdims=True), 1e-12))
  return _mean(jnp.sum((pn - zn) ** 2, -1), axis_name)


def byol(p1, p2, z1, z2, *, axis_name: Optional[str] = None):
  """BYOL symmetric regression loss, directions SUMMED (range [0, 8]).

  ::

    L = mean_i [ ||n(p1_i) - n(sg z2_i)||^2 + ||n(p2_i) - n(sg z1_i)||^2 ]
      = mean_i [ (2 - 2cos(p1_i, z2_i)) + (2 - 2cos(p2_i, z1_i)) ]

  Args:
    p1, p2: [B, D] online predictor outputs of views 1 and 2 (get gradients).
    z1, z2: [B, D] target-network projections of views 1 and 2 (stop-gradient inside:
      the target is an EMA, never trained by this loss).
    axis_name: mesh axis inside `shard_map`.

  Returns:
    Scalar loss.

  Reference: Grill et al. 2020, "Bootstrap Your Own Latent", eq. 2 and the
  symmetrised L^BYOL; google-deepmind/deepmind-research byol/utils/helpers.py
  (regression_loss) and byol/byol_experiment.py.

  Example:
    >>> x = jnp.ones((2, 3))
    >>> float(byol(x, x, x, x))
    0.0
  """
  for n, a in (("p2", p2), ("z1", z1), ("z2", z2)):
    C.check_same("p1", p1, n, a, 2, "[B, D]")
  # Targets come from the EMA network: stop-gradient (BYOL eq. 2, sg(z')).
  z1, z2 = jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2)
  return (byol_regression(p1, z2, axis_name=axis_name)
          + byol_regression(p2, z1, axis_name=axis_name))
