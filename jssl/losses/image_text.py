"""Image-text losses: CLIP symmetric softmax and SigLIP pairwise sigmoid."""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C

CLIP_LOGIT_SCALE_INIT = math.log(1 / 0.07)   # openai/CLIP model.py: log of the multiplier
SIGLIP_T_PRIME_INIT = math.log(10.0)         # big_vision two_towers.py: t = exp(t') = 10
SIGLIP_BIAS_INIT = -10.0


def _prep(img, txt, normalize):
  C.check_same("img", img, "txt", txt, 2, "[B, D]")
  x, y = C.upcast(img, txt)
  if normalize:
    x, y = C.l2_normalize(x), C.l2_normalize(y)
  return x, y


def clip(img, txt, logit_scale=CLIP_LOGIT_SCALE_INIT, *, normalize: bool = True,
         axis_name: Optional[str] = None):
  """CLIP symmetric cross-entropy with a learnable log logit scale.

  ::

    Lam = exp(logit_scale) * n(img) @ n(txt)^T                     [B, B]
    L = 0.5 * ( mean_i CE(Lam[i, :], i) + mean_j CE(Lam[:, j], j) )

  `logit_scale` is the LOG of the multiplier (init log(1/0.07)); the gradient is
  w.r.t. it. The clamp of the multiplier at 100 is an optimiser-side step, not here.

  Args:
    img: [B, D] image embeddings.
    txt: [B, D] text embeddings, row i pairs with img row i.
    logit_scale: scalar (learnable; positional so jax.grad can take it).
    normalize: L2-normalise rows inside (openai CLIP does).
    axis_name: mesh axis inside `shard_map`: each device scores its rows against the
      gathered other modality, both directions, global mean.

  Returns:
    Scalar loss.

  Reference: Radford et al. 2021, "Learning Transferable Visual Models From Natural
  Language Supervision", Fig. 3; openai/CLIP clip/model.py (CLIP.forward).

  Example:
    >>> x = jnp.eye(4)
    >>> clip(x, x).shape
    ()
  """
  C.check_scalar("logit_scale", logit_scale)
  x, y = _prep(img, txt, normalize)
  scale = jnp.exp(jnp.reshape(jnp.asarray(logit_scale, x.dtype), ()))
  gx, gy = C.all_gather(x, axis_name), C.all_gather(y, axis_name)
  labels = C.shard_offset(x.shape[0], axis_name) + jnp.arange(x.shape[0])

  def ce(rows, cols):
    logits = scale * rows @ cols.T
    pos = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return jnp.sum(jax.nn.logsumexp(logits, axis=-1) - pos)

  total = C.psum(ce(x, gy) + ce(y, gx), axis_name)
  return 0.5 * total / gx.shape[0]


def siglip(img, txt, t_prime=SIGLIP_T_PRIME_INIT, bias=SIGLIP_BIAS_INIT, *,
           normalize: bool = True, axis_name: Optional[str] = None):
  """SigLIP pairwise sigmoid loss with learnable log-temperature and bias.

  ::

    Lam = exp(t') * n(img) @ n(txt)^T + bias           [B, B]
    z_ij = +1 if i == j else -1
    L = -(1/B) sum_i sum_j log sigmoid(z_ij Lam_ij)     (divided by B, NOT B^2)

  Args:
    img: [B, D] image embeddings.
    txt: [B, D] text embeddings.
    t_prime: scalar log-temperature (init log 10), learnable.
    bias: scalar bias (init -10), learnable.
    normalize: L2-normalise inside (big_vision divides by ||x|| + 1e-8; here the
      exact norm guarded by max(||x||, 1e-12)).
    axis_name: mesh axis inside `shard_map` (local images vs gathered texts). See
      `siglip_chunked` for the variant whose memory is linear in B.

  Returns:
    Scalar loss.

  Reference: Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training",
  Algorithm 1; google-research/big_vision trainers/proj/image_text/siglip.py.

  Example:
    >>> x = jnp.eye(4)
    >>> siglip(x, x).shape
    ()
  """
  C.check_scalar("t_prime", t_prime)
  C.check_scalar("bias", bias)
  x, y = _prep(img, txt, normalize)
  t = jnp.exp(jnp.reshape(jnp.asarray(t_prime, x.dtype), ()))
  b = jnp.reshape(jnp.asarray(bias, x.dtype), ())
  gy = C.all_gather(y, axis_name)
  rows = C.shard_offset(x.shape[0], axis_name) + jnp.arange(x.shape[0])
  logits = t * x @ gy.T + b
  z = jnp.where(rows[:, None] == jnp.arange(gy.shape[0])[None, :], 1.0, -1.0)
  total = C.psum(jnp.sum(jax.nn.log_sigmoid(z * logits)), axis_name)
  return -total / gy.shape[0]
