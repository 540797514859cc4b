"""Contrastive losses: SimCLR NT-Xent, general InfoNCE, SupCon, DCL / DCLW.

Shapes follow the README legend: B batch, V views, D / P feature width.
Every function is pure and jit-able. Under `jax.jit` on global (batch-sharded)
arrays the loss sees the whole batch and XLA inserts the collectives; inside
`jax.shard_map` pass `axis_name` and the per-device shards are gathered so the
negatives span the global batch (same numbers as one device).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C


def _rows_ce(logits, pos_col):
  """-log softmax(logits)[pos] per row; logits [M, K], pos_col [M] int."""
  lse = jax.nn.logsumexp(logits, axis=-1)
  pos = jnp.take_along_axis(logits, pos_col[:, None], axis=-1)[:, 0]
  return lse - pos


def two_views(z_a, z_b, *, normalize: bool, axis_name: Optional[str]):
  """Shared prologue of the two-view contrastive losses.

  Checks `z_a, z_b: [B, P]`, upcasts, optionally L2-normalises, and returns
  `(a, b, ga, gb, gidx)`: the local rows, their all-gathered global versions
  (identity without `axis_name`) and the global row index of each local row.
  """
  C.check_same("z_a", z_a, "z_b", z_b, 2, "[B, P]")
  a, b = C.upcast(z_a, z_b)
  if normalize:
    a, b = C.l2_normalize(a), C.l2_normalize(b)
  ga, gb = C.all_gather(a, axis_name), C.all_gather(b, axis_name)
  gidx = C.shard_offset(a.shape[0], axis_name) + jnp.arange(a.shape[0])
  return a, b, ga, gb, gidx


def ntxent(z_a, z_b, *, temperature: float = 0.1, axis_name: Optional[str] = None,
           normalize: bool = True, reduction: str = "mean"):
  """SimCLR NT-Xent: 2B anchors, each a (2B-1)-way softmax, mean over the 2B anchors.

  With u = n(z_a), v = n(z_b) (row-wise L2), s(x, y) = x.y / T::

    l_i^a = -s(u_i, v_i) + log( sum_j exp s(u_i, v_j) + sum_{j != i} exp s(u_i, u_j) )
    l_i^b = the same with u and v swapped
    L = (1 / 2B) sum_i (l_i^a + l_i^b)

  Convention: the mean over all 2B anchors (SimCLR paper eq. 1 summed over the 2N
  examples and divided by 2N; lightly `NTXentLoss`). google-research/simclr
  `tf2/objective.py::add_contrastive_loss` returns `loss_a + loss_b`, each a mean
  over B, which is exactly **2x** this value (and 2x the gradient):
  `simclr_tf2 = 2 * ntxent(...)`. The self-similarity is removed from the
  denominator; the positive stays in it.

  Args:
    z_a: [B, P] projections of view a (raw; normalised inside unless normalize=False).
    z_b: [B, P] projections of view b, row i the positive of z_a row i.
    temperature: T. The SimCLR paper / tf2 flag default is 0.1; lightly uses 0.5.
    axis_name: mesh axis inside `shard_map`; shards are all-gathered so the 2B-2
      negatives span the global batch.
    normalize: L2-normalise rows inside (the reference does).
    reduction: "mean" (scalar) or "none" ([2, B] per-anchor losses, local rows).

  Returns:
    Scalar loss (float32, or float64 under x64 with float64 inputs).

  Reference: Chen et al. 2020, "A Simple Framework for Contrastive Learning of
  Visual Representations", eq. 1; google-research/simclr tf2/objective.py.

  Example:
    >>> z = jnp.eye(4, 8)
    >>> float(ntxent(z, z, temperature=0.5)) > 0
    True
  """
  a, b, ga, gb, gidx = two_views(z_a, z_b, normalize=normalize, axis_name=axis_name)
  n, n_global = a.shape[0], ga.shape[0]
  # Columns [0, N) are the other view (positive at gidx), [N, 2N) the same view
  # (self at N + gidx, removed).
  logits_a = jnp.concatenate([a @ gb.T, a @ ga.T], axis=1) / temperature
  logits_b = jnp.concatenate([b @ ga.T, b @ gb.T], axis=1) / temperature
  logits = jnp.concatenate([logits_a, logits_b], axis=0)
  gidx2 = jnp.concatenate([gidx, gidx])
  self_mask = jnp.arange(2 * n_global)[None, :] == (n_global + gidx2)[:, None]
  logits = jnp.where(self_mask, -jnp.inf, logits)
  per_anchor = _rows_ce(logits, gidx2)
  if reduction == "none":
    return per_anchor.reshape(2, n)
  return C.psum(jnp.sum(per_anchor), axis_name) / (2 * n_global)


def info_nce(anchors, candidates, positive_mask, *, temperature: float = 0.1,
             negative_weights=None, exclude_mask=None, base_temperature: Optional[float] = None,
             normalize: bool = True, axis_name: Optional[str] = None):
  """General InfoNCE with several (weighted) positives and weighted negatives.

  For anchor a with logits s_ak = n(x_a).n(c_k) / T::

    lse_a = log sum_{k not excluded} w_ak exp(s_ak)
    l_a   = -(T / T_base) * sum_k p_ak (s_ak - lse_a) / max(sum_k p_ak, 1)
    L     = mean over all anchors (anchors without positives add 0 but count)

  p = `positive_mask` (bool or float weights, SupCon "L_out": positives stay in the
  denominator), w = `negative_weights` (pair weights on the denominator, e.g.
  hard-negative importance weights, Robinson et al. 2021 eq. 3; default 1). With
  one positive per row and w = 1 this is CPC / MoCo InfoNCE (van den Oord 2018
  eq. 4); with a label mask it is SupCon (Khosla 2020 eq. 2).

  Args:
    anchors: [M, D] anchor features.
    candidates: [C, D] contrast set. With `axis_name` this is the local shard; it is
      all-gathered and the masks then index the global set: [M, C_global].
    positive_mask: [M, C] bool/float positives.
    temperature: T.
    negative_weights: optional [M, C] non-negative weights on the denominator terms.
    exclude_mask: optional [M, C] bool, True removes the pair from the denominator
      (e.g. the anchor itself).
    base_temperature: SupCon's T_base (loss scaled by T / T_base); None = T.
    normalize: L2-normalise anchors and candidates inside.
    axis_name: mesh axis inside `shard_map` (mean taken over the global anchors).

  Returns:
    Scalar loss.

  Reference: HobbitLong/SupContrast losses.py::SupConLoss (mask and reduction).

  Example:
    >>> x = jnp.eye(3)
    >>> float(info_nce(x, x, jnp.eye(3, dtype=bool), temperature=1.0)) > 0
    True
  """
  C.check_rank("anchors", anchors, 2, "[M, D]")
  C.check_rank("candidates", candidates, 2, "[C, D]")
  if anchors.shape[1] != candidates.shape[1]:
    raise ValueError(f"anchors [M, D] and candidates [C, D] need the same D, got "
                     f"anchors: {anchors.shape} and candidates: {candidates.shape}")
  x, c = C.upcast(anchors, candidates)
  if normalize:
    x, c = C.l2_normalize(x), C.l2_normalize(c)
  c = C.all_gather(c, axis_name)
  want = (x.shape[0], c.shape[0])
  for name, m in (("positive_mask", positive_mask), ("negative_weights", negative_weights),
                  ("exclude_mask", exclude_mask)):
    if m is not None and tuple(m.shape) != want:
      raise ValueError(f"{name} must have shape [M, C] = {want} (anchors: {x.shape}, "
                       f"candidates: {c.shape}), got {name}: {tuple(m.shape)}")
  logits = x @ c.T / temperature
  per_anchor = _masked_info_nce(logits, positive_mask, negative_weights, exclude_mask)
  scale = 1.0 if base_temperature is None else temperature / base_temperature
  total = C.psum(jnp.sum(per_anchor), axis_name)
  count = C.psum(per_anchor.shape[0], axis_name)
  return scale * total / count


def _masked_info_nce(logits, positive_mask, negative_weights=None, exclude_mask=None):
  """Per-row -sum_k p_k log softmax_w(logits)_k / max(sum p, 1); logits [M, K]."""
  den = logits
  if negative_weights is not None:
    w = jnp.asarray(negative_weights, logits.dtype)
    # log(0) would be -inf and its gradient NaN: zero weights drop the term instead.
    den = jnp.where(w > 0, logits + jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
  if exclude_mask is not None:
    den = jnp.where(exclude_mask, -jnp.inf, den)
  lse = jax.nn.logsumexp(den, axis=-1, keepdims=True)
  p = jnp.asarray(positive_mask, logits.dtype)
  npos = jnp.sum(p, axis=-1)
  # where() not multiply: a -inf log-prob at a non-positive must not become 0*inf=NaN.
  pos_term = jnp.sum(jnp.where(p != 0, p * (logits - lse), 0.0), axis=-1)
  # An anchor without positives contributes 0 yet still counts in the mean
  # (SupContrast: mask_pos_pairs clamped to 1).
  return -pos_term / jnp.where(npos < 1e-6, 1.0, npos)


def supcon(features, labels=None, *, temperature: float = 0.07, base_temperature: float = 0.07,
           contrast_mode: str = "all", normalize: bool = True, axis_name: Optional[str] = None):
  """Supervised contrastive loss (SupCon); labels=None gives the SimCLR multi-view loss.

  The contrast set is the B*V samples ordered view-major (index v*B + b)::

    P(a) = {p != a : label(p) == label(a)}      (labels None: same sample b)
    l_a  = -(T/T_base) / max(|P(a)|, 1) * sum_{p in P(a)} [ s_ap - log sum_{k != a} exp s_ak ]
    L    = mean over anchors (all B*V, or view 0 only for contrast_mode="one")

  With labels=None, V=2 and T == T_base this equals `ntxent`.

  Args:
    features: [B, V, D] (raw; normalised inside unless normalize=False; the official
      loss expects unit vectors from its model).
    labels: optional [B] integer class labels.
    temperature: T (paper 0.07 for SupCon, 0.5 for the SimCLR baseline in the repo).
    base_temperature: T_base, the loss is scaled by T / T_base.
    contrast_mode: "all" (every view is an anchor) or "one" (only view 0).
    normalize: L2-normalise features inside.
    axis_name: mesh axis inside `shard_map` (features/labels are local shards).

  Returns:
    Scalar loss.

  Reference: Khosla et al. 2020, "Supervised Contrastive Learning", eq. 2 (L_out);
  HobbitLong/SupContrast losses.py::SupConLoss.

  Example:
    >>> f = jax.random.normal(jax.random.key(0), (4, 2, 8))
    >>> supcon(f, jnp.array([0, 0, 1, 1])).shape
    ()
  """
  C.check_rank("features", features, 3, "[B, V, D]")
  if labels is not None and tuple(labels.shape) != features.shape[:1]:
    raise ValueError(f"labels must have shape [B] = {features.shape[:1]}, got labels: "
                     f"{tuple(labels.shape)} for features: {features.shape}")
  if contrast_mode not in ("all", "one"):
    raise ValueError(f"contrast_mode must be 'all' or 'one', got {contrast_mode!r}")
  f = C.upcast(features)
  if normalize:
    f = C.l2_normalize(f)
  b, v, _ = f.shape
  g = C.all_gather(f, axis_name)
  n_global = g.shape[0]
  contrast = jnp.swapaxes(g, 0, 1).reshape(v * n_global, -1)   # view-major [V*B, D]
  n_anchor_views = v if contrast_mode == "all" else 1
  anchors = jnp.swapaxes(f[:, :n_anchor_views], 0, 1).reshape(n_anchor_views * b, -1)
  gidx = C.shard_offset(b, axis_name) + jnp.arange(b)
  a_sample = jnp.tile(gidx, n_anchor_views)                       # [Va*b]
  a_index = jnp.repeat(jnp.arange(n_anchor_views), b) * n_global + a_sample
  c_sample = jnp.tile(jnp.arange(n_global), v)                    # [V*B]
  is_self = a_index[:, None] == jnp.arange(v * n_global)[None, :]
  if labels is None:
    same = a_sample[:, None] == c_sample[None, :]
  else:
    g_labels = C.all_gather(labels, axis_name)
    same = g_labels[a_sample][:, None] == g_labels[c_sample][None, :]
  logits = anchors @ contrast.T / temperature
  per_anchor = _masked_info_nce(logits, same & ~is_self, None, is_self)
  total = C.psum(jnp.sum(per_anchor), axis_name)
  count = C.psum(per_anchor.shape[0], axis_name)
  return (temperature / base_temperature) * total / count


def _dcl_weights(u, v, sigma, axis_name):
  """DCLW von Mises-Fisher weights w_i = 2 - B * softmax_i(u_i.v_i / sigma), global batch."""
  s = jnp.sum(u * v, axis=-1) / sigma
  lse = C.global_logsumexp(s, 0, axis_name)
  n_global = C.psum(s.shape[0], axis_name)
  return 2.0 - n_global * jnp.exp(s - lse)


def _dcl(z_a, z_b, temperature, sigma, detach_weights, axis_name, name):
  u, v, gu, gv, gidx = two_views(z_a, z_b, normalize=True, axis_name=axis_name)
  n, n_global = u.shape[0], gu.shape[0]
  if sigma is None:
    w = jnp.ones((n,), u.dtype)
  else:
    w = _dcl_weights(u, v, sigma, axis_name)
    if detach_weights:
      # lightly builds the weights from detached tensors: constants in backward.
      w = jax.lax.stop_gradient(w)
  # Decoupling (Yeh et al. eq. 6): positive AND self both leave the denominator.
  drop = jnp.concatenate([jnp.arange(n_global)] * 2)[None, :] == gidx[:, None]
  pos = jnp.sum(u * v, axis=-1) / temperature

  def direction(x, gx, gy):
    logits = jnp.concatenate([x @ gx.T, x @ gy.T], axis=1) / temperature
    neg = jax.nn.logsumexp(jnp.where(drop, -jnp.inf, logits), axis=-1)
    return jnp.sum(neg - w * pos)

  total = direction(u, gu, gv) + direction(v, gv, gu)
  # 0.5 * (mean_a + mean_b): lightly's average of the two directions.
  return C.psum(total, axis_name) / (2 * n_global)


def dcl(z_a, z_b, *, temperature: float = 0.1, axis_name: Optional[str] = None):
  """Decoupled contrastive loss (DCL): NT-Xent with the positive removed from the denominator.

  With u = n(z_a), v = n(z_b)::

    l_i^a = -u_i.v_i / T + log( sum_{j != i} exp(u_i.u_j / T) + sum_{j != i} exp(u_i.v_j / T) )
    L = 0.5 * (mean_i l_i^a + mean_i l_i^b)

  Convention: lightly `DCLLoss` (directions averaged). The official training loop
  (raminnakhli/Decoupled-Contrastive-Learning experiment/simclr/main.py) sums the two
  directions: `official = 2 * dcl(...)`. The value can be negative.

  Args:
    z_a, z_b: [B, P] projections of the two views (normalised inside).
    temperature: T (paper / lightly default 0.1).
    axis_name: mesh axis inside `shard_map`.

  Returns:
    Scalar loss.

  Reference: Yeh et al. 2022, "Decoupled Contrastive Learning", eq. 6;
  raminnakhli/Decoupled-Contrastive-Learning loss/dcl.py::DCL.

  Example:
    >>> z = jax.random.normal(jax.random.key(0), (4, 8))
    >>> dcl(z, z + 0.1).shape
    ()
  """
  return _dcl(z_a, z_b, temperature, None, True, axis_name, "dcl")


def dclw(z_a, z_b, *, temperature: float = 0.1, sigma: float = 0.5,
         detach_weights: bool = True, axis_name: Optional[str] = None):
  """Weighted DCL (DCLW): the positive term of `dcl` times w_i = 2 - B softmax_i(u_i.v_i / sigma).

  The softmax runs over the (global) batch index i; both directions use the same w.
  Convention: lightly `DCLWLoss` (directions averaged, weights detached:
  `detach_weights=True`). The official code sums the directions and differentiates
  through the weights: `official = 2 * dclw(..., detach_weights=False)`.

  Args:
    z_a, z_b: [B, P] projections of the two views (normalised inside).
    temperature: T (default 0.1).
    sigma: vMF weighting temperature (default 0.5).
    detach_weights: stop the gradient through w (lightly) or not (official).
    axis_name: mesh axis inside `shard_map`.

  Returns:
    Scalar loss.

  Reference: Yeh et al. 2022, eq. 7; raminnakhli/Decoupled-Contrastive-Learning
  loss/dcl.py::DCLW.

  Example:
    >>> z = jax.random.normal(jax.random.key(0), (4, 8))
    >>> dclw(z, z + 0.1).shape
    ()
  """
  return _dcl(z_a, z_b, temperature, sigma, detach_weights, axis_name, "dclw")
