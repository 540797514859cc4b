"""MAE: masking, loss on masked patches only, 1 == 8 devices, learning, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods
from jssl.methods import mae
from jssl_testing import load_config
import methods_testing as mt


def _config():
  return load_config("configs/mae.py:smoke")


@pytest.fixture(autouse=True)
def _classic_threefry():
  # As jssl.step traces the train step: the partitionable threefry lowering
  # costs seconds of XLA:CPU compile per random draw (see jssl/step.py).
  with jax.threefry_partitionable(False):
    yield


def test_masking_counts_per_example_and_determinism():
  assert mae.num_keep(196, 0.75) == 49 and mae.num_keep(64, 0.75) == 16
  assert mae.num_keep(16, 0.75) == 4 and mae.num_keep(10, 0.75) == 2   # round(2.5) -> 2
  x = jnp.zeros((8, 16, 16, 3))
  keep, mask = mae.random_masking(jax.random.key(0), x, 16, 0.75)
  assert keep.shape == (8, 4) and keep.dtype == jnp.int32 and mask.shape == (8, 16)
  np.testing.assert_array_equal(mask.sum(1), 12)                    # exactly N - N_keep removed
  np.testing.assert_array_equal(np.take_along_axis(np.asarray(mask), np.asarray(keep), 1), 0)
  assert all(len(set(np.asarray(k).tolist())) == 4 for k in keep)   # distinct patches
  assert len({tuple(sorted(np.asarray(k).tolist())) for k in keep}) > 1   # differ per example
  keep2, mask2 = mae.random_masking(jax.random.key(0), x, 16, 0.75)
  np.testing.assert_array_equal(keep, keep2)
  np.testing.assert_array_equal(mask, mask2)
  _, mask3 = mae.random_masking(jax.random.key(1), x, 16, 0.75)
  assert not np.array_equal(mask, mask3)
  # Independence from the sharding is tested through the train step below.


def _setup(config, b=8):
  method = methods.make(config)
  x = jax.random.normal(jax.random.key(3), (b, 16, 16, 3))
  params, state = jax.jit(method.init)(jax.random.key(0), (x,))
  return method, params, state, x


def test_loss_is_on_masked_patches_only_and_encoder_sees_visible_only():
  config = _config()
  method, params, state, x = _setup(config)
  key = jax.random.key(7)
  value, (_, metrics) = jax.jit(method.loss)(params, state, (x,), {}, key, 0)
  assert np.isfinite(float(value)) and float(metrics["repr_std"]) > 0
  # The same masks the loss drew from `key`, and the same network.
  keep, mask = mae.random_masking(key, x, 16, config.loss.mask_ratio)
  net = mae.make_net(config, 3)
  apply = jax.jit(net.apply)
  _, pred = apply({"params": params}, x, keep)
  target = losses.patchify(x, 4)
  # Garbage targets on the visible patches leave the loss unchanged: the loss
  # is on the removed patches only.
  noise = 10 * jax.random.normal(jax.random.key(9), target.shape)
  garbage = jnp.where(mask[..., None] > 0, target, noise)
  np.testing.assert_allclose(
      value, losses.mae(pred, garbage, mask, norm_pix_loss=True), rtol=1e-5)
  # ... while garbage on the removed patches does change it (the check has power).
  garbage = jnp.where(mask[..., None] > 0, noise, target)
  assert abs(float(losses.mae(pred, garbage, mask, norm_pix_loss=True)) - float(value)) > 1e-3
  # The predictions do not depend on the pixels of removed patches (the
  # encoder only sees visible ones).
  masked_px = jnp.repeat(jnp.repeat(mask.reshape(8, 4, 4), 4, 1), 4, 2)[..., None] > 0
  _, pred2 = apply({"params": params}, jnp.where(masked_px, 50.0, x), keep)
  np.testing.assert_allclose(pred2, pred, atol=1e-5)
  # Evaluation encodes the whole image: cls token, all 16 patch tokens.
  feats = jax.jit(method.encode)(params, state, x)
  assert feats["pre_logits"].shape == (8, 32) and feats["tokens"].shape == (8, 16, 32)
  assert state == {"batch_stats": {}}
  assert set(params) == {"encoder", "decoder"}


def test_one_sgd_step_lowers_the_loss():
  method, params, state, x = _setup(_config())
  key = jax.random.key(5)                  # fixed masks
  fn = jax.jit(lambda p: method.loss(p, state, (x,), {}, key, 0)[0])
  before, grads = jax.jit(jax.value_and_grad(fn))(params)
  assert float(_norm(grads["decoder"])) > 0 and float(_norm(grads["encoder"])) > 0
  after = fn(jax.tree.map(lambda p, g: p - 0.05 * g, params, grads))
  assert float(after) < float(before)


def _norm(tree):
  return jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(tree)))


def test_one_device_equals_eight_and_trains():
  config = _config()
  batches = mt.digit_batches(config, 3)
  (_, h1), _ = mt.assert_one_device_equals_eight(config, batches)


def test_config_errors():
  config = _config()
  config.model = load_config("configs/simclr.py:smoke").model
  with pytest.raises(ValueError, match="MAE masks the patch tokens of a ViT.*'resnet_tiny'"):
    methods.make(config)
  config = _config()
  config.views.num_views = 2
  with pytest.raises(ValueError, match="num_views=2"):
    methods.make(config)
  config = _config()
  config.loss.mask_ratio = 0.99
  with pytest.raises(ValueError, match="at least one"):
    methods.make(config)
  config = _config()
  config.model.patch_size = 5
  with pytest.raises(ValueError, match="not divisible by"):
    methods.make(config)
