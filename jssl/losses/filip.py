"""FILIP token-wise late interaction and the multi-positive CLIP cross-entropy.

FILIP (Yao et al. 2021, "FILIP: Fine-grained Interactive Language-Image
Pre-Training", ICLR 2022, Sec. 3.1.1, eqs. 3-5): instead of one embedding per
image and text, every image patch token and every text token is embedded; the
similarity of image i and text j is

  s^I_ij = (1/n1) sum_k max_{r valid} u_ik . v_jr     (image-to-text, eq. 4)
  s^T_ij = (1/|valid_j|) sum_{r valid} max_k u_ik . v_jr   (text-to-image, eq. 5)

with u, v the L2-normalised tokens; padding text tokens are excluded from both
the max and the mean. The loss is CLIP's symmetric cross-entropy (eq. 3) on
exp(logit_scale) * s^I (softmax over texts) and exp(logit_scale) * s^T
(softmax over images, i.e. down the columns). No official code is published;
the parity fixture re-states the paper (tests/losses, float64).

Memory is O(B * M * n1 * n2) for B images, M texts: the paper reduces it with
fewer tokens and fp16 (Sec. 3.1.2); here it is meant for small batches.

`symmetric_ce` is the multi-positive CLIP cross-entropy shared with
`jssl.methods.clip`: K captions per image, text t = i*K + k belongs to image i.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl.losses import _common as C
from jssl.losses.image_text import CLIP_LOGIT_SCALE_INIT


def symmetric_ce(logits_i2t, logits_t2i, captions_per_image: int = 1):
  """CLIP's symmetric cross-entropy with K positives per image.

  ::

    image i (rows, softmax over all M = B*K texts), its K captions positive:
      l_i = logsumexp_t logits_i2t[i, t] - (1/K) sum_k logits_i2t[i, i*K + k]
    text t (columns, softmax over the B images), image t // K positive:
      l_t = logsumexp_i logits_t2i[i, t] - logits_t2i[t // K, t]
    L = 0.5 * (mean_i l_i + mean_t l_t)

  The image-to-text term is the multi-positive InfoNCE of SupCon's L_out
  (Khosla et al. 2020, eq. 2): the K positives averaged, each against the
  same denominator over all texts. K = 1 is `jssl.losses.clip` exactly.

  Args:
    logits_i2t, logits_t2i: `[B, M]` logits, rows images, columns texts
      (the same matrix for CLIP; FILIP's s^I and s^T differ).
    captions_per_image: K; M must equal B * K.

  Returns:
    Scalar loss.
  """
  C.check_same("logits_i2t", logits_i2t, "logits_t2i", logits_t2i, 2, "[B, M]")
  b, m = logits_i2t.shape
  k = int(captions_per_image)
  if k < 1 or m != b * k:
    raise ValueError(f"logits [B, M] need M = B * captions_per_image; got B={b}, M={m}, "
                     f"captions_per_image={k}")
  x, y = C.upcast(logits_i2t, logits_t2i)
  pos_i = jnp.mean(x.reshape(b, b, k)[jnp.arange(b), jnp.arange(b)], axis=-1)   # [B]
  l_i2t = jax.nn.logsumexp(x, axis=1) - pos_i
  owner = jnp.arange(m) // k
  pos_t = y[owner, jnp.arange(m)]                                              # [M]
  l_t2i = jax.nn.logsumexp(y, axis=0) - pos_t
  return 0.5 * (jnp.mean(l_i2t) + jnp.mean(l_t2i))


def filip_similarities(img, txt, txt_mask, *, normalize: bool = True):
  """FILIP's token-wise similarities (eqs. 4, 5).

  Args:
    img: `[B, n1, D]` image tokens.
    txt: `[M, n2, D]` text tokens.
    txt_mask: `[M, n2]` bool, True at real (non-pad) text tokens; every row
      needs at least one.
    normalize: L2-normalise every token inside (FILIP does).

  Returns:
    `(s_img, s_txt)`, each `[B, M]` (rows image i, columns text j).
  """
  C.check_rank("img", img, 3, "[B, n1, D]")
  C.check_rank("txt", txt, 3, "[M, n2, D]")
  if img.shape[-1] != txt.shape[-1]:
    raise ValueError(f"img and txt tokens need one width D, got img {img.shape}, "
                     f"txt {txt.shape}")
  if txt_mask.shape != txt.shape[:2]:
    raise ValueError(f"txt_mask must be [M, n2] = {txt.shape[:2]}, got {txt_mask.shape}")
  u, v = C.upcast(img, txt)
  if normalize:
    u, v = C.l2_normalize(u), C.l2_normalize(v)
  mask = txt_mask.astype(bool)
  sim = jnp.einsum("ikd,jrd->ijkr", u, v)                       # [B, M, n1, n2]
  low = jnp.finfo(sim.dtype).min
  # Image-to-text: each image token's best valid text token, averaged over
  # image tokens. `where` gives the padding exactly zero gradient.
  s_img = jnp.mean(jnp.max(jnp.where(mask[None, :, None, :], sim, low), axis=-1), axis=-1)
  # Text-to-image: each valid text token's best image token, averaged over the
  # valid text tokens.
  best = jnp.max(sim, axis=2)                                    # [B, M, n2]
  count = jnp.maximum(jnp.sum(mask, axis=-1), 1).astype(sim.dtype)   # [M]
  s_txt = jnp.sum(jnp.where(mask[None], best, 0.0), axis=-1) / count[None]
  return s_img, s_txt


def filip(img, txt, txt_mask, logit_scale=CLIP_LOGIT_SCALE_INIT, *,
          captions_per_image: int = 1, normalize: bool = True):
  """FILIP loss: `symmetric_ce` on exp(logit_scale) * (s^I, s^T).

  Args:
    img: `[B, n1, D]` image tokens (projected patch tokens).
    txt: `[B*K, n2, D]` text tokens (projected), caption t of image t // K.
    txt_mask: `[B*K, n2]` bool, True at non-pad text tokens.
    logit_scale: scalar log of the multiplier (init log(1/0.07)), learnable.
    captions_per_image: K.
    normalize: L2-normalise the tokens inside.

  Returns:
    Scalar loss.

  Reference: Yao et al. 2021, Sec. 3.1.1, eqs. 3-5 (no official code).

  Example:
    >>> x = jnp.ones((2, 3, 4)); m = jnp.ones((2, 5), bool)
    >>> filip(x, jnp.ones((2, 5, 4)), m).shape
    ()
  """
  C.check_scalar("logit_scale", logit_scale)
  s_img, s_txt = filip_similarities(img, txt, txt_mask, normalize=normalize)
  scale = jnp.exp(jnp.reshape(jnp.asarray(logit_scale, s_img.dtype), ()))
  return symmetric_ce(scale * s_img, scale * s_txt, captions_per_image)
