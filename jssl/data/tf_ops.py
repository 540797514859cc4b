"""Host-side TensorFlow image ops: crops for tf.data, and tf twins of the jnp ops.

Runs inside `tf.data` maps (TFDS pipelines, `jssl.data.tfds_source`). The
photometric twins exist so `tests/data` can check that the on-device jnp
versions (`jssl.data.augment`, `jssl.data.eval_transform.eval_preprocess`) compute the
same thing as the `tf.image` ops SimCLR's and BYOL's reference code use
(big_vision `pp/ops_image_test.py` does the same kind of check).

TensorFlow is imported inside each function, so importing this module is cheap,
but calling anything here needs TF (`pip install jssl[tf]`).
"""
from __future__ import annotations

from typing import Sequence

from jssl.data.eval_transform import eval_resize_shape


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def random_resized_crop(image, seed, *, size: int,
                        scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3),
                        max_attempts: int = 10):
  """Stateless Inception crop of a decoded image, resized to `size` (uint8 out).

  SimCLR `data_util.distorted_bounding_box_crop` + `crop_and_resize`, with
  `tf.image.stateless_sample_distorted_bounding_box` so the crop is a pure
  function of `seed` (int32 `[2]`). If no draw fits, TF returns the whole image
  (SimCLR's fallback; the jnp crop uses torchvision's clamped centre crop).

  Args:
    image: uint8 `[H, W, C]`, any H, W.
    seed: int32/int64 `[2]` stateless seed.
    size: output side.
    scale: crop area fraction range.
    ratio: crop aspect ratio (w/h) range.
    max_attempts: sampling attempts before the fallback.

  Returns:
    uint8 `[size, size, C]`, bilinear (antialiased) resize, rounded.
  """
  tf = _tf()
  shape = tf.shape(image)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=scale[0], aspect_ratio_range=tuple(ratio),
      area_range=tuple(scale), max_attempts=max_attempts,
      use_image_if_no_bounding_boxes=True)
  crop = tf.slice(image, begin, crop_size)
  return to_uint8(tf.image.resize(crop, (size, size), method="bilinear", antialias=True))


def to_uint8(image):
  """float in [0, 255] -> uint8 with rounding and saturation."""
  tf = _tf()
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resize_and_center_crop(image, *, size: int, crop_fraction: float = 1.0):
  """Eval geometry on host: shorter side -> size / crop_fraction, centre crop.

  Same geometry as `jssl.data.eval_transform.eval_preprocess` (same resize-shape rule,
  bilinear antialiased resize, floor-centred crop). Returns float32
  `[size, size, C]` in [0, 255] (use `to_uint8` to ship it as uint8).
  """
  tf = _tf()
  image = tf.convert_to_tensor(image)
  if image.shape[0] is not None and image.shape[1] is not None:
    h, w = int(image.shape[0]), int(image.shape[1])
    rh, rw = eval_resize_shape(h, w, size, crop_fraction)
    x = tf.cast(image, tf.float32)
    if (rh, rw) != (h, w):
      x = tf.image.resize(x, (rh, rw), method="bilinear", antialias=True)
    top, left = (rh - size) // 2, (rw - size) // 2
    return x[top:top + size, left:left + size, :]
  # Dynamic shape (variable-size TFDS images): the same rule in tf ops.
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  short = float(round(size / crop_fraction))
  ratio = tf.maximum(h, w) / tf.minimum(h, w)
  long_side = tf.maximum(short, tf.floor(short * ratio))
  rh = tf.cast(tf.where(h <= w, short, long_side), tf.int32)
  rw = tf.cast(tf.where(h <= w, long_side, short), tf.int32)
  x = tf.image.resize(tf.cast(image, tf.float32), tf.stack([rh, rw]), method="bilinear",
                      antialias=True)
  top, left = (rh - size) // 2, (rw - size) // 2
  x = tf.slice(x, tf.stack([top, left, 0]), tf.stack([size, size, -1]))
  return tf.ensure_shape(x, [size, size, image.shape[-1]])


def eval_preprocess(image, *, size: int, mean: Sequence[float], std: Sequence[float],
                    crop_fraction: float = 1.0):
  """tf twin of `jssl.data.eval_transform.eval_preprocess` for one image (float32 out)."""
  x = resize_and_center_crop(image, size=size, crop_fraction=crop_fraction) / 255.0
  return normalize(x, mean=mean, std=std)


# Photometric twins (float images in [0, 1]), for agreement tests.
def adjust_brightness(image, factor):
  """Multiplicative brightness (SimCLR v2 `random_brightness`)."""
  return image * factor


def adjust_contrast(image, factor):
  return _tf().image.adjust_contrast(image, factor)


def adjust_saturation(image, factor):
  return _tf().image.adjust_saturation(image, factor)


def adjust_hue(image, delta):
  return _tf().image.adjust_hue(image, delta)


def to_grayscale(image):
  """`tf.image.rgb_to_grayscale` tiled back to 3 channels (SimCLR `to_grayscale`)."""
  tf = _tf()
  return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def normalize(image, *, mean: Sequence[float], std: Sequence[float]):
  tf = _tf()
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
