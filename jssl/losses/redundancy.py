"""Redundancy-reduction losses: Barlow Twins and VICReg.

Both need batch statistics; under `shard_map` pass `axis_name` and the statistics
are psum-reduced over the global batch (SyncBatchNorm / gathered-batch semantics of
the official code), so the numbers equal one device holding the whole batch.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax.numpy as jnp

from jssl.losses import _common as C


def _global_mean(x, axis_name):
  """Mean over the (global) batch axis 0, keepdims."""
  return C.psum(jnp.sum(x, 0, keepdims=True), axis_name) / C.psum(x.shape[0], axis_name)


def _off_diag_sq_sum(c):
  return jnp.sum(c * c) - jnp.sum(jnp.diagonal(c) ** 2)


def barlow_twins(z_a, z_b, *, lambda_param: float = 0.0051, eps: float = 1e-5,
                 scale: float = 1.0, axis_name: Optional[str] = None):
  """Barlow Twins redundancy reduction on the cross-correlation of standardised views.

  ::

    zh = (z - mean_b z) / sqrt(var_b z + eps)         per view, biased var (BatchNorm1d,
                                                      affine=False, train mode)
    c_ij = (1/B) sum_b zh^a_{b,i} zh^b_{b,j}           [D, D]
    L = scale * ( sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2 )   (sums, not means)

  lambda: the official current main.py uses 0.0051 (the default here); lightly
  `BarlowTwinsLoss` uses 5e-3; the first official release used 3.9e-3 with
  scale = 1/32 (`--scale-loss`). Pass `lambda_param=5e-3` to match lightly. The loss
  grows with D (D and D^2 terms).

  Args:
    z_a, z_b: [B, D] projector outputs of the two views.
    lambda_param: weight of the off-diagonal (redundancy) term.
    eps: BatchNorm epsilon inside the sqrt.
    scale: overall factor (1/32 reproduces the first official release).
    axis_name: mesh axis inside `shard_map`: global mean/var (SyncBatchNorm) and c
      divided by the global batch then all-reduced, as the official code.

  Returns:
    Scalar loss.

  Reference: Zbontar et al. 2021, "Barlow Twins", eq. 1-2; facebookresearch/barlowtwins
  main.py (BarlowTwins.forward).

  Example:
    >>> z = jax.random.normal(jax.random.key(0), (8, 4))
    >>> barlow_twins(z, z).shape
    ()
  """
  C.check_same("z_a", z_a, "z_b", z_b, 2, "[B, D]")
  a, b = C.upcast(z_a, z_b)
  n = C.psum(a.shape[0], axis_name)

  def standardise(z):
    mu = _global_mean(z, axis_name)
    var = _global_mean((z - mu) ** 2, axis_name)
    return (z - mu) / jnp.sqrt(var + eps)

  c = C.psum(standardise(a).T @ standardise(b), axis_name) / n
  on = jnp.sum((1.0 - jnp.diagonal(c)) ** 2)
  return scale * (on + lambda_param * _off_diag_sq_sum(c))


class VICRegTerms(NamedTuple):
  """Unweighted VICReg terms: invariance (MSE), variance (branch-averaged), covariance
  (branch-summed)."""
  invariance: jnp.ndarray
  variance: jnp.ndarray
  covariance: jnp.ndarray


def vicreg(z_a, z_b, *, sim_coeff: float = 25.0, std_coeff: float = 25.0,
           cov_coeff: float = 1.0, eps: float = 1e-4, axis_name: Optional[str] = None):
  """VICReg: invariance + variance + covariance; returns (loss, VICRegTerms).

  ::

    inv  = (1/(B D)) sum_{b,d} (a_bd - b_bd)^2                     elementwise MSE
    v(Z) = (1/D) sum_d relu(1 - sqrt(Var_d(Z) + eps))              Var UNBIASED (1/(B-1))
    c(Z) = (1/D) sum_{i != j} Cov(Z)_ij^2,  Cov = (Z - mean)^T (Z - mean) / (B - 1)
    var  = 0.5 (v(A) + v(B))          (averaged over the branches)
    cov  = c(A) + c(B)                (SUMMED over the branches)
    L = sim_coeff * inv + std_coeff * var + cov_coeff * cov          (25 / 25 / 1)

  Args:
    z_a, z_b: [B, D] expander outputs of the two views.
    sim_coeff, std_coeff, cov_coeff: lambda, mu, nu of the paper (25, 25, 1).
    eps: added to the variance inside the sqrt (1e-4).
    axis_name: mesh axis inside `shard_map`: variance and covariance over the
      global (gathered) batch as in the official code; the MSE averaged globally.

  Returns:
    (loss, VICRegTerms(invariance, variance, covariance)), all scalars.

  Reference: Bardes et al. 2022, "VICReg", eq. 1-6; facebookresearch/vicreg
  main_vicreg.py (VICReg.forward).

  Example:
    >>> z = jax.random.normal(jax.random.key(0), (8, 4))
    >>> loss, terms = vicreg(z, z)
    >>> float(terms.invariance)
    0.0
  """
  C.check_same("z_a", z_a, "z_b", z_b, 2, "[B, D]")
  a, b = C.upcast(z_a, z_b)
  n = C.psum(a.shape[0], axis_name)
  d = a.shape[1]
  inv = C.psum(jnp.sum((a - b) ** 2), axis_name) / (n * d)

  def var_cov(z):
    zc = z - _global_mean(z, axis_name)
    cov = C.psum(zc.T @ zc, axis_name) / (n - 1)
    std = jnp.sqrt(jnp.diagonal(cov) + eps)
    return jnp.mean(jnp.maximum(1.0 - std, 0.0)), _off_diag_sq_sum(cov) / d

  va, ca = var_cov(a)
  vb, cb = var_cov(b)
  terms = VICRegTerms(inv, 0.5 * (va + vb), ca + cb)
  loss = sim_coeff * terms.invariance + std_coeff * terms.variance + cov_coeff * terms.covariance
  return loss, terms
