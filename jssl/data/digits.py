"""In-memory array datasets; scikit-learn's 8x8 digits is the offline quickstart.

`load_digits` turns scikit-learn's bundled handwritten digits (UCI optdigits
test set, 1797 images of 8x8 pixels with values 0..16, ten classes; no
download) into uint8 RGB images resized to `size`, with a fixed stratified
train/test split. `load_arrays(name)` is the generic entry point used by configs.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np


class ArrayDataset(NamedTuple):
  train_images: np.ndarray  # uint8 [N, H, W, C]
  train_labels: np.ndarray  # int32 [N]
  test_images: np.ndarray   # uint8 [N', H, W, C]
  test_labels: np.ndarray   # int32 [N']
  mean: Tuple[float, ...]   # per-channel train mean on the [0, 1] scale
  std: Tuple[float, ...]    # per-channel train std on the [0, 1] scale
  num_classes: int


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of a triangle-kernel resize with half-pixel centres.

  The kernel is widened by the scale when shrinking (antialiasing) and each
  row is normalised over the taps inside the image, which is what
  `jax.image.resize(..., "linear", antialias=True)` computes.
  """
  scale = n_out / n_in
  support = max(1.0, 1.0 / scale)
  centres = (np.arange(n_out) + 0.5) / scale - 0.5          # in input pixels
  dist = np.abs(centres[:, None] - np.arange(n_in)[None, :]) / support
  w = np.maximum(0.0, 1.0 - dist)
  return w / w.sum(axis=1, keepdims=True)


def _resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
  """float [N, h, w] -> float [N, size, size], bilinear (half-pixel centres).

  NumPy, not jax: configs load the digits statistics while flags are parsed,
  before `jax.distributed.initialize` may run, so this must not start a JAX
  backend.
  """
  n, h, w = images.shape
  if (h, w) == (size, size):
    return images
  wy, wx = _linear_weights(h, size), _linear_weights(w, size)
  return np.einsum("yh,nhw,xw->nyx", wy, images.astype(np.float64), wx).astype(np.float32)


def load_digits(size: int = 16, *, test_size: int = 450,
                seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """scikit-learn digits as uint8 RGB `[N, size, size, 3]` with a stratified split.

  Pixel values 0..16 map linearly to 0..255; the grey image is tiled to 3
  channels so RGB recipes (colour jitter, grayscale) apply unchanged.

  Args:
    size: output side in pixels (bilinear resize from 8).
    test_size: held-out examples (450 -> 1347 train / 450 test).
    seed: split seed (fixed split by default).

  Returns:
    `(train_images, train_labels, test_images, test_labels)`: uint8 images,
    int32 labels in [0, 10).
  """
  from sklearn import datasets, model_selection  # pylint: disable=g-import-not-at-top

  raw = datasets.load_digits()
  images = raw.images.astype(np.float32) * (255.0 / 16.0)  # [1797, 8, 8]
  images = _resize_bilinear(images, size)
  images = np.clip(np.round(images), 0, 255).astype(np.uint8)
  images = np.repeat(images[..., None], 3, axis=-1)
  labels = raw.target.astype(np.int32)
  tr_x, te_x, tr_y, te_y = model_selection.train_test_split(
      images, labels, test_size=test_size, stratify=labels, random_state=seed)
  return tr_x, tr_y, te_x, te_y


def channel_stats(images: np.ndarray) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
  """Per-channel mean and std of uint8 `[N, H, W, C]` images on the [0, 1] scale."""
  x = images.astype(np.float64) / 255.0
  return (tuple(float(m) for m in x.mean(axis=(0, 1, 2))),
          tuple(float(s) for s in x.std(axis=(0, 1, 2))))


def digits_mean_std(size: int = 16) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
  """Train-split mean/std of `load_digits(size)` for normalisation."""
  return channel_stats(load_digits(size)[0])


def load_arrays(name: str, **kwargs) -> ArrayDataset:
  """Loads an in-memory array dataset by name.

  Supported: 'digits' (kwargs: `size`, `test_size`, `seed`; see `load_digits`).

  Raises:
    ValueError: for an unknown name.
  """
  if name == "digits":
    tr_x, tr_y, te_x, te_y = load_digits(**kwargs)
    mean, std = channel_stats(tr_x)
    return ArrayDataset(tr_x, tr_y, te_x, te_y, mean, std, num_classes=10)
  raise ValueError(f"Unknown array dataset {name!r}; supported: 'digits'. "
                   f"For TFDS datasets use jssl.data.tfds_source.")
