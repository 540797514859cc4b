"""Keyed, pure jnp image augmentations for self-supervised views.

Every function takes ONE image `[H, W, C]` float32 in [0, 1] (and a PRNG `key`
where random); callers batch them with `jax.random.split(key, B)` + `jax.vmap`,
so every example draws its own parameters, and all shapes are static so the
functions run inside the jitted train step.

References:
  * SimCLR: Chen et al. 2020, "A Simple Framework for Contrastive Learning of
    Visual Representations", Appendix A (data augmentation details), and
    google-research/simclr `data_util.py` (`random_crop_with_resize`,
    `color_jitter`, `to_grayscale`, `random_blur`).
  * BYOL: Grill et al. 2020, Table 6 / Appendix B, and deepmind-research
    `byol/utils/augmentations.py` (asymmetric blur and solarize).
  * torchvision `transforms.RandomResizedCrop` / `ColorJitter` for the sampling
    semantics (area + log-ratio draws, centre-crop fallback, factor ranges).
  * Image ops themselves come from dm-pix where it has them (contrast,
    saturation, hue, grayscale, solarize, flip; blur is re-written as matmuls,
    see `blur`); these match
    `tf.image.adjust_*` (tested against `jssl.data.tf_ops`).
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import dm_pix as pix
import jax
import jax.numpy as jnp

Size = Union[int, Tuple[int, int]]


def _pair(size: Size) -> Tuple[int, int]:
  if isinstance(size, int):
    return size, size
  h, w = size
  return int(h), int(w)


def _apply_with_prob(key, p: float, fn, image):
  """Returns `fn(image)` with probability `p`, else `image` (SimCLR `random_apply`).

  A `jnp.where` select instead of `lax.cond`: under `vmap` a cond becomes a
  select anyway, and the select keeps p=0 / p=1 exact.
  """
  if p <= 0.0:
    return image
  if p >= 1.0:
    return fn(image)
  return jnp.where(jax.random.uniform(key) < p, fn(image), image)


def split(key, num: int):
  """`jax.random.split(key, num)`, drawn as the next power of two and sliced.

  Under `vmap`, XLA:CPU compiles threefry for non-power-of-two counts several
  times slower (measured: 6-way split ~3x, 10 uniforms ~4x); the slice is free.
  """
  return jax.random.split(key, 1 << max(0, num - 1).bit_length())[:num]


def to_float(image_uint8: jax.Array) -> jax.Array:
  """uint8 [..., H, W, C] in [0, 255] -> float32 in [0, 1]."""
  return jnp.asarray(image_uint8, jnp.float32) / 255.0


# ---------------------------------------------------------------------------
# Geometry.
# ---------------------------------------------------------------------------
def sample_crop_box(key, height: int, width: int, *,
                    scale: Sequence[float] = (0.08, 1.0),
                    ratio: Sequence[float] = (3 / 4, 4 / 3),
                    num_attempts: int = 8) -> jax.Array:
  """Samples a crop box `[top, left, h, w]` (float32, integer valued).

  torchvision `RandomResizedCrop.get_params` semantics: area fraction ~
  U(scale), log aspect ratio (w/h) ~ U(log ratio), sides rounded to pixels,
  position uniform; the first of `num_attempts` draws that fits the image is
  taken (all drawn at once, so shapes stay static). If none fits, fall back to
  the largest centred crop whose aspect ratio is clamped into `ratio`.
  8 attempts rather than torchvision's 10: a power of two compiles much faster
  under vmap (see `split`), and all 8 missing is vanishingly rare for the
  usual ranges.
  (SimCLR `distorted_bounding_box_crop` instead falls back to the whole image.)
  """
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = float(height * width)
  target = area * jax.random.uniform(
      k_area, (num_attempts,), minval=scale[0], maxval=scale[1])
  log_r = jax.random.uniform(k_ratio, (num_attempts,), minval=jnp.log(ratio[0]),
                             maxval=jnp.log(ratio[1]))
  aspect = jnp.exp(log_r)
  w = jnp.round(jnp.sqrt(target * aspect))
  h = jnp.round(jnp.sqrt(target / aspect))
  ok = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
  first = jnp.argmax(ok)  # index of first valid draw (0 if none, masked below)
  h, w = h[first], w[first]
  top = jnp.floor(jax.random.uniform(k_top) * (height - h + 1))
  left = jnp.floor(jax.random.uniform(k_left) * (width - w + 1))

  # Fallback: centre crop with the aspect ratio clamped into range (torchvision).
  in_ratio = width / height
  if in_ratio < min(ratio):
    fw, fh = width, round(width / min(ratio))
  elif in_ratio > max(ratio):
    fh, fw = height, round(height * max(ratio))
  else:
    fh, fw = height, width
  fallback = jnp.array([(height - fh) // 2, (width - fw) // 2, fh, fw], jnp.float32)
  box = jnp.stack([top, left, h, w]).astype(jnp.float32)
  return jnp.where(jnp.any(ok), box, fallback)


def crop_and_resize(image: jax.Array, box: jax.Array, size: Size, *,
                    method: str = "linear", antialias: bool = True) -> jax.Array:
  """Resizes the region `box = [top, left, h, w]` of `image` to `size`.

  One `jax.image.scale_and_translate` call: output pixel centres map into the
  box, so the output shape is static while the box is traced. With
  `antialias=True` downscaling low-pass filters like `tf.image.resize(...,
  antialias=True)` / PIL; pixels just outside the box may contribute at its edge.
  """
  out_h, out_w = _pair(size)
  top, left, h, w = box[0], box[1], box[2], box[3]
  scale = jnp.stack([out_h / h, out_w / w])
  translation = -jnp.stack([top, left]) * scale
  return jax.image.scale_and_translate(
      image, (out_h, out_w, image.shape[-1]), (0, 1), scale, translation,
      method=method, antialias=antialias)


def random_resized_crop(key, image: jax.Array, *, size: Size,
                        scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3),
                        num_attempts: int = 8) -> jax.Array:
  """Inception-style random resized crop (SimCLR App. A, "random crop and resize").

  Args:
    key: PRNG key.
    image: `[H, W, C]` float.
    size: output side, int or `(h, w)`.
    scale: range of the crop area as a fraction of the image area (0.08-1 in SimCLR).
    ratio: range of the crop aspect ratio w/h (3/4-4/3 in SimCLR).
    num_attempts: draws before the centre-crop fallback (10 in torchvision).

  Returns:
    `[h, w, C]` float32, bilinear resized.
  """
  height, width = image.shape[0], image.shape[1]
  box = sample_crop_box(key, height, width, scale=scale, ratio=ratio,
                        num_attempts=num_attempts)
  return crop_and_resize(image.astype(jnp.float32), box, size)


def random_flip(key, image: jax.Array, *, p: float = 0.5) -> jax.Array:
  """Horizontal flip with probability `p` (SimCLR App. A; dm-pix `flip_left_right`)."""
  return _apply_with_prob(key, p, pix.flip_left_right, image)


# ---------------------------------------------------------------------------
# Colour.
# ---------------------------------------------------------------------------
def adjust_brightness(image: jax.Array, factor) -> jax.Array:
  """Multiplies intensities by `factor` (torchvision / SimCLR v2 `random_brightness`).

  Written here because dm-pix's `adjust_brightness` is the additive TF variant;
  SimCLR (impl 'simclrv2') and torchvision scale multiplicatively.
  """
  return image * jnp.asarray(factor, image.dtype)


def adjust_contrast(image: jax.Array, factor) -> jax.Array:
  """Scales the distance to the per-channel mean (`tf.image.adjust_contrast`).

  torchvision blends with the grayscale mean instead; we follow SimCLR's TF code.
  """
  return pix.adjust_contrast(image, factor)


def adjust_saturation(image: jax.Array, factor) -> jax.Array:
  """Scales HSV saturation, clipped to [0, 1] (`tf.image.adjust_saturation`)."""
  return pix.adjust_saturation(image, factor)


def adjust_hue(image: jax.Array, delta) -> jax.Array:
  """Rotates the HSV hue by `delta` (fraction of the circle; `tf.image.adjust_hue`)."""
  return pix.adjust_hue(image, delta)


def to_grayscale(image: jax.Array) -> jax.Array:
  """Rec. 601 luma tiled to 3 channels (SimCLR `to_grayscale(keep_channels=True)`)."""
  return pix.rgb_to_grayscale(image, keep_dims=True)


def color_jitter(key, image: jax.Array, *, brightness: float, contrast: float,
                 saturation: float, hue: float, p: float = 1.0,
                 random_order: bool = True) -> jax.Array:
  """Random colour jitter, applied as a whole with probability `p`.

  SimCLR App. A (colour distortion of strength s: 0.8s, 0.8s, 0.8s, 0.2s, p=0.8)
  and torchvision `ColorJitter` factor ranges: brightness, contrast and
  saturation factors ~ U[max(0, 1 - x), 1 + x], hue delta ~ U[-hue, hue].
  The four ops run in a random order per example when `random_order` (SimCLR
  `color_jitter_rand`), clipping to [0, 1] after each one as SimCLR does.
  Zero-strength ops are skipped at trace time.
  """
  k_apply, k_perm, k_b, k_c, k_s, k_h = split(key, 6)

  def factor(k, x):
    return jax.random.uniform(k, minval=max(0.0, 1.0 - x), maxval=1.0 + x)

  ops = []
  if brightness > 0:
    ops.append(lambda im: adjust_brightness(im, factor(k_b, brightness)))
  if contrast > 0:
    ops.append(lambda im: adjust_contrast(im, factor(k_c, contrast)))
  if saturation > 0:
    ops.append(lambda im: adjust_saturation(im, factor(k_s, saturation)))
  if hue > 0:
    ops.append(lambda im: adjust_hue(im, jax.random.uniform(k_h, minval=-hue, maxval=hue)))
  if not ops:
    return image
  ops = [lambda im, op=op: jnp.clip(op(im), 0.0, 1.0) for op in ops]

  def jitter(im):
    if not random_order or len(ops) == 1:
      for op in ops:
        im = op(im)
      return im
    order = jax.random.permutation(k_perm, len(ops))
    # A loop body traced once (4 branches) instead of 4 unrolled switches: under
    # vmap every switch computes all branches, so this keeps compile time low.
    return jax.lax.fori_loop(
        0, len(ops), lambda i, x: jax.lax.switch(order[i], ops, x), im)

  return _apply_with_prob(k_apply, p, jitter, image)


def random_grayscale(key, image: jax.Array, *, p: float = 0.2) -> jax.Array:
  """Colour drop with probability `p` (SimCLR App. A: p=0.2)."""
  return _apply_with_prob(key, p, to_grayscale, image)


# ---------------------------------------------------------------------------
# Blur, solarize, normalise.
# ---------------------------------------------------------------------------
def blur_kernel_size(side: int, fraction: float = 0.1) -> int:
  """Kernel side as a fraction of the image side (SimCLR: `height // 10`).

  dm-pix rounds it to the next odd size (2 * (k // 2) + 1), as SimCLR does.
  """
  return max(1, int(side * fraction))


def _blur_matrix(n: int, sigma, radius: int) -> jax.Array:
  """[n, n] banded matrix: 1-D Gaussian (normalised over [-radius, radius]), zero padding."""
  d = jnp.arange(n)[None, :] - jnp.arange(n)[:, None]
  taps = jnp.exp(-(jnp.arange(-radius, radius + 1) ** 2) / (2.0 * sigma**2))
  g = jnp.exp(-(d**2) / (2.0 * sigma**2)) / jnp.sum(taps)
  return jnp.where(jnp.abs(d) <= radius, g, 0.0)


def blur(image: jax.Array, sigma, kernel_size: int) -> jax.Array:
  """Separable Gaussian blur with "SAME" zero padding (= `pix.gaussian_blur`).

  Written as two small matmuls instead of dm-pix's depthwise convolution: a
  vmapped conv with per-example sigma needs a batch->channel reshape that
  Explicit-axes sharding rejects (and is a slow grouped conv on CPU); the
  matmul form is sharding-friendly. Tested equal to `pix.gaussian_blur`.
  """
  radius = int(kernel_size / 2)  # dm-pix / SimCLR: odd size 2 * radius + 1
  ky = _blur_matrix(image.shape[0], sigma, radius)
  kx = _blur_matrix(image.shape[1], sigma, radius)
  return jnp.einsum("oh,hwc,pw->opc", ky, image, kx)


def gaussian_blur(key, image: jax.Array, *, p: float = 0.5,
                  sigma: Sequence[float] = (0.1, 2.0),
                  kernel_size: int | None = None) -> jax.Array:
  """Gaussian blur with sigma ~ U(sigma), applied with probability `p`.

  SimCLR App. A (p=0.5, sigma in [0.1, 2.0], kernel 10% of the side, ImageNet
  only); BYOL uses p=1.0 on view 1 and 0.1 on view 2. Zero ("SAME") padding at
  the borders, as in both references' depthwise convolution.
  """
  k_apply, k_sigma = jax.random.split(key)
  if kernel_size is None:
    kernel_size = blur_kernel_size(image.shape[0])
  s = jax.random.uniform(k_sigma, minval=sigma[0], maxval=sigma[1])
  return _apply_with_prob(k_apply, p, lambda im: blur(im, s, kernel_size), image)


def solarize(key, image: jax.Array, *, p: float = 0.2,
             threshold: float = 0.5) -> jax.Array:
  """Inverts values >= `threshold` with probability `p` (BYOL: p=0 / 0.2, t=0.5)."""
  return _apply_with_prob(key, p, lambda im: pix.solarize(im, threshold), image)


def normalize(image: jax.Array, *, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """Per-channel `(image - mean) / std`, statistics given on the [0, 1] scale."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (image - mean) / std
