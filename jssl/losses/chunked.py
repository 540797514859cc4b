"""Memory-linear variants of NT-Xent and SigLIP: anchor chunks under jax.checkpoint.

The plain losses materialise the [2B, 2B] (NT-Xent) or [B, B] (SigLIP) logits, and
autodiff keeps them (and the softmax) for the backward pass: O(B^2) memory. Here a
`lax.scan` walks over chunks of `chunk_size` anchors; each chunk's logits are formed,
reduced to a per-chunk scalar and dropped, and the chunk body is wrapped in
`jax.checkpoint` so the backward pass recomputes them instead of storing them. Peak
memory is O(chunk_size * B + B * D); value and gradients equal the plain losses (same
math, summed in another order). Inside `shard_map` (axis_name) each device chunks its
own anchors against the gathered candidates.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C
from jssl.losses.contrastive import two_views
from jssl.losses.image_text import SIGLIP_BIAS_INIT, SIGLIP_T_PRIME_INIT


def _chunked_sum(row_fn, xs, chunk_size):
  """sum_r row_fn(chunk of xs) over anchor chunks; xs: pytree of [M, ...] per-anchor arrays.

  Rows are padded to a multiple of chunk_size with a `valid` = 0 flag that row_fn must
  honour (padded rows contribute 0 and get 0 gradient).
  """
  m = jax.tree.leaves(xs)[0].shape[0]
  c = max(1, min(int(chunk_size), m))
  n_chunks = -(-m // c)
  pad = n_chunks * c - m
  valid = jnp.concatenate([jnp.ones((m,), bool), jnp.zeros((pad,), bool)])
  xs = jax.tree.map(lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), xs)
  xs = jax.tree.map(lambda a: a.reshape((n_chunks, c) + a.shape[1:]), (xs, valid))

  # checkpoint: the backward pass recomputes each chunk's [c, B] logits instead of
  # saving them, which is what keeps memory linear in B.
  # Per-chunk sums are scan outputs (no carry), which also keeps the scan valid inside
  # shard_map, where a replicated zero carry would not match a device-varying sum.
  @jax.checkpoint
  def body(_, chunk):
    rows, ok = chunk
    return None, row_fn(rows, ok)

  _, sums = jax.lax.scan(body, None, xs)
  return jnp.sum(sums)


def ntxent_chunked(z_a, z_b, *, temperature: float = 0.1, chunk_size: int = 1024,
                   axis_name: Optional[str] = None, normalize: bool = True):
  """`ntxent` with O(chunk_size * B) memory (forward and backward); same value/gradient.

  Args:
    z_a, z_b: [B, P] projections of the two views.
    temperature: T (0.1).
    chunk_size: anchors per chunk (of the 2B, or 2B_local with axis_name).
    axis_name: mesh axis inside `shard_map`.
    normalize: L2-normalise inside.

  Returns:
    Scalar loss equal to `ntxent(z_a, z_b, temperature=temperature)`.

  Reference: as `ntxent` (Chen et al. 2020 eq. 1); chunking as in gradient-cache /
  big_vision chunked contrastive losses.

  Example:
    >>> z = jax.random.normal(jax.random.key(0), (8, 4))
    >>> ntxent_chunked(z, z + 1, chunk_size=4).shape
    ()
  """
  a, b, ga, gb, gidx = two_views(z_a, z_b, normalize=normalize, axis_name=axis_name)
  n_global = ga.shape[0]
  cand = jnp.concatenate([ga, gb], axis=0)                  # [2N, P]: u rows then v rows
  anchors = jnp.concatenate([a, b], axis=0)                  # [2n, P]
  self_col = jnp.concatenate([gidx, n_global + gidx])
  pos_col = jnp.concatenate([n_global + gidx, gidx])
  cols = jnp.arange(2 * n_global)

  def rows_loss(rows, ok):
    x, s_col, p_col = rows
    logits = x @ cand.T / temperature
    logits = jnp.where(cols[None, :] == s_col[:, None], -jnp.inf, logits)
    pos = jnp.take_along_axis(logits, p_col[:, None], axis=-1)[:, 0]
    per = jax.nn.logsumexp(logits, axis=-1) - pos
    return jnp.sum(jnp.where(ok, per, 0.0))

  total = _chunked_sum(rows_loss, (anchors, self_col, pos_col), chunk_size)
  return C.psum(total, axis_name) / (2 * n_global)


def siglip_chunked(img, txt, t_prime=SIGLIP_T_PRIME_INIT, bias=SIGLIP_BIAS_INIT, *,
                   chunk_size: int = 1024, normalize: bool = True,
                   axis_name: Optional[str] = None):
  """`siglip` with O(chunk_size * B) memory (forward and backward); same value/gradient.

  Args:
    img, txt: [B, D] embeddings.
    t_prime, bias: learnable scalars as in `siglip`.
    chunk_size: image rows per chunk.
    normalize: L2-normalise inside.
    axis_name: mesh axis inside `shard_map` (local images vs gathered texts).

  Returns:
    Scalar loss equal to `siglip(img, txt, t_prime, bias)`.

  Reference: Zhai et al. 2023, Algorithm 1 and Sec. 3.3 (chunked implementation);
  google-research/big_vision trainers/proj/image_text/siglip.py.

  Example:
    >>> x = jnp.eye(8)
    >>> siglip_chunked(x, x, chunk_size=4).shape
    ()
  """
  C.check_same("img", img, "txt", txt, 2, "[B, D]")
  C.check_scalar("t_prime", t_prime)
  C.check_scalar("bias", bias)
  x, y = C.upcast(img, txt)
  if normalize:
    x, y = C.l2_normalize(x), C.l2_normalize(y)
  t = jnp.exp(jnp.reshape(jnp.asarray(t_prime, x.dtype), ()))
  bb = jnp.reshape(jnp.asarray(bias, x.dtype), ())
  gy = C.all_gather(y, axis_name)
  cols = jnp.arange(gy.shape[0])
  rows = C.shard_offset(x.shape[0], axis_name) + jnp.arange(x.shape[0])

  def rows_loss(chunk, ok):
    xc, rc = chunk
    logits = t * xc @ gy.T + bb
    z = jnp.where(rc[:, None] == cols[None, :], 1.0, -1.0)
    return jnp.sum(jnp.where(ok[:, None], jax.nn.log_sigmoid(z * logits), 0.0))

  total = _chunked_sum(rows_loss, (x, rows), chunk_size)
  return -C.psum(total, axis_name) / gy.shape[0]
