"""Representation metrics / regularisers of a feature batch: alignment, uniformity,
RankMe effective rank, per-dimension std of normalised features (collapse alarm)."""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C


def alignment(x, y, *, alpha: float = 2.0, normalize: bool = True,
              axis_name: Optional[str] = None):
  """Alignment (Wang & Isola), L = mean_i ||n(x_i) - n(y_i)||^alpha.

  Args:
    x, y: [B, D] positive pairs.
    alpha: exponent (2).
    normalize: L2-normalise inside (the official functions expect unit inputs).
    axis_name: mesh axis inside `shard_map`.

  Returns:
    Scalar in [0, 2^alpha].

  Reference: Wang & Isola 2020, "Understanding Contrastive Representation Learning
  through Alignment and Uniformity on the Hypersphere", eq. 4; SsnL/align_uniform
  align_uniform/__init__.py::align_loss.

  Example:
    >>> float(alignment(jnp.eye(3), jnp.eye(3)))
    0.0
  """
  C.check_same("x", x, "y", y, 2, "[B, D]")
  a, b = C.upcast(x, y)
  if normalize:
    a, b = C.l2_normalize(a), C.l2_normalize(b)
  sq = jnp.sum((a - b) ** 2, axis=-1)
  if alpha == 2.0:
    d = sq
  else:
    # sqrt'(0) is infinite: guard identical pairs so their gradient is 0, not NaN.
    safe = jnp.where(sq > 0, sq, 1.0)
    d = jnp.where(sq > 0, safe ** (alpha / 2), 0.0)
  return C.psum(jnp.sum(d), axis_name) / C.psum(d.shape[0], axis_name)


def uniformity(x, *, t: float = 2.0, normalize: bool = True, axis_name: Optional[str] = None):
  """Uniformity (Wang & Isola), L = log mean_{i<j} exp(-t ||n(x_i) - n(x_j)||^2).

  The mean runs over the B(B-1)/2 distinct pairs (torch.pdist), squared distances.

  Args:
    x: [B, D] features.
    t: 2 (paper); lightly `HypersphereLoss` defaults to t = 1.
    normalize: L2-normalise inside.
    axis_name: mesh axis inside `shard_map` (pairs over the global batch).

  Returns:
    Scalar <= 0.

  Reference: Wang & Isola 2020, eq. 5; SsnL/align_uniform uniform_loss.

  Example:
    >>> float(uniformity(jnp.eye(2))) == -4.0
    True
  """
  C.check_rank("x", x, 2, "[B, D]")
  a = C.upcast(x)
  if normalize:
    a = C.l2_normalize(a)
  g = C.all_gather(a, axis_name)
  n = g.shape[0]
  if n < 2:
    raise ValueError(f"uniformity needs at least 2 rows, got x: {x.shape}")
  sq_a, sq_g = jnp.sum(a * a, -1), jnp.sum(g * g, -1)
  d2 = jnp.maximum(sq_a[:, None] + sq_g[None, :] - 2.0 * a @ g.T, 0.0)
  rows = C.shard_offset(a.shape[0], axis_name) + jnp.arange(a.shape[0])
  upper = jnp.arange(n)[None, :] > rows[:, None]                   # pairs i < j only
  lse = jax.nn.logsumexp(jnp.where(upper, -t * d2, -jnp.inf))
  lse = C.global_logsumexp(lse[None], 0, axis_name)[0]
  return lse - math.log(n * (n - 1) / 2)


def hypersphere(z_a, z_b, *, t: float = 2.0, lam: float = 1.0, alpha: float = 2.0,
                axis_name: Optional[str] = None):
  """Alignment + uniformity loss, L = align_alpha(a, b) + lam (unif_t(a) + unif_t(b)) / 2.

  lightly `HypersphereLoss(t=1, lam=1, alpha=2)` uses t = 1 by default; the paper (and
  this default) t = 2.

  Args:
    z_a, z_b: [B, D] features of the two views (normalised inside).
    t, lam, alpha: uniformity temperature, uniformity weight, alignment exponent.
    axis_name: mesh axis inside `shard_map`.

  Returns:
    Scalar loss.

  Reference: Wang & Isola 2020, eq. 6; lightly loss/hypersphere_loss.py.
  """
  return alignment(z_a, z_b, alpha=alpha, axis_name=axis_name) + lam * 0.5 * (
      uniformity(z_a, t=t, axis_name=axis_name) + uniformity(z_b, t=t, axis_name=axis_name))


def rankme(x, *, eps: float = 1e-7, axis_name: Optional[str] = None):
  """RankMe smooth effective rank, exp(-sum_k p_k log p_k), p_k = s_k / ||s||_1 + eps.

  s are the singular values of the (global) feature batch. With `axis_name` they are
  taken from the psum-reduced [D, D] Gram matrix (sqrt of its eigenvalues), which needs
  no all-gather of the batch. eps = 0 gives the effective rank of Roy & Vetterli 2007.

  Args:
    x: [B, D] features (embeddings, not normalised inside).
    eps: 1e-7 (RankMe).
    axis_name: mesh axis inside `shard_map`.

  Returns:
    Scalar in [1, min(B, D)].

  Reference: Garrido et al. 2023, "RankMe: Assessing the Downstream Performance of
  Pretrained Self-Supervised Representations by Their Rank", eq. 1.

  Example:
    >>> round(float(rankme(jnp.eye(4))), 3)
    4.0
  """
  C.check_rank("x", x, 2, "[B, D]")
  a = C.upcast(x)
  if axis_name is None:
    s = jnp.linalg.svd(a, compute_uv=False)
  else:
    gram = C.psum(a.T @ a, axis_name)
    s = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram), 0.0))
  p = s / jnp.maximum(jnp.sum(s), jnp.finfo(a.dtype).tiny) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


effective_rank = rankme


def feature_std(x, *, axis_name: Optional[str] = None):
  """Per-dimension std over the batch of L2-normalised features: [D] (collapse alarm).

  Healthy features give about 1/sqrt(D) per dimension; a collapsed encoder gives ~0
  (SimSiam Fig. 2 / Sec. 4.1). Biased (1/B) std over the global batch.

  Args:
    x: [B, D] features.
    axis_name: mesh axis inside `shard_map`.

  Returns:
    [D] standard deviations; compare `feature_std(x).mean()` with 1/sqrt(D).

  Reference: Chen & He 2021, "Exploring Simple Siamese Representation Learning", Fig. 2.

  Example:
    >>> feature_std(jnp.ones((4, 2))).tolist()
    [0.0, 0.0]
  """
  C.check_rank("x", x, 2, "[B, D]")
  a = C.l2_normalize(C.upcast(x))
  n = C.psum(a.shape[0], axis_name)
  mu = C.psum(jnp.sum(a, 0), axis_name) / n
  var = C.psum(jnp.sum((a - mu) ** 2, 0), axis_name) / n
  return jnp.sqrt(var)
