"""Ring (collective-permute) SigLIP and CLIP: no device holds the global texts or logits.

Inside `jax.shard_map` each device keeps its b local image rows; the b local text rows
travel around the devices with `jax.lax.ppermute`, one hop per step, so after n steps
every image block has met every text block (Zhai et al. 2023, "Sigmoid Loss for Language
Image Pre-Training", Sec. 3.3 and Fig. 1: the "chunked" implementation; big_vision's
trainers/proj/image_text/siglip.py all-gathers and leaves this as a TODO).

Memory per device is O(b * D + b * b) in the forward AND the backward pass: the loss is a
`jax.custom_vjp` whose backward rotates the texts once more, recomputes each [b, b] block
of logits, accumulates the image gradient locally and carries the text gradient WITH the
rotating chunk, so that it arrives back at its owner after the full ring. Autodiff through
the loop would instead keep every step's text chunk (O(B * D)) and logits (O(B * b)).

Global row order is device-major (device k holds rows k*b ... (k+1)*b - 1), as in the
`axis_name` variants of `clip` / `siglip`; values and gradients equal those losses on the
concatenated arrays (same sums in another order).

The scalars' gradients are per-device block sums; the scalars enter the ring core made
device-varying (`pcast(..., to='varying')`), so autodiff's transpose of that cast is the
psum over devices. The loss returned is the global one, the same on every device.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C
from jssl.losses.image_text import (CLIP_LOGIT_SCALE_INIT, SIGLIP_BIAS_INIT,
                                    SIGLIP_T_PRIME_INIT, clip, siglip)


def _vary(x, axis_name):
  """`x` typed as device-varying over `axis_name` (a no-op when it already is)."""
  ty = jax.typeof(x)
  # jax 0.10 keeps the axes in `aval.mat.varying`; earlier releases in `aval.vma`.
  varying = getattr(getattr(ty, "mat", None), "varying", None)
  if varying is None:
    varying = getattr(ty, "vma", frozenset())
  if axis_name in varying:
    return x
  return jax.lax.pcast(x, axis_name, to="varying")


def _zeros(shape, like, axis_name):
  return _vary(jnp.zeros(shape, like.dtype), axis_name)


def _ring(n, axis_name, body, local, chunk, moving):
  """Runs `body` once per ring step, with the text chunk one device further each step.

  For s = 0 .. n-1: `local, moving = body(local, chunk, moving, s)`; between steps
  `chunk` (read-only payload) and `moving` (accumulators that belong to the chunk) are
  sent from device k to device k+1 (mod n). After the last step only `moving` hops once
  more, which brings it back to the device that owns the chunk (n hops in all). At step
  s device k holds the chunk of device (k - s) mod n.

  Returns (local, moving). The steps run in a `fori_loop` (not a Python loop), so memory
  is one chunk plus its receive buffer whatever n is. (With n = 2 the loop has one trip
  and XLA unrolls it, which costs a few [b, b] blocks more than n >= 3.)
  """
  if n == 1:
    return body(local, chunk, moving, 0)
  perm = [(j, (j + 1) % n) for j in range(n)]

  def hop(tree):
    return jax.tree.map(lambda a: jax.lax.ppermute(a, axis_name, perm), tree)

  def step(s, carry):
    local, chunk, moving = carry
    local, moving = body(local, chunk, moving, s)
    chunk, moving = hop((chunk, moving))
    return local, chunk, moving

  local, chunk, moving = jax.lax.fori_loop(0, n - 1, step, (local, chunk, moving))
  local, moving = body(local, chunk, moving, n - 1)
  return local, hop(moving)


def _axis_size(axis_name) -> int:
  return int(jax.lax.axis_size(axis_name))


def _prep(img, txt, normalize):
  C.check_same("img", img, "txt", txt, 2, "[B, D]")
  x, y = C.upcast(img, txt)
  if normalize:
    x, y = C.l2_normalize(x), C.l2_normalize(y)
  return x, y


# ----------------------------------------------------------------------------- SigLIP


def _siglip_core(axis_name, n):
  """custom_vjp f(x [b,D], y [b,D], t, bias) -> this device's sum_ij log sigmoid(z_ij l_ij).

  l = t * x @ y_chunk^T + bias over all chunks; z = +1 only on the diagonal of the
  device's own block (ring step 0). x, y already normalised; t = exp(t').
  """

  def block(x, y, t, bias, s):
    xy = x @ y.T                                         # [b, b]
    logits = t * xy + bias
    eye = jnp.eye(x.shape[0], dtype=bool)
    z = jnp.where(eye & (s == 0), 1.0, -1.0).astype(x.dtype)
    return xy, logits, z

  def forward(x, y, t, bias):
    def body(acc, y_c, moving, s):
      _, logits, z = block(x, y_c, t, bias, s)
      return acc + jnp.sum(jax.nn.log_sigmoid(z * logits)), moving

    acc, _ = _ring(n, axis_name, body, _zeros((), x, axis_name), y, ())
    return acc

  @jax.custom_vjp
  def core(x, y, t, bias):
    return forward(x, y, t, bias)

  def fwd(x, y, t, bias):
    return forward(x, y, t, bias), (x, y, t, bias)

  def bwd(res, g):
    x, y, t, bias = res

    def body(local, y_c, dy_c, s):
      dx, dt, db = local
      xy, logits, z = block(x, y_c, t, bias, s)
      # d log sigmoid(z l) / dl = z * sigmoid(-z l)
      gl = g * z * jax.nn.sigmoid(-z * logits)           # [b, b]
      dx = dx + t * (gl @ y_c)
      dy_c = dy_c + t * (gl.T @ x)
      return (dx, dt + jnp.sum(gl * xy), db + jnp.sum(gl)), dy_c

    init = (jnp.zeros_like(x), _zeros((), x, axis_name), _zeros((), x, axis_name))
    (dx, dt, db), dy = _ring(n, axis_name, body, init, y, jnp.zeros_like(y))
    return dx, dy, dt, db

  core.defvjp(fwd, bwd)
  return core


def siglip_ring(img, txt, t_prime=SIGLIP_T_PRIME_INIT, bias=SIGLIP_BIAS_INIT, *,
                normalize: bool = True, axis_name: Optional[str] = None):
  """`siglip` inside `shard_map` with the texts rotating around the devices (ppermute).

  ::

    Lam = exp(t') * n(img) @ n(txt)^T + bias         [B, B], never formed: [b, b] blocks
    L = -(1/B) sum_ij log sigmoid(z_ij Lam_ij),  z_ij = +1 iff i == j

  Memory per device O(b * D + b^2) forward and backward (custom VJP that recomputes the
  blocks on a second ring pass); no all-gather.

  Args:
    img: [b, D] this device's image embeddings (global row order device-major).
    txt: [b, D] this device's text embeddings, row i pairs with img row i.
    t_prime: scalar log-temperature (init log 10), learnable.
    bias: scalar bias (init -10), learnable.
    normalize: L2-normalise inside (as `siglip`).
    axis_name: mesh axis inside `shard_map`; None (not under shard_map) falls back to
      the plain `siglip` on the arrays given.

  Returns:
    The global scalar loss (same value on every device), equal to `siglip` on the
    concatenated arrays, with equal gradients.

  Reference: Zhai et al. 2023, Algorithm 1 and Sec. 3.3 / Fig. 1 (chunked
  implementation); google-research/big_vision trainers/proj/image_text/siglip.py.

  Example:
    >>> x = jnp.eye(4)
    >>> siglip_ring(x, x).shape   # axis_name=None: the plain loss
    ()
  """
  if axis_name is None:
    return siglip(img, txt, t_prime, bias, normalize=normalize)
  C.check_scalar("t_prime", t_prime)
  C.check_scalar("bias", bias)
  x, y = _prep(img, txt, normalize)
  t = jnp.exp(jnp.reshape(jnp.asarray(t_prime, x.dtype), ()))
  bb = jnp.reshape(jnp.asarray(bias, x.dtype), ())
  n = _axis_size(axis_name)
  local = _siglip_core(axis_name, n)(_vary(x, axis_name), _vary(y, axis_name),
                                     _vary(t, axis_name), _vary(bb, axis_name))
  return -jax.lax.psum(local, axis_name) / (n * x.shape[0])


# ----------------------------------------------------------------------------- CLIP


def _lse_update(m, s, logits, axis):
  """Online logsumexp: folds `logits` (reduced over `axis`) into the running (max, sum)."""
  m_new = jnp.maximum(m, jnp.max(logits, axis=axis))
  s_new = s * jnp.exp(m - m_new) + jnp.sum(
      jnp.exp(logits - jnp.expand_dims(m_new, axis)), axis=axis)
  return m_new, s_new


def _clip_core(axis_name, n):
  """custom_vjp f(x [b,D], y [b,D], scale) -> this device's
  sum_i (lse_j l_ij - l_ii) + sum_j (lse_i l_ij - l_jj), l = scale * x @ y^T, over all i, j
  of the global batch (rows i local; columns j: this device's own texts).

  The row-wise logsumexp of each local image is accumulated locally during the forward
  ring; the column-wise one of each text travels with its chunk and is back at its owner
  after the ring. Both are residuals (O(b)).
  """

  def forward(x, y, scale):
    b = x.shape[0]

    def body(row, y_c, col, s):
      logits = scale * (x @ y_c.T)                       # [b_img, b_txt]
      return _lse_update(*row, logits, 1), _lse_update(*col, logits, 0)

    m0 = _vary(jnp.full((b,), -jnp.inf, x.dtype), axis_name)
    z0 = _zeros((b,), x, axis_name)
    (mr, sr), (mc, sc) = _ring(n, axis_name, body, (m0, z0), y, (m0, z0))
    # logsumexp = m + log s, kept as the pair: m is one of the logits, so the backward's
    # (l - m) - log s keeps full precision where a rounded m + log s would cost
    # ulp(|l|) (2e-4 relative at logits of 2000 in float32).
    lse_r, lse_c = (mr, jnp.log(sr)), (mc, jnp.log(sc))
    pos = scale * jnp.sum(x * y, axis=-1)
    return jnp.sum((mr - pos) + lse_r[1]) + jnp.sum((mc - pos) + lse_c[1]), (lse_r, lse_c)

  @jax.custom_vjp
  def core(x, y, scale):
    return forward(x, y, scale)[0]

  def fwd(x, y, scale):
    value, (lse_r, lse_c) = forward(x, y, scale)
    return value, (x, y, scale, lse_r, lse_c)

  def bwd(res, g):
    x, y, scale, lse_r, lse_c = res
    eye = jnp.eye(x.shape[0], dtype=x.dtype)

    def body(local, chunk, dy_c, s):
      dx, ds = local
      y_c, lse_c_c = chunk
      xy = x @ y_c.T
      logits = scale * xy
      # d/dl: the row and the column softmax, minus 1 per direction on the positives
      # (the diagonal of the device's own block, ring step 0), subtracted per element
      # before the matmuls as autodiff of the plain loss does (less cancellation).
      gl = (jnp.exp((logits - lse_r[0][:, None]) - lse_r[1][:, None])
            + jnp.exp((logits - lse_c_c[0][None, :]) - lse_c_c[1][None, :])
            - jnp.where(s == 0, 2.0, 0.0).astype(x.dtype) * eye)
      gl = g * gl
      dx = dx + scale * (gl @ y_c)
      dy_c = dy_c + scale * (gl.T @ x)
      return (dx, ds + jnp.sum(gl * xy)), dy_c

    init = (jnp.zeros_like(x), _zeros((), x, axis_name))
    (dx, ds), dy = _ring(n, axis_name, body, init, (y, lse_c), jnp.zeros_like(y))
    return dx, dy, ds

  core.defvjp(fwd, bwd)
  return core


def clip_ring(img, txt, logit_scale=CLIP_LOGIT_SCALE_INIT, *, normalize: bool = True,
              axis_name: Optional[str] = None):
  """`clip` inside `shard_map` with the texts rotating around the devices (ppermute).

  ::

    Lam = exp(logit_scale) * n(img) @ n(txt)^T       [B, B], never formed: [b, b] blocks
    L = 0.5 * ( mean_i CE(Lam[i, :], i) + mean_j CE(Lam[:, j], j) )

  Both logsumexps are accumulated online (running max and rescaled sum) over the ring:
  the image->text one locally, the text->image one on the rotating chunk. Memory per
  device O(b * D + b^2) forward and backward (custom VJP); no all-gather.

  Args:
    img: [b, D] this device's image embeddings (global row order device-major).
    txt: [b, D] this device's text embeddings, row i pairs with img row i.
    logit_scale: scalar LOG of the multiplier (init log(1/0.07)), learnable.
    normalize: L2-normalise inside (as `clip`).
    axis_name: mesh axis inside `shard_map`; None (not under shard_map) falls back to
      the plain `clip` on the arrays given.

  Returns:
    The global scalar loss (same value on every device), equal to `clip` on the
    concatenated arrays, with equal gradients.

  Reference: Radford et al. 2021, Fig. 3; openai/CLIP clip/model.py (CLIP.forward); the
  ring schedule as Zhai et al. 2023 Sec. 3.3.

  Example:
    >>> x = jnp.eye(4)
    >>> clip_ring(x, x).shape   # axis_name=None: the plain loss
    ()
  """
  if axis_name is None:
    return clip(img, txt, logit_scale, normalize=normalize)
  C.check_scalar("logit_scale", logit_scale)
  x, y = _prep(img, txt, normalize)
  scale = jnp.exp(jnp.reshape(jnp.asarray(logit_scale, x.dtype), ()))
  n = _axis_size(axis_name)
  local = _clip_core(axis_name, n)(_vary(x, axis_name), _vary(y, axis_name),
                                   _vary(scale, axis_name))
  return 0.5 * jax.lax.psum(local, axis_name) / (n * x.shape[0])
