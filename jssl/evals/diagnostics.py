"""Representation diagnostics of a feature batch: one jitted call, a dict of numbers.

`diagnostics(features, labels=None)` returns (as device arrays; `jax.device_get` them
to log):

Always, from `features: [B, D]`:
- `uniformity`: Wang & Isola 2020 (`jssl.losses.metrics.uniformity`, t = 2), on
  L2-normalised features; `alignment` too when a second view `other: [B, D]` of the
  same examples is given (`metrics.alignment`, alpha = 2).
- `rankme` (`metrics.rankme`, Garrido et al. 2023) and `spectrum`, the singular values
  of the raw features, descending (`[min(B, D)]`), for the spectrum plot.
- `feature_std_mean`: the mean over dimensions of `metrics.feature_std` (per-dimension
  std of the L2-normalised features, SimSiam Sec. 4.1 / Fig. 2), and
  `feature_std_ratio = sqrt(D) * feature_std_mean`, about 1 for features spread
  uniformly on the sphere and 0 at collapse; see `collapse_warning` for the threshold.
- `vendi`: Vendi score (Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation
  Metric for Machine Learning", TMLR) with the cosine kernel,
  `exp(-sum_i l_i log l_i)` over the eigenvalues `l_i` of `K / B`, `K_ij = cos(x_i, x_j)`.
  The nonzero eigenvalues of `K / B = X X^T / B` (X the normalised rows) are `s^2 / B`
  with `s` the singular values of `X`, so no `[B, B]` eigendecomposition is needed.
  1 when all features are parallel, B for B orthogonal ones: an effective number of
  distinct examples.

With integer `labels: [B]` (classes absent from the batch are left out):
- `nc1`: neural-collapse variability `tr(Sigma_W Sigma_B^+) / K` (Papyan, Han & Donoho
  2020, "Prevalence of Neural Collapse during the Terminal Phase of Deep Learning
  Training", PNAS; their variability-collapse measure), on the raw features:
  `Sigma_W` the within-class covariance (1/B), `Sigma_B` the covariance of the class
  means around the mean of the class means (1/K; Papyan's global mean, equal to it for
  balanced classes). 0 when every class is a point; evaluated in the span of the
  centred means (see `_nc1`), so no `[D, D]` matrix is formed.
- `intra_class_variance`: `(1 / B) sum_i |u_i - mu_{y_i}|^2` for the L2-normalised
  features `u` and their class means `mu`, in [0, 1]: lower means tighter classes.
- `class_separation`: Kornblith et al. 2021, "Why Do Better Loss Functions Lead to
  Less Transferable Features?" (NeurIPS), `R^2 = 1 - d_within / d_total` of the mean
  cosine distances within classes and over all class pairs. With the mean unit
  vectors `mu_c`: `d_within = 1 - mean_c |mu_c|^2`, `d_total = 1 - |mean_c mu_c|^2`.
  They found higher separation / lower intra-class variance in the penultimate layer
  goes with *less* transferable features, hence these two for transferability ranking.

Cost: one SVD of `[B, D]`, one of `[K, D]`, and uniformity's `[B, B]` distances; meant
for a batch (thousands of rows), logged every N steps. Inputs may be sharded on the
first axis (XLA inserts the collectives); results equal the single-device ones up to
float rounding.
"""

import functools
import math

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jssl.evals.knn import auto_sharded
from jssl.evals.ncm import class_means, l2_normalise
from jssl.losses import metrics

# sqrt(D) * mean per-dimension std below this raises the collapse warning.
COLLAPSE_THRESHOLD = 0.1


def collapse_warning(std, dim, *, threshold=COLLAPSE_THRESHOLD):
  """Logs (absl, warning) and returns True when normalised embeddings have collapsed.

  The statistic is `ratio = sqrt(D) * mean_d std_d`, `std` the per-dimension std of the
  L2-normalised features (`metrics.feature_std`). Why `threshold = 0.1`, an order of
  magnitude below the healthy value:
  - Features uniform on the unit sphere have `std_d = 1 / sqrt(D)`, ratio 1; SimSiam
    (Chen & He 2021, Fig. 2) shows non-collapsed training staying near `1 / sqrt(D)`
    and a collapsing one dropping to 0.
  - By Jensen, `mean_d std_d <= sqrt(mean_d var_d) = sqrt((1 - |m|^2) / D)`, with `m`
    the mean unit vector, so ratio >= 0.1 needs `1 - |m|^2 >= 0.01`: every batch whose
    normalised features keep less than 1% of the variance of a uniform spread (all
    within a cap around one direction) is flagged.
  - Features spread evenly over `r` of the `D` coordinate axes give
    `ratio = sqrt(r / D)`, so the warning also fires when fewer than 1% of the
    dimensions carry the spread. Dimensional collapse into a rotated subspace keeps
    the ratio high; `rankme` and the spectrum watch that.

  Args:
    std: `[D]` per-dimension stds, or their mean (a scalar).
    dim: D, the feature width.
    threshold: the bound on the ratio.

  Returns:
    True when `sqrt(dim) * mean(std) < threshold` (a warning was logged), else False.
  """
  return collapse_ratio_warning(math.sqrt(dim) * float(np.mean(np.asarray(std))), dim,
                                threshold=threshold)


def collapse_ratio_warning(ratio, dim, *, threshold=COLLAPSE_THRESHOLD):
  """`collapse_warning` given the ratio itself (the `feature_std_ratio` that
  `diagnostics` returns and training logs as `diag/feature_std_ratio`)."""
  ratio = float(ratio)
  if ratio < threshold:
    logging.warning(
        "Representation collapse: sqrt(D) * mean per-dimension std of the normalised "
        "features is %.4g < %.3g (D=%d; about 1 when spread over the sphere, 0 when "
        "collapsed).", ratio, threshold, dim)
    return True
  return False


def _nc1(x, means, present):
  """`tr(Sigma_W Sigma_B^+) / K` without forming `[D, D]` matrices.

  With the centred means `M = U S V^T` (rows of absent classes zero),
  `Sigma_B = V S^2 V^T / K`, so `Sigma_B^+ = K V S^-2 V^T` on the nonzero `s_j`, and
  `tr(Sigma_W Sigma_B^+) / K = sum_j (v_j^T Sigma_W v_j) / s_j^2` with
  `v_j^T Sigma_W v_j = |X_c v_j|^2 / B`, `X_c` the class-centred features.
  """
  k = jnp.sum(present)
  grand = jnp.sum(means * present[:, None], axis=0) / k
  centred = (means - grand) * present[:, None]  # [K, D]
  _, s, vt = jnp.linalg.svd(centred, full_matrices=False)
  # Rank cut-off as jnp.linalg.pinv: the K - 1 nonzero directions at most.
  keep = s > 10.0 * max(centred.shape) * jnp.finfo(s.dtype).eps * jnp.max(s)
  within = jnp.sum((x @ vt.T) ** 2, axis=0) / x.shape[0]  # v_j^T Sigma_W v_j, [min(K, D)]
  return jnp.sum(jnp.where(keep, within / jnp.where(keep, s * s, 1.0), 0.0))


def _entropy_exp(p):
  """`exp(-sum p log p)` with `0 log 0 = 0` (eigenvalues may be exactly zero)."""
  safe = jnp.where(p > 0, p, 1.0)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(safe), 0.0)))


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _diagnostics(x, labels, other, *, num_classes):
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  b, d = x.shape
  out = {
      "uniformity": metrics.uniformity(x, t=2.0),
      "rankme": metrics.rankme(x),
      "spectrum": jnp.linalg.svd(x, compute_uv=False),
  }
  if other is not None:
    out["alignment"] = metrics.alignment(x, other.astype(x.dtype))
  std = metrics.feature_std(x)
  out["feature_std_mean"] = jnp.mean(std)
  out["feature_std_ratio"] = jnp.sqrt(jnp.float32(d)) * jnp.mean(std)
  unit = l2_normalise(x)
  s_unit = jnp.linalg.svd(unit, compute_uv=False)
  out["vendi"] = _entropy_exp(s_unit * s_unit / b)
  if labels is not None:
    labels = labels.astype(jnp.int32)
    means, counts = class_means(x, labels, num_classes)
    present = (counts > 0).astype(x.dtype)
    out["nc1"] = _nc1(x - means[labels], means, present)
    unit_means, _ = class_means(unit, labels, num_classes)
    sq = jnp.sum(unit_means * unit_means, axis=1)  # |mu_c|^2, 0 for absent classes
    k = jnp.sum(present)
    out["intra_class_variance"] = 1.0 - jnp.sum(counts * sq) / b
    d_within = 1.0 - jnp.sum(sq) / k
    d_total = 1.0 - jnp.sum((jnp.sum(unit_means, axis=0) / k) ** 2)
    out["class_separation"] = 1.0 - d_within / d_total
  return out


def diagnostics(features, labels=None, *, num_classes=None, other=None):
  """Representation diagnostics of one feature batch (module docstring).

  Args:
    features: `[B, D]` float features (embeddings or projections), B >= 2.
    labels: optional `[B]` int class ids in `[0, num_classes)`: adds `nc1`,
      `intra_class_variance` and `class_separation`.
    num_classes: K; inferred as `max(labels) + 1` from concrete labels when None
      (required when called inside a `jax.jit`, where labels are not concrete).
    other: optional `[B, D]` features of a second view of the same examples: adds
      `alignment`.

  Returns:
    A dict of scalar device arrays (and `spectrum: [min(B, D)]`); keys as listed in the
    module docstring.

  Raises:
    ValueError: naming the shapes, for features that are not a float `[B, D]` with
      B >= 2, `other` of another shape, labels of another length or outside the range.

  Example:
    >>> out = diagnostics(jnp.ones((4, 3)))
    >>> round(float(out["vendi"]), 4), float(out["feature_std_ratio"])
    (1.0, 0.0)
  """
  if jnp.ndim(features) != 2 or not jnp.issubdtype(jnp.result_type(features), jnp.floating):
    raise ValueError(f"features must be a float [B, D] array, got shape "
                     f"{jnp.shape(features)} and dtype {jnp.result_type(features)}")
  if features.shape[0] < 2:
    raise ValueError(f"diagnostics needs at least 2 rows, got features {features.shape}")
  if other is not None and jnp.shape(other) != features.shape:
    raise ValueError(f"other must have the shape of features {features.shape}, got "
                     f"{jnp.shape(other)}")
  if labels is not None:
    if jnp.shape(labels) != features.shape[:1]:
      raise ValueError(f"features and labels differ in length: features {features.shape} "
                       f"vs labels {jnp.shape(labels)}")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
      raise ValueError(f"labels must be integer class ids, got dtype "
                       f"{jnp.result_type(labels)}")
  arrays = (features, other, labels)
  if any(isinstance(a, jax.core.Tracer) for a in arrays):
    # Inside a caller's jit (e.g. a train step): no value checks, no re-sharding.
    if labels is not None and num_classes is None:
      raise ValueError("num_classes is required when diagnostics runs inside a jit")
    return _diagnostics(features, labels, other, num_classes=num_classes)
  if labels is not None:
    lo, hi = (int(v) for v in jax.device_get((jnp.min(labels), jnp.max(labels))))
    num_classes = hi + 1 if num_classes is None else int(num_classes)
    if lo < 0 or hi >= num_classes:
      raise ValueError(f"labels {jnp.shape(labels)} are in [{lo}, {hi}], outside "
                       f"[0, {num_classes}) for num_classes={num_classes}")
  present = [a for a in arrays if a is not None]
  with auto_sharded(*present) as moved:
    it = iter(moved)
    x, other, labels = (next(it) if a is not None else None for a in arrays)
    return _diagnostics(x, labels, other, num_classes=num_classes)
