"""Keyed jnp augmentations: eager and jit+vmap, determinism, probabilities, crop limits."""
import functools

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl.data import augment as A

B, H, W, C = 4, 16, 12, 3


def _images(seed=0, b=B, h=H, w=W):
  return jnp.asarray(np.random.RandomState(seed).rand(b, h, w, C), jnp.float32)


JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
# name -> (fn(key, image, p), output spatial shape or None for "same")
OPS = {
    "crop": (lambda k, x, p: A.random_resized_crop(k, x, size=8), (8, 8)),
    "flip": (lambda k, x, p: A.random_flip(k, x, p=p), None),
    "jitter": (lambda k, x, p: A.color_jitter(k, x, p=p, **JITTER), None),
    "gray": (lambda k, x, p: A.random_grayscale(k, x, p=p), None),
    "blur": (lambda k, x, p: A.gaussian_blur(k, x, p=p, kernel_size=5), None),
    "solarize": (lambda k, x, p: A.solarize(k, x, p=p, threshold=0.5), None),
}


@functools.lru_cache(maxsize=None)
def _batched(name, p):
  """One compiled function per (op, p), shared by the tests (compiles dominate)."""
  fn = OPS[name][0]
  return jax.jit(jax.vmap(lambda k, x: fn(k, x, p)))


@pytest.mark.parametrize("name", sorted(OPS))
def test_shapes_range_determinism_jit_equals_eager(name):
  fn, shape = OPS[name]
  x = _images()
  keys = jax.random.split(jax.random.key(0), B)
  out = _batched(name, 0.5)(keys, x)
  h, w = shape or (H, W)
  assert out.shape == (B, h, w, C) and out.dtype == jnp.float32
  assert float(out.min()) >= -1e-5 and float(out.max()) <= 1 + 1e-5
  # Same keys -> same output; jit+vmap == eager on one example.
  np.testing.assert_array_equal(out, _batched(name, 0.5)(keys, x))
  np.testing.assert_allclose(fn(keys[1], x[1], 0.5), out[1], atol=1e-5)


@pytest.mark.parametrize("name", sorted(OPS))
def test_different_keys_differ(name):
  x = jnp.broadcast_to(_images(b=1)[0], (B, H, W, C))  # one image, B keys
  out = _batched(name, 0.5)(jax.random.split(jax.random.key(1), B), x)
  assert len({np.asarray(o).tobytes() for o in out}) > 1


@pytest.mark.parametrize("name", ["flip", "jitter", "gray", "blur", "solarize"])
def test_p0_is_identity_and_p1_always_applies(name):
  x = _images(2)
  keys = jax.random.split(jax.random.key(2), B)
  np.testing.assert_array_equal(_batched(name, 0.0)(keys, x), x)
  changed = np.abs(np.asarray(_batched(name, 1.0)(keys, x)) - np.asarray(x)).max(axis=(1, 2, 3))
  assert (changed > 1e-3).all(), changed


def test_probability_is_respected():
  x = _images(3, b=1)[0]
  keys = jax.random.split(jax.random.key(3), 2000)
  out = jax.jit(jax.vmap(lambda k: A.random_grayscale(k, x, p=0.2)))(keys)
  frac = float(jnp.mean(jnp.all(jnp.isclose(out[..., 0], out[..., 1]), axis=(1, 2))))
  assert 0.16 < frac < 0.24, frac


def test_fixed_ops_hand_checked():
  x = _images(4, b=1)[0]
  np.testing.assert_array_equal(A.random_flip(jax.random.key(0), x, p=1.0), x[:, ::-1])
  g = A.to_grayscale(x)
  np.testing.assert_allclose(g[..., 0], x @ jnp.array([0.2989, 0.5870, 0.1140]), atol=1e-6)
  s = A.solarize(jax.random.key(0), x, p=1.0, threshold=0.5)
  np.testing.assert_allclose(s, np.where(x < 0.5, x, 1 - x))
  n = A.normalize(x, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.1))
  np.testing.assert_allclose(n, (x - jnp.array([0.5, 0.4, 0.3])) / jnp.array([0.2, 0.2, 0.1]),
                             rtol=1e-6)
  np.testing.assert_allclose(A.adjust_brightness(x, 0.5), x * 0.5)
  assert A.blur_kernel_size(224) == 22 and A.blur_kernel_size(32) == 3
  for sigma, k in [(0.5, 3), (1.7, 6), (2.0, 23)]:
    np.testing.assert_allclose(A.blur(x, sigma, k), pix.gaussian_blur(x, sigma, k), atol=1e-5)


def test_crop_whole_image_when_scale_and_ratio_are_one():
  x = _images(5, h=12, w=12)
  keys = jax.random.split(jax.random.key(5), B)
  crop = jax.jit(jax.vmap(functools.partial(
      A.random_resized_crop, size=20, scale=(1, 1), ratio=(1, 1))))
  expected = jax.image.resize(x, (B, 20, 20, C), "linear")
  np.testing.assert_allclose(crop(keys, x), expected, atol=1e-5)


def test_crop_box_respects_scale_and_ratio():
  keys = jax.random.split(jax.random.key(6), 500)
  boxes = jax.jit(jax.vmap(functools.partial(
      A.sample_crop_box, height=64, width=48, scale=(0.2, 0.5), ratio=(0.5, 2.0))))(keys)
  top, left, h, w = np.asarray(boxes).T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= 64).all() and (left + w <= 48).all()
  area = h * w / (64 * 48)
  # Sides are rounded to pixels: allow one pixel of slack on each side.
  slack = (h + w + 1) / (64 * 48)
  assert (area >= 0.2 - slack).all() and (area <= 0.5 + slack).all()
  assert (w / h >= 0.5 * 0.9).all() and (w / h <= 2.0 * 1.1).all()
  assert area.std() > 0.03  # actually random


def test_crop_falls_back_to_clamped_centre_crop():
  # Area > 100% can never fit: the fallback is the centre crop with ratio clamped.
  box = jax.jit(functools.partial(A.sample_crop_box, height=10, width=40, scale=(2.0, 2.0),
                                  ratio=(1.0, 2.0)))(jax.random.key(0))
  np.testing.assert_array_equal(box, [0, 10, 10, 20])
