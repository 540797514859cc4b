"""SimMIM: masks, L1 on masked pixels only (official formula), 1 == 8 devices, learning,
config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods
from jssl.methods import simmim
from jssl_testing import load_config, set_fields
import methods_testing as mt


def _config():
  return load_config("configs/simmim.py:smoke")


@pytest.fixture(autouse=True)
def _classic_threefry():
  # As jssl.step traces the train step (see test_mae.py).
  with jax.threefry_partitionable(False):
    yield


def test_masks_are_exact_squares_and_keyed():
  assert simmim.num_masked(49, 0.6) == 30 and simmim.num_masked(36, 0.6) == 22  # paper grids
  assert simmim.num_masked(10, 0.6) == 6           # no float ceil surprise (6.000000000000001)
  x = jnp.zeros((6, 16, 16, 3))
  kw = dict(patch_size=2, mask_patch_size=4, mask_ratio=0.6)
  mask = np.asarray(simmim.random_mask(jax.random.key(0), x, **kw))
  assert mask.shape == (6, 64) and mask.dtype == bool
  np.testing.assert_array_equal(mask.sum(1), 10 * 4)        # ceil(0.6 * 16) cells of 2x2 tokens
  cells = mask.reshape(6, 4, 2, 4, 2)                      # each 4 px square all or nothing
  assert np.all(cells.all((2, 4)) | ~cells.any((2, 4)))
  assert len({m.tobytes() for m in mask}) > 1              # differs per example
  np.testing.assert_array_equal(mask, simmim.random_mask(jax.random.key(0), x, **kw))
  assert not np.array_equal(mask, simmim.random_mask(jax.random.key(1), x, **kw))


def test_loss_is_the_official_pixel_formula():
  rng = np.random.default_rng(0)
  x, rec = rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(2, 3, 8, 8))   # NCHW as torch
  tok = rng.random((2, 4)) < 0.5
  tok[0, 0], tok[1, 1] = True, False
  px = tok.reshape(2, 2, 2).repeat(4, 1).repeat(4, 2)[:, None]          # [B, 1, H, W]
  official = (np.abs(x - rec) * px).sum() / (px.sum() + 1e-5) / 3
  nhwc = lambda a: jnp.asarray(a.transpose(0, 2, 3, 1), jnp.float32)  # noqa: E731
  ours = losses.simmim(losses.patchify(nhwc(rec), 4), losses.patchify(nhwc(x), 4),
                       jnp.asarray(tok))
  np.testing.assert_allclose(float(ours), official, rtol=1e-5)


def _setup(config, b=8):
  method = methods.make(config)
  x = jax.random.normal(jax.random.key(3), (b, 16, 16, 3))
  params, state = jax.jit(method.init)(jax.random.key(0), (x,))
  return method, params, state, x


def test_loss_on_masked_pixels_only_and_one_step_lowers_it():
  config = _config()
  method, params, state, x = _setup(config)
  key = jax.random.key(7)
  fn = jax.jit(lambda p, x: method.loss(p, state, (x,), {}, key, 0))
  value, (_, metrics) = fn(params, x)
  assert float(metrics["mask_fraction"]) == 10 / 16    # ceil(0.6 * 16) of 16 cells
  # The masks and the prediction the loss used (same keys, same network).
  k_mask, k_drop = jax.random.split(key)
  mask = simmim.random_mask(k_mask, x, patch_size=4, mask_patch_size=4, mask_ratio=0.6)
  px = jnp.repeat(jnp.repeat(mask.reshape(8, 4, 4), 4, 1), 4, 2)[..., None]
  net = simmim.SimMIMNet(encoder=method.encoder.clone(use_mask_token=True), out_dim=48)
  _, pred = jax.jit(lambda p: net.apply({"params": p}, x, mask, rngs={"dropout": k_drop}))(
      params)
  np.testing.assert_allclose(losses.simmim(pred, losses.patchify(x, 4), mask), value, rtol=1e-5)
  # Garbage on the unmasked target pixels leaves the loss unchanged; on the
  # masked ones it changes it (the check has power).
  noisy = jnp.where(px, x, 10.0 + x)
  np.testing.assert_allclose(losses.simmim(pred, losses.patchify(noisy, 4), mask), value,
                             rtol=1e-5)
  assert abs(float(losses.simmim(pred, losses.patchify(jnp.where(px, 10.0 + x, x), 4), mask))
             - float(value)) > 1e-2
  # One SGD step on fixed masks and drop-path keys lowers the loss.
  loss_only = jax.jit(lambda p: method.loss(p, state, (x,), {}, key, 0)[0])
  g = jax.jit(jax.grad(loss_only))(params)
  assert float(loss_only(jax.tree.map(lambda p, g: p - 0.05 * g, params, g))) < float(value)
  # Evaluation / export: the ViT without its mask token, mean-pooled patch tokens.
  enc = method.encoder_variables(params, state)
  assert "mask_token" in params["encoder"] and "mask_token" not in enc["params"]
  feats = jax.jit(method.encode)(params, state, x)
  np.testing.assert_allclose(feats["pre_logits"], feats["tokens"].mean(1), rtol=1e-5, atol=1e-6)


def test_one_device_equals_eight_with_drop_path():
  config = _config()
  assert config.model.drop_path_rate == 0.1
  mt.assert_one_device_equals_eight(config, mt.digit_batches(config, 2))


def test_config_errors():
  def fails(match, **fields):
    with pytest.raises(ValueError, match=match):
      methods.make(set_fields(_config(), **fields))

  fails("'resnet_tiny'", model=load_config("configs/simclr.py:smoke").model)
  fails("num_views=2", **{"views.num_views": 2})
  fails("masks 16 of the 16", **{"loss.mask_ratio": 0.99})
  fails("masks 0 of the 16", **{"loss.mask_ratio": 0.0})
  fails("multiple of config.model.patch_size=4", **{"loss.mask_patch_size": 6})
  fails("does not divide", **{"loss.mask_patch_size": 12})
