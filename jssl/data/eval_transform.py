"""The deterministic evaluation / inference transform (resize, centre crop, normalise).

`eval_preprocess` is what every probe and `jssl.export` apply to an image
before the encoder; `jssl.export` ships it with the encoder, so it is pure jnp.
Its tf twin (`jssl.data.tf_ops`) and the host version (`jssl.data.host`) share
`eval_resize_shape`, so the three agree on the geometry.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import jax

from jssl.data import augment


def eval_resize_shape(height: int, width: int, size: int,
                      crop_fraction: float = 1.0) -> Tuple[int, int]:
  """Shape after resizing the shorter side to `round(size / crop_fraction)`.

  The longer side scales proportionally, truncated (torchvision `Resize(int)`).
  """
  short = int(round(size / crop_fraction))
  if height <= width:
    return short, max(short, int(short * width / height))
  return max(short, int(short * height / width)), short


def eval_preprocess(images: jax.Array, *, size: int, mean: Sequence[float],
                    std: Sequence[float], crop_fraction: float = 1.0) -> jax.Array:
  """Deterministic inference transform: resize, centre crop, normalise.

  The standard evaluation protocol (SimCLR `preprocess_for_eval`; torchvision
  `Resize(size / crop_fraction)` + `CenterCrop(size)`, crop_fraction 0.875 on
  ImageNet, 1.0 on CIFAR): the shorter side is bilinearly resized (antialiased)
  to `round(size / crop_fraction)`, the central `size x size` window is kept,
  and channels are normalised with `(x / 255 - mean) / std`. Pure jnp, so it
  runs inside jit and ships with an exported encoder.

  Args:
    images: uint8 (or float in [0, 255]) `[B, H, W, C]`, or one `[H, W, C]`.
    size: output side.
    mean, std: per-channel statistics on the [0, 1] scale.
    crop_fraction: fraction of the resized shorter side kept by the crop.

  Returns:
    float32 `[B, size, size, C]` (or `[size, size, C]`).
  """
  single = images.ndim == 3
  x = augment.to_float(images[None] if single else images)
  b, h, w, c = x.shape
  rh, rw = eval_resize_shape(h, w, size, crop_fraction)
  if (rh, rw) != (h, w):
    x = jax.image.resize(x, (b, rh, rw, c), method="linear", antialias=True)
  top, left = (rh - size) // 2, (rw - size) // 2
  x = x[:, top:top + size, left:left + size, :]
  x = augment.normalize(x, mean=mean, std=std)
  return x[0] if single else x
