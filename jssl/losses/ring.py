"""Ring (collective-permute) SigLIP and CLIP: no device holds the global texts or logits.

Inside `jax.shard_map` each device keeps its b local image rows; the b local text rows
travel around the devices with `jax.lax.ppermute`, one hop per step, so after n steps
every image block has met every text block (Zhai et al. 2023, "Sigmoid Loss for Language
Image Pre-Training", Sec. 3.3 and Fig. 1: the "chunked" implementation; big_vision's
trainers/proj/image_text/siglip.py all-gathers and leaves this as a TODO).

Inside each ring step the b local images are walked in row chunks of at most
`chunk_size` (a `lax.scan`), so only a [chunk, b] block of logits exists at a time, never
the [b, b] one. Memory per device is O(b * D + chunk * b) -- linear in b, flat in the
number of devices -- in the forward AND the backward pass: the loss is a
`jax.custom_vjp` whose backward rotates the texts once more, recomputes each block of
logits, accumulates the image gradient locally and carries the text gradient WITH the
rotating chunk, so that it arrives back at its owner after the full ring. Autodiff through
the loop would instead keep every step's text chunk (O(B * D)) and logits (O(B * b)).

Row chunks: k = ceil(b / chunk_size) chunks of c = ceil(b / k) <= chunk_size rows; when k
does not divide b the images are zero-padded to k * c rows (fewer than k pad rows) and
the pad rows are masked out of every sum (they contribute nothing, and get no gradient).
`chunk_size=None` or >= b is one [b, b] block per ring step, with no scan.

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
import numpy as np

from jssl.losses import _common as C
from jssl.losses.image_text import (CLIP_LOGIT_SCALE_INIT, SIGLIP_BIAS_INIT,
                                    SIGLIP_T_PRIME_INIT, _prep, clip, siglip)


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
  and XLA unrolls it, which costs a few blocks of logits more than n >= 3.)
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


def _check_chunk_size(chunk_size):
  if chunk_size is None:
    return
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


class _Rows:
  """The b local rows split into k chunks of c rows (k * c >= b; k * c - b < k pad rows).

  `split(a)` pads a [b, ...] array with zeros to [k, c, ...]; `join(a)` undoes it.
  `idx` [k, c] is each slot's local row index and `ok` [k, c] is False on pad rows.
  """

  def __init__(self, b, chunk_size):
    if chunk_size is None or chunk_size >= b:
      self.k, self.c = 1, b
    else:
      self.k = -(-b // int(chunk_size))
      self.c = -(-b // self.k)
    self.b = b
    # numpy constants: they are closed over by the custom_vjp's fwd and bwd traces.
    self.idx = np.arange(self.k * self.c).reshape(self.k, self.c)
    self.ok = self.idx < b

  def split(self, a):
    pad = self.k * self.c - self.b
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
    return a.reshape((self.k, self.c) + a.shape[1:])

  def join(self, a):
    return a.reshape((self.k * self.c,) + a.shape[2:])[:self.b]

  def scan(self, fn, carry, xs):
    """`lax.scan(fn, carry, xs)` over the k row chunks; k == 1: one direct call, no loop."""
    if self.k == 1:
      carry, ys = fn(carry, jax.tree.map(lambda a: a[0], xs))
      return carry, jax.tree.map(lambda a: a[None], ys)
    return jax.lax.scan(fn, carry, xs)


# ----------------------------------------------------------------------------- SigLIP


def _siglip_core(axis_name, n, rows):
  """custom_vjp f(x [b,D], y [b,D], t, bias) -> this device's sum_ij log sigmoid(z_ij l_ij).

  l = t * x @ y_chunk^T + bias over all chunks; z = +1 only on the diagonal of the
  device's own block (ring step 0). x, y already normalised; t = exp(t'). Each ring
  step walks the image rows in `rows` chunks: [c, b] blocks of logits.
  """
  cols = np.arange(rows.b)

  def block(xc, rc, y, t, bias, s):
    xy = xc @ y.T                                        # [c, b]
    logits = t * xy + bias
    diag = (rc[:, None] == cols[None, :]) & (s == 0)
    z = jnp.where(diag, 1.0, -1.0).astype(xc.dtype)
    return xy, logits, z

  def forward(x, y, t, bias):
    xs = (rows.split(x), rows.idx, rows.ok)

    def body(acc, y_c, moving, s):
      def chunk(acc, xs_c):
        xc, rc, ok = xs_c
        _, logits, z = block(xc, rc, y_c, t, bias, s)
        return acc + jnp.sum(jnp.where(ok[:, None], jax.nn.log_sigmoid(z * logits), 0.0)), None

      acc, _ = rows.scan(chunk, acc, xs)
      return acc, moving

    acc, _ = _ring(n, axis_name, body, _zeros((), x, axis_name), y, ())
    return acc

  @jax.custom_vjp
  def core(x, y, t, bias):
    return forward(x, y, t, bias)

  def fwd(x, y, t, bias):
    return forward(x, y, t, bias), (x, y, t, bias)

  def bwd(res, g):
    x, y, t, bias = res
    xs = (rows.split(x), rows.idx, rows.ok)

    def body(local, y_c, dy_c, s):
      dx, dt, db = local

      def chunk(carry, xs_c):
        dt, db, dy_c = carry
        xc, rc, ok = xs_c
        xy, logits, z = block(xc, rc, y_c, t, bias, s)
        # d log sigmoid(z l) / dl = z * sigmoid(-z l); pad rows: 0
        gl = jnp.where(ok[:, None], g * z * jax.nn.sigmoid(-z * logits), 0.0)   # [c, b]
        carry = (dt + jnp.sum(gl * xy), db + jnp.sum(gl), dy_c + t * (gl.T @ xc))
        return carry, t * (gl @ y_c)

      (dt, db, dy_c), dxs = rows.scan(chunk, (dt, db, dy_c), xs)
      return (dx + dxs, dt, db), dy_c

    init = (jnp.zeros_like(xs[0]), _zeros((), x, axis_name), _zeros((), x, axis_name))
    (dx, dt, db), dy = _ring(n, axis_name, body, init, y, jnp.zeros_like(y))
    return rows.join(dx), dy, dt, db

  core.defvjp(fwd, bwd)
  return core


def siglip_ring(img, txt, t_prime=SIGLIP_T_PRIME_INIT, bias=SIGLIP_BIAS_INIT, *,
                normalize: bool = True, axis_name: Optional[str] = None,
                chunk_size: Optional[int] = 1024):
  """`siglip` inside `shard_map` with the texts rotating around the devices (ppermute).

  ::

    Lam = exp(t') * n(img) @ n(txt)^T + bias         [B, B], never formed: [c, b] blocks
    L = -(1/B) sum_ij log sigmoid(z_ij Lam_ij),  z_ij = +1 iff i == j

  Memory per device O(b * D + c * b), c = rows per chunk <= chunk_size, forward and
  backward (custom VJP that recomputes the blocks on a second ring pass); no all-gather.

  Args:
    img: [b, D] this device's image embeddings (global row order device-major).
    txt: [b, D] this device's text embeddings, row i pairs with img row i.
    t_prime: scalar log-temperature (init log 10), learnable.
    bias: scalar bias (init -10), learnable.
    normalize: L2-normalise inside (as `siglip`).
    axis_name: mesh axis inside `shard_map`; None (not under shard_map) falls back to
      the plain `siglip` on the arrays given.
    chunk_size: most local image rows per block of logits in each ring step (b need not
      be a multiple: k = ceil(b / chunk_size) chunks of ceil(b / k) rows, zero-padded and
      masked); None or >= b: one [b, b] block per step.

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
  _check_chunk_size(chunk_size)
  if axis_name is None:
    return siglip(img, txt, t_prime, bias, normalize=normalize)
  C.check_scalar("t_prime", t_prime)
  C.check_scalar("bias", bias)
  x, y = _prep(img, txt, normalize)
  t = jnp.exp(jnp.reshape(jnp.asarray(t_prime, x.dtype), ()))
  bb = jnp.reshape(jnp.asarray(bias, x.dtype), ())
  n = _axis_size(axis_name)
  rows = _Rows(x.shape[0], chunk_size)
  local = _siglip_core(axis_name, n, rows)(_vary(x, axis_name), _vary(y, axis_name),
                                           _vary(t, axis_name), _vary(bb, axis_name))
  return -jax.lax.psum(local, axis_name) / (n * x.shape[0])


# ----------------------------------------------------------------------------- CLIP


def _lse_update(m, s, logits, axis):
  """Online logsumexp: folds `logits` (reduced over `axis`) into the running (max, sum)."""
  m_new = jnp.maximum(m, jnp.max(logits, axis=axis))
  s_new = s * jnp.exp(m - m_new) + jnp.sum(
      jnp.exp(logits - jnp.expand_dims(m_new, axis)), axis=axis)
  return m_new, s_new


def _clip_core(axis_name, n, rows):
  """custom_vjp f(u [b,D], y [b,D]) -> this device's
  sum_i (lse_j l_ij - l_ii) + sum_j (lse_i l_ij - l_jj), l = u @ y^T, over all i, j of
  the global batch (rows i local; columns j: this device's own texts); u = scale * x.

  The row-wise logsumexp of each local image is accumulated locally during the forward
  ring; the column-wise one of each text travels with its chunk, is folded over every
  row chunk of every device, and is back at its owner after the ring. Both are residuals
  (O(b)); the row one kept in the padded [k, c] layout of `rows`.

  The scale is applied to the images outside (autodiff takes its gradient), so a block
  of logits is one plain matmul, the same instruction in the forward and the backward:
  the backward's softmax needs the recomputed logits to equal the forward's bit for bit
  (see `forward`), which `scale * (x @ y^T)` does not guarantee (XLA may fold the scale
  into either matmul operand in one program and not the other).
  """
  cols = np.arange(rows.b)

  def forward(u, y):
    b = u.shape[0]

    def body(row, y_c, col, s):
      def chunk(col, xs_c):
        uc, ok, m_r, s_r = xs_c
        logits = uc @ y_c.T                              # [c, b_txt]
        row_c = _lse_update(m_r, s_r, logits, 1)
        col = _lse_update(*col, jnp.where(ok[:, None], logits, -jnp.inf), 0)
        return col, row_c

      col, row = rows.scan(chunk, col, (rows.split(u), rows.ok) + row)
      return row, col

    m_row = _vary(jnp.full((rows.k, rows.c), -jnp.inf, u.dtype), axis_name)
    m_col = _vary(jnp.full((b,), -jnp.inf, u.dtype), axis_name)
    (mr, sr), (mc, sc) = _ring(n, axis_name, body,
                               (m_row, _zeros((rows.k, rows.c), u, axis_name)), y,
                               (m_col, _zeros((b,), u, axis_name)))
    # logsumexp = m + log s, kept as the pair: m is one of the logits, so the backward's
    # (l - m) - log s keeps full precision where a rounded m + log s would cost
    # ulp(|l|) (2e-4 relative at logits of 2000 in float32).
    lse_r, lse_c = (mr, jnp.log(sr)), (mc, jnp.log(sc))
    pos = jnp.sum(u * y, axis=-1)
    value = (jnp.sum((rows.join(mr) - pos) + rows.join(lse_r[1]))
             + jnp.sum((mc - pos) + lse_c[1]))
    return value, (lse_r, lse_c)

  @jax.custom_vjp
  def core(u, y):
    return forward(u, y)[0]

  def fwd(u, y):
    value, (lse_r, lse_c) = forward(u, y)
    return value, (u, y, lse_r, lse_c)

  def bwd(res, g):
    u, y, lse_r, lse_c = res
    xs = (rows.split(u), rows.idx, rows.ok) + lse_r

    def body(du, chunk_, dy_c, s):
      y_c, (mc, lc) = chunk_

      def chunk(dy_c, xs_c):
        uc, rc, ok, m_r, l_r = xs_c
        logits = uc @ y_c.T
        # d/dl: the row and the column softmax, minus 1 per direction on the positives
        # (the diagonal of the device's own block, ring step 0), subtracted per element
        # before the matmuls as autodiff of the plain loss does (less cancellation).
        diag = (rc[:, None] == cols[None, :]) & (s == 0)
        gl = (jnp.exp((logits - m_r[:, None]) - l_r[:, None])
              + jnp.exp((logits - mc[None, :]) - lc[None, :])
              - jnp.where(diag, 2.0, 0.0).astype(u.dtype))
        gl = jnp.where(ok[:, None], g * gl, 0.0)          # pad rows: 0
        return dy_c + gl.T @ uc, gl @ y_c

      dy_c, dus = rows.scan(chunk, dy_c, xs)
      return du + dus, dy_c

    du, dy = _ring(n, axis_name, body, jnp.zeros_like(xs[0]), (y, lse_c), jnp.zeros_like(y))
    return rows.join(du), dy

  core.defvjp(fwd, bwd)
  return core


def clip_ring(img, txt, logit_scale=CLIP_LOGIT_SCALE_INIT, *, normalize: bool = True,
              axis_name: Optional[str] = None, chunk_size: Optional[int] = 1024):
  """`clip` inside `shard_map` with the texts rotating around the devices (ppermute).

  ::

    Lam = exp(logit_scale) * n(img) @ n(txt)^T       [B, B], never formed: [c, b] blocks
    L = 0.5 * ( mean_i CE(Lam[i, :], i) + mean_j CE(Lam[:, j], j) )

  Both logsumexps are accumulated online (running max and rescaled sum), exactly, over
  the ring and the row chunks: the image->text one locally, the text->image one on the
  rotating text chunk (folded over every row chunk of every device). Memory per device
  O(b * D + c * b), c = rows per chunk <= chunk_size, forward and backward (custom VJP);
  no all-gather.

  Args:
    img: [b, D] this device's image embeddings (global row order device-major).
    txt: [b, D] this device's text embeddings, row i pairs with img row i.
    logit_scale: scalar LOG of the multiplier (init log(1/0.07)), learnable.
    normalize: L2-normalise inside (as `clip`).
    axis_name: mesh axis inside `shard_map`; None (not under shard_map) falls back to
      the plain `clip` on the arrays given.
    chunk_size: most local image rows per block of logits in each ring step (as
      `siglip_ring`); None or >= b: one [b, b] block per step.

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
  _check_chunk_size(chunk_size)
  if axis_name is None:
    return clip(img, txt, logit_scale, normalize=normalize)
  C.check_scalar("logit_scale", logit_scale)
  x, y = _prep(img, txt, normalize)
  scale = jnp.exp(jnp.reshape(jnp.asarray(logit_scale, x.dtype), ()))
  n = _axis_size(axis_name)
  rows = _Rows(x.shape[0], chunk_size)
  local = _clip_core(axis_name, n, rows)(_vary(scale, axis_name) * _vary(x, axis_name),
                                         _vary(y, axis_name))
  return 0.5 * jax.lax.psum(local, axis_name) / (n * x.shape[0])
