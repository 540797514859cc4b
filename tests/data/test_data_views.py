"""View recipes, the jitted view fn (sharded == single device) and eval_preprocess."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jssl.data import device_views, eval_transform, recipes

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.2)


def _uint8(shape, seed=0):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def test_simclr_recipe_defaults():
  r = recipes.simclr_recipe(32, mean=MEAN, std=STD)
  assert (r.crop.scale, r.flip.p, r.grayscale.p) == ((0.08, 1.0), 0.5, 0.2)
  cj = r.color_jitter
  assert (cj.brightness, cj.contrast, cj.saturation, cj.hue, cj.p) == (0.4, 0.4, 0.4, 0.1, 0.8)
  assert r.blur.p == 0.0 and recipes.simclr_recipe(96, mean=MEAN, std=STD).blur.p == 0.5
  assert recipes.simclr_recipe(224, mean=MEAN, std=STD, blur=False).blur.p == 0.0


def test_byol_is_per_view_config():
  r = recipes.byol_recipe(64, mean=MEAN, std=STD)
  v1, v2 = (recipes.view_config(r, v, 2) for v in range(2))
  assert (v1.blur.p, v1.solarize.p, v2.blur.p, v2.solarize.p) == (1.0, 0.0, 0.1, 0.2)
  assert v1.color_jitter.saturation == 0.2 and v1.crop == v2.crop
  # Nested dicts work like dotted keys; typos and wrong lengths fail loudly.
  r.per_view = ({"blur": {"p": 0.3}}, {})
  assert recipes.view_config(r, 0, 2).blur.p == 0.3 and recipes.view_config(r, 1, 2).blur.p == 0.5
  r.per_view = ({"blur.pp": 1.0}, {})
  with pytest.raises(KeyError, match="pp"):
    recipes.view_config(r, 0, 2)
  with pytest.raises(ValueError, match="per_view"):
    recipes.view_config(r, 0, 3)


def test_per_view_overrides_change_the_views():
  """Solarize p=1 on view 2 only: view 1 keeps values, view 2 is inverted above 0.5."""
  r = recipes.simclr_recipe(8, mean=(0.0,) * 3, std=(1.0,) * 3)
  r.flip.p, r.color_jitter.p, r.grayscale.p = 0.0, 0.0, 0.0
  r.per_view = ({}, {"solarize.p": 1.0})
  x = _uint8((2, 1, 8, 8, 3))
  batch = {"views": np.concatenate([x, x], axis=1)}
  a, b = jax.jit(device_views.make_view_fn(r, 2))(jax.random.key(0), batch)
  f = x[:, 0] / 255.0
  np.testing.assert_allclose(a, f, atol=1e-6)
  np.testing.assert_allclose(b, np.where(f < 0.5, f, 1 - f), atol=1e-6)


@pytest.fixture(scope="module")
def view_fn_and_batch():
  r = recipes.simclr_recipe(8, mean=MEAN, std=STD)
  r.blur.p = 0.5  # exercise every op
  r.solarize.p = 0.2
  return jax.jit(device_views.make_view_fn(r, 2)), {"image": _uint8((16, 12, 10, 3)),
                                              "label": np.arange(16)}


def test_view_fn_shapes_and_determinism(view_fn_and_batch):
  fn, batch = view_fn_and_batch
  a, b = fn(jax.random.key(0), batch)
  assert a.shape == b.shape == (16, 8, 8, 3) and a.dtype == jnp.float32
  lo = (0 - np.array(MEAN)) / np.array(STD)
  hi = (1 - np.array(MEAN)) / np.array(STD)
  assert (np.asarray(a) >= lo - 1e-4).all() and (np.asarray(a) <= hi + 1e-4).all()
  assert not np.allclose(a, b)  # two views of the same images differ
  a2, _ = fn(jax.random.key(0), batch)
  np.testing.assert_array_equal(a, a2)
  a3, _ = fn(jax.random.key(1), batch)
  assert not np.allclose(a, a3)


def test_view_fn_sharded_over_8_devices_equals_single_device(view_fn_and_batch):
  fn, batch = view_fn_and_batch
  assert jax.config.jax_threefry_partitionable  # jax default; views must not depend on sharding
  # Explicit axes, as jssl.sharding builds its mesh (Auto axes work too).
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  sharded = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
  key = jax.random.key(3)
  single = fn(key, batch)
  multi = fn(key, sharded)
  assert multi[0].sharding.spec[0] == "data"  # stays sharded on the batch axis
  assert len(multi[0].sharding.device_set) == 8
  for s, m in zip(single, multi):
    np.testing.assert_allclose(np.asarray(m), np.asarray(s), atol=1e-5)


def test_view_fn_host_crops_and_bad_inputs(view_fn_and_batch):
  fn, _ = view_fn_and_batch
  out = fn(jax.random.key(0), {"views": _uint8((4, 2, 8, 8, 3))})
  assert [o.shape for o in out] == [(4, 8, 8, 3)] * 2
  with pytest.raises(ValueError, match="V=2"):
    fn(jax.random.key(0), {"views": _uint8((4, 3, 8, 8, 3))})
  with pytest.raises(KeyError, match="image"):
    fn(jax.random.key(0), {"label": np.zeros(4)})


def test_eval_preprocess_hand_checked():
  x = _uint8((2, 6, 10, 3))
  # No resize needed: centre crop of the longer side, then normalise.
  out = eval_transform.eval_preprocess(x, size=6, mean=MEAN, std=STD)
  expected = (x[:, :, 2:8] / 255.0 - np.array(MEAN)) / np.array(STD)
  np.testing.assert_allclose(out, expected, atol=1e-5)
  # crop_fraction: shorter side -> 8 (6 / 0.75), then the central 6 x 6.
  assert eval_transform.eval_resize_shape(6, 10, 6, 0.75) == (8, 13)
  out = jax.jit(lambda im: eval_transform.eval_preprocess(im, size=6, mean=MEAN, std=STD,
                                                 crop_fraction=0.75))(x)
  assert out.shape == (2, 6, 6, 3) and out.dtype == jnp.float32
  one = eval_transform.eval_preprocess(x[0], size=6, mean=MEAN, std=STD, crop_fraction=0.75)
  np.testing.assert_allclose(one, out[0], atol=1e-5)
