"""Multi-crop views: global + local crops from arrays and from TFDS host crops."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jssl.data import device_views, recipes

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.2)


def _uint8(shape, seed=0):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def _recipe(num_local=3, **kw):
  return recipes.multicrop_recipe(8, 4, num_local, mean=MEAN, std=STD, **kw)


def test_recipe_fields_and_local_config():
  r = _recipe(local_overrides={"blur.p": 0.7, "solarize": {"p": 0.3}})
  assert r.crop.scale == (0.14, 1.0)
  assert (r.local.num, r.local.image_size, r.local.scale) == (3, 4, (0.05, 0.14))
  assert recipes.local_crops(r) == recipes.LocalCrops(3, 4, (0.05, 0.14))
  lc = recipes.local_config(r)
  assert (lc.image_size, lc.crop.scale, lc.blur.p, lc.solarize.p) == (4, (0.05, 0.14), 0.7, 0.3)
  g = recipes.view_config(r, 0, 2)  # the global crops are untouched
  assert (g.image_size, g.crop.scale, g.blur.p, g.solarize.p) == (8, (0.14, 1.0), 0.0, 0.0)
  # No `local` (every pre-multi-crop recipe) means no local crops.
  assert recipes.local_crops(recipes.simclr_recipe(8, mean=MEAN, std=STD)).num == 0
  with pytest.raises(KeyError, match="local.overrides.*pp"):
    _recipe(local_overrides={"blur.pp": 1.0})
  with pytest.raises(ValueError, match="no local crops"):
    recipes.local_config(recipes.simclr_recipe(8, mean=MEAN, std=STD))


def test_arrays_give_global_then_local_views_and_overrides_apply():
  r = _recipe(local_overrides={"solarize.p": 1.0})
  r.mean, r.std = (0.0,) * 3, (1.0,) * 3
  r.flip.p, r.color_jitter.p, r.grayscale.p = 0.0, 0.0, 0.0
  r.local.scale = (1.0, 1.0)  # whole image: local = resized image, then solarized
  r.crop.scale, r.crop.ratio = (1.0, 1.0), (1.0, 1.0)
  x = _uint8((6, 8, 8, 3))
  out = jax.jit(device_views.make_view_fn(r, 2))(jax.random.key(0), {"image": x})
  assert [o.shape for o in out] == [(6, 8, 8, 3)] * 2 + [(6, 4, 4, 3)] * 3
  assert all(o.dtype == jnp.float32 for o in out)
  f = x / 255.0
  np.testing.assert_allclose(out[0], f, atol=1e-5)  # globals: not solarized
  small = np.asarray(jax.image.resize(f, (6, 4, 4, 3), "linear", antialias=True))
  for loc in out[2:]:  # every local crop is solarized (the override)
    np.testing.assert_allclose(loc, np.where(small < 0.5, small, 1 - small), atol=1e-4)


def test_per_view_still_applies_to_global_views_only():
  r = _recipe(num_local=2)
  r.mean, r.std = (0.0,) * 3, (1.0,) * 3
  r.flip.p, r.color_jitter.p, r.grayscale.p = 0.0, 0.0, 0.0
  r.per_view = ({}, {"solarize.p": 1.0})
  x = _uint8((4, 1, 8, 8, 3))
  loc = _uint8((4, 2, 4, 4, 3), seed=1)
  batch = {"views": np.concatenate([x, x], 1), "local_views": loc}
  out = jax.jit(device_views.make_view_fn(r, 2))(jax.random.key(0), batch)
  f = x[:, 0] / 255.0
  np.testing.assert_allclose(out[0], f, atol=1e-6)
  np.testing.assert_allclose(out[1], np.where(f < 0.5, f, 1 - f), atol=1e-6)
  for v in range(2):  # local host crops pass through unsolarized
    np.testing.assert_allclose(out[2 + v], loc[:, v] / 255.0, atol=1e-6)


def test_recipe_without_local_is_unchanged():
  """Same views as before multi-crop existed: local crops use their own key."""
  plain = recipes.simclr_recipe(8, mean=MEAN, std=STD)
  multi = recipes.add_local_crops(recipes.simclr_recipe(8, mean=MEAN, std=STD), num=2,
                                image_size=4, scale=(0.05, 0.14))
  x = {"image": _uint8((4, 12, 10, 3))}
  a = device_views.make_view_fn(plain, 2)(jax.random.key(5), x)
  b = device_views.make_view_fn(multi, 2)(jax.random.key(5), x)
  assert len(a) == 2 and len(b) == 4
  for u, v in zip(a, b[:2]):
    np.testing.assert_array_equal(u, v)
  zero = recipes.add_local_crops(recipes.simclr_recipe(8, mean=MEAN, std=STD), num=0,
                               image_size=4, scale=(0.05, 0.14))
  assert len(device_views.make_view_fn(zero, 2)(jax.random.key(5), x)) == 2


def test_host_crops_need_local_views():
  fn = device_views.make_view_fn(_recipe(num_local=2), 2)
  with pytest.raises(KeyError, match="local_views"):
    fn(jax.random.key(0), {"views": _uint8((4, 2, 8, 8, 3))})
  with pytest.raises(ValueError, match="L=2"):
    fn(jax.random.key(0), {"views": _uint8((4, 2, 8, 8, 3)),
                           "local_views": _uint8((4, 3, 4, 4, 3))})
  with pytest.raises(ValueError, match="4 px"):
    fn(jax.random.key(0), {"views": _uint8((4, 2, 8, 8, 3)),
                           "local_views": _uint8((4, 2, 5, 5, 3))})


def test_multicrop_sharded_over_8_devices_equals_single_device():
  r = _recipe(num_local=2)
  r.blur.p = 0.5
  fn = jax.jit(device_views.make_view_fn(r, 2))
  batch = {"image": _uint8((16, 12, 10, 3)), "label": np.arange(16)}
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  sharded = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
  key = jax.random.key(3)
  single, multi = fn(key, batch), fn(key, sharded)
  assert len(multi) == 4 and multi[3].shape == (16, 4, 4, 3)
  assert multi[3].sharding.spec[0] == "data"
  for s, m in zip(single, multi):
    np.testing.assert_allclose(np.asarray(m), np.asarray(s), atol=1e-5)


def test_tfds_host_multicrop_on_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  from jssl.data import host, tfds_source  # pylint: disable=import-outside-toplevel
  spec = tfds_source.TfdsTrainSpec(name="cifar10", batch_size_per_process=4, seed=0)
  plain_crops = host.HostCrops(16, num_views=2)
  with tfds.testing.mock_data(num_examples=10):
    b = next(tfds_source.tfds_train_batches(spec, dataclasses.replace(
        plain_crops, num_local=3, local_size=8, local_scale=(0.05, 0.14))))
    plain = next(tfds_source.tfds_train_batches(spec, plain_crops))
  assert b["views"].shape == (4, 2, 16, 16, 3) and b["views"].dtype == np.uint8
  assert b["local_views"].shape == (4, 3, 8, 8, 3) and b["local_views"].dtype == np.uint8
  np.testing.assert_array_equal(b["views"], plain["views"])  # globals unchanged
  assert "local_views" not in plain
  r = recipes.multicrop_recipe(16, 8, 3, mean=MEAN, std=STD)
  out = jax.jit(device_views.make_view_fn(r, 2))(jax.random.key(0), b)
  assert [o.shape for o in out] == [(4, 16, 16, 3)] * 2 + [(4, 8, 8, 3)] * 3
  with pytest.raises(ValueError, match="local_size > 0"):
    tfds_source.tfds_train_batches(spec, dataclasses.replace(plain_crops, num_local=2))
