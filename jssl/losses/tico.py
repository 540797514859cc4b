"""TiCo: transformation invariance and covariance contrast.

Zhu, Moraes, Karakasli, Chi, Sun 2022, "TiCo: Transformation Invariance and
Covariance Contrast for Self-Supervised Visual Representation Learning",
arXiv:2206.10698, Sec. 3 (the loss and its running covariance) and Algorithm 1.
No author code was released; the reference is lightly `lightly/loss/tico_loss.py`
(`TiCoLoss`), which cites sayannag/TiCo-pytorch `TiCo/main.py::TiCo_Loss`.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C


def tico(z_a, z_b, cov, *, beta: float = 0.9, rho: float = 8.0,
         axis_name: Optional[str] = None):
  """TiCo loss with its running covariance; returns (loss, new covariance).

  With u = n(z_a), v = n(z_b) (row-wise L2) over the N rows of the global batch::

    Bm    = sg( u^T u / N )                                   [D, D]
    C_new = beta * C + (1 - beta) * Bm
    L     = 1 - (1/N) sum_i u_i . v_i + rho * (1/N) sum_i u_i^T C_new u_i

  The first term pulls the two views together (transformation invariance); the
  second pushes u away from the directions the recent batches already occupy
  (covariance contrast: u^T C u is the mean squared cosine of u with the past
  embeddings). C_new is both the matrix used in this loss and the state of the next
  step (updated in the same step, not after). `cov` is a constant (stop-gradient).

  Conventions (both give the same gradient of z_b and differ as follows):
    * lightly (this function, the parity fixture): the constant 1 is added, and Bm
      is detached, so z_a's gradient goes through the u^T C u term with C fixed;
    * sayannag/TiCo-pytorch (and the paper's pseudo-code as re-implemented there):
      no constant (the value is 1 lower) and Bm stays in the graph, which adds the
      gradient of (1 - beta) * rho * ||u^T u / N||_F^2 to z_a.
  z_b is not detached here (lightly does not); the recipe feeds momentum-encoder
  outputs, which the caller passes as constants.

  Args:
    z_a: [N, D] online projections (raw; normalised inside).
    z_b: [N, D] projections of the other view (raw; normalised inside).
    cov: [D, D] running covariance C from the previous step (zeros at the first,
      lightly's lazy init).
    beta: EMA coefficient of C (paper and lightly 0.9).
    rho: weight of the covariance term; sayannag's default 8, lightly's 20.
    axis_name: mesh axis inside `shard_map`: Bm and the means are over the global
      batch (psum of the shards).

  Returns:
    (loss, C_new [D, D]); C_new in the compute dtype (float32 or float64).

  Reference: Zhu et al. 2022, Sec. 3 and Algorithm 1; lightly 1.6.0 TiCoLoss.

  Example:
    >>> z = jnp.eye(4, 8)
    >>> loss, c = tico(z, z, jnp.zeros((8, 8)))
    >>> round(float(loss), 4), c.shape
    (0.2, (8, 8))
  """
  C.check_same("z_a", z_a, "z_b", z_b, 2, "[N, D]")
  d = z_a.shape[1]
  C.check_rank("cov", cov, 2, "[D, D]")
  if cov.shape != (d, d):
    raise ValueError(f"cov must have shape [D, D] = {(d, d)} for z_a: {z_a.shape}, got "
                     f"cov: {cov.shape}")
  u, v, c = C.upcast(z_a, z_b, cov)
  u, v = C.l2_normalize(u), C.l2_normalize(v)
  n = C.psum(u.shape[0], axis_name)
  bm = jax.lax.stop_gradient(C.psum(u.T @ u, axis_name) / n)
  c_new = beta * jax.lax.stop_gradient(c) + (1.0 - beta) * bm
  align = C.psum(jnp.sum(u * v), axis_name) / n
  contrast = C.psum(jnp.sum((u @ c_new) * u), axis_name) / n
  return 1.0 - align + rho * contrast, c_new
