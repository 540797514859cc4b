"""Shared checks and array helpers for `jssl.losses` (private).

Every public loss validates its inputs here so that bad shapes fail with a
`ValueError` naming both shapes before any tracing-time broadcasting hides
the mistake.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def _shape(x) -> tuple:
  return tuple(getattr(x, "shape", ()))


def check_float(name: str, x) -> None:
  """Raises ValueError unless `x` has a floating dtype."""
  dtype = getattr(x, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating array, got dtype {dtype} and shape {_shape(x)}")


def check_rank(name: str, x, rank: int, legend: str) -> None:
  """Raises ValueError unless `x` is a float array of rank `rank` (legend e.g. '[B, D]')."""
  check_float(name, x)
  if x.ndim != rank:
    raise ValueError(f"{name} must have shape {legend}, got shape {_shape(x)}")


def check_same(name_a: str, a, name_b: str, b, rank: int = 2, legend: str = "[B, D]") -> None:
  """Both float arrays of rank `rank` with identical shapes; the error names both shapes."""
  check_rank(name_a, a, rank, legend)
  check_rank(name_b, b, rank, legend)
  if a.shape != b.shape:
    raise ValueError(
        f"{name_a} and {name_b} must have the same shape {legend}, got "
        f"{name_a}: {_shape(a)} and {name_b}: {_shape(b)}")


def check_scalar(name: str, x) -> None:
  """A learnable scalar parameter (python number or 0-d / size-1 float array)."""
  if isinstance(x, (int, float)):
    return
  check_float(name, x)
  if jnp.size(x) != 1:
    raise ValueError(f"{name} must be a scalar, got shape {_shape(x)}")


def compute_dtype(*xs):
  """float64 stays float64; everything narrower (bf16, f16) is computed in float32.

  Reason: softmax/logsumexp over thousands of logits and the squared norms of
  projections overflow or lose all precision in 16-bit floats; the reference
  losses are all evaluated in float32 or wider.
  """
  dt = jnp.result_type(*[x.dtype for x in xs])
  return jnp.float64 if dt == jnp.float64 else jnp.float32


def upcast(*xs):
  dt = compute_dtype(*xs)
  out = tuple(jnp.asarray(x, dt) for x in xs)
  return out if len(out) > 1 else out[0]


def l2_normalize(x, eps: float = 1e-12):
  """x / max(||x||, eps) row-wise (last axis), the torch `F.normalize` guard.

  The guard keeps zero vectors finite (value 0, gradient finite) instead of NaN.
  """
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def all_gather(x, axis_name: Optional[str]):
  """Concatenates the per-device shards on axis 0 (identity when axis_name is None)."""
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def all_gather_replicated(x, axis_name: Optional[str]):
  """Like `all_gather` but typed as replicated inside `shard_map` (needed for state that
  leaves shard_map with a replicated out_spec, e.g. the MoCo queue): each shard writes its
  rows into a zero buffer and the buffers are psum-ed."""
  if axis_name is None:
    return x
  n = x.shape[0]
  size = jax.lax.psum(1, axis_name)
  buf = jnp.zeros((size * n,) + x.shape[1:], x.dtype)
  buf = jax.lax.dynamic_update_slice_in_dim(buf, x, jax.lax.axis_index(axis_name) * n, 0)
  return jax.lax.psum(buf, axis_name)


def psum(x, axis_name: Optional[str]):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def pmean(x, axis_name: Optional[str]):
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def shard_offset(n_local: int, axis_name: Optional[str]):
  """Global index of this shard's first row (0 without axis_name)."""
  if axis_name is None:
    return 0
  return jax.lax.axis_index(axis_name) * n_local


def global_logsumexp(x, axis: int, axis_name: Optional[str]):
  """logsumexp over `axis` where that axis is split across `axis_name` shards."""
  if axis_name is None:
    return jax.nn.logsumexp(x, axis=axis, keepdims=True)
  # The max is only a shift for stability (the result does not depend on it), so it
  # is taken on stop_gradient(x): pmax has no differentiation rule.
  m = jax.lax.pmax(jnp.max(jax.lax.stop_gradient(x), axis=axis, keepdims=True), axis_name)
  s = jax.lax.psum(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True), axis_name)
  return m + jnp.log(s)
