"""tf.image twins agree with the jnp ops; TFDS pipelines on mock data; missing data error."""
import hashlib

import jax
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from jssl import errors  # noqa: E402
from jssl.data import augment as A  # noqa: E402
from jssl.data import device_views, eval_transform, host, recipes, tf_ops, tfds_source  # noqa: E402

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.2)


@pytest.fixture(scope="module")
def image():
  return np.random.RandomState(0).rand(12, 10, 3).astype(np.float32)


@pytest.mark.parametrize("name,arg", [
    ("adjust_brightness", 1.3), ("adjust_contrast", 0.6), ("adjust_contrast", 1.4),
    ("adjust_saturation", 0.5), ("adjust_saturation", 1.5), ("adjust_hue", 0.1),
    ("adjust_hue", -0.08)])
def test_photometric_ops_agree(image, name, arg):
  ours = jax.jit(getattr(A, name))(image, arg)
  theirs = getattr(tf_ops, name)(tf.constant(image), arg).numpy()
  np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_grayscale_and_normalize_agree(image):
  np.testing.assert_allclose(A.to_grayscale(image), tf_ops.to_grayscale(image).numpy(),
                             atol=1e-5)
  np.testing.assert_allclose(A.normalize(image, mean=MEAN, std=STD),
                             tf_ops.normalize(image, mean=MEAN, std=STD).numpy(), atol=1e-5)


@pytest.mark.parametrize("shape,size,frac", [((12, 10, 3), 8, 1.0), ((9, 15, 3), 6, 0.875),
                                             ((20, 20, 3), 20, 1.0)])
def test_eval_preprocess_agrees(shape, size, frac):
  x = np.random.RandomState(1).randint(0, 256, shape).astype(np.uint8)
  ours = eval_transform.eval_preprocess(x, size=size, mean=MEAN, std=STD, crop_fraction=frac)
  theirs = tf_ops.eval_preprocess(x, size=size, mean=MEAN, std=STD, crop_fraction=frac)
  np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)
  # The dynamic-shape (variable-size TFDS image) branch computes the same.
  dyn = tf.function(lambda im: tf_ops.resize_and_center_crop(im, size=size, crop_fraction=frac),
                    input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  static = tf_ops.resize_and_center_crop(x, size=size, crop_fraction=frac)
  np.testing.assert_allclose(dyn(x).numpy(), static.numpy(), atol=1e-3)


def test_tf_random_resized_crop_is_stateless():
  x = np.random.RandomState(2).randint(0, 256, (20, 30, 3)).astype(np.uint8)
  a = tf_ops.random_resized_crop(x, tf.constant([1, 2]), size=8)
  b = tf_ops.random_resized_crop(x, tf.constant([1, 2]), size=8)
  c = tf_ops.random_resized_crop(x, tf.constant([1, 3]), size=8)
  assert a.shape == (8, 8, 3) and a.dtype == tf.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  sq = x[:, :20]
  whole = tf_ops.random_resized_crop(sq, tf.constant([0, 0]), size=20, scale=(1, 1),
                                     ratio=(1, 1))
  np.testing.assert_array_equal(whole.numpy(), sq)  # the whole image, unresized


def test_tfds_pipeline_on_mock_data():
  with tfds.testing.mock_data(num_examples=10):
    spec = tfds_source.TfdsTrainSpec(name="cifar10", batch_size_per_process=4, seed=0)
    it = tfds_source.tfds_train_batches(spec, host.HostCrops(16, num_views=2))
    batches = [next(it) for _ in range(4)]  # > 1 epoch: repeats
    b = batches[0]
    assert b["views"].shape == (4, 2, 16, 16, 3) and b["views"].dtype == np.uint8
    assert b["label"].dtype == np.int32 and b["label"].shape == (4,)
    again = next(tfds_source.tfds_train_batches(spec, host.HostCrops(16)))
    np.testing.assert_array_equal(again["views"], b["views"])  # seeded
    raw = next(tfds_source.tfds_train_batches(spec, None))
    assert raw["image"].shape == (4, 32, 32, 3)
    # Host crops feed the on-device view fn.
    fn = device_views.make_view_fn(recipes.simclr_recipe(16, mean=MEAN, std=STD), 2)
    out = jax.jit(fn)(jax.random.key(0), b)
    assert out[0].shape == (4, 16, 16, 3)
    ev = list(tfds_source.tfds_eval_batches(
        "cifar10", "test", data_dir=None, batch_size_per_process=4, image_size=24))
    assert len(ev) == 3 and ev[0]["image"].shape == (4, 24, 24, 3)
    assert sum(int(e["mask"].sum()) for e in ev) == 10 and not ev[-1]["mask"][2:].any()
    assert (ev[-1]["image"][2:] == 0).all()


def test_tfds_resume_continues_the_uninterrupted_order():
  """A batch is a function of (seed, step): resuming at step 3 (mid-epoch 1 of
  2-step epochs) yields the uninterrupted run's batches 3..6, crops included."""
  spec = tfds_source.TfdsTrainSpec(name="cifar10", batch_size_per_process=4, seed=5)
  crops = host.HostCrops(8, num_views=2)
  with tfds.testing.mock_data(num_examples=10):
    full = [next(it) for it in [tfds_source.tfds_train_batches(spec, crops)]
            for _ in range(7)]
    resumed = tfds_source.tfds_train_batches(spec, crops, start_step=3)
    for a in full[3:]:
      b = next(resumed)
      np.testing.assert_array_equal(a["views"], b["views"])
      np.testing.assert_array_equal(a["label"], b["label"])
  # 2 steps of 4 per epoch (8 of 10 examples); epochs are reshuffled.
  assert not np.array_equal(full[0]["views"], full[2]["views"])


def _digest(batches):
  h = hashlib.sha256()
  for b in batches:
    for k in sorted(b):
      h.update(f"{k}{b[k].dtype}{b[k].shape}".encode())
      h.update(np.ascontiguousarray(b[k]).tobytes())
  return h.hexdigest()


def _next_two(it):
  return [next(it), next(it)]


def test_tfds_batches_are_pinned():
  """The exact batches (pixels, labels) of fixed settings on TFDS mock data:
  resumed runs and refactors must keep them. Steps 1-2 cross an epoch boundary
  (2 steps per epoch); non-default crop ranges check that each one reaches its
  crop. The digests were taken before the pipeline took a spec (it had 19
  keyword arguments then); a change of TF/TFDS version may legitimately move them."""
  with tfds.testing.mock_data(num_examples=10):
    spec = tfds_source.TfdsTrainSpec(name="cifar10", batch_size_per_process=4, seed=7)
    crops = _next_two(tfds_source.tfds_train_batches(spec, host.HostCrops(
        12, num_views=2, scale=(0.3, 1.0), ratio=(0.5, 2.0), num_local=2, local_size=6,
        local_scale=(0.1, 0.3)), start_step=1))
    whole = _next_two(tfds_source.tfds_train_batches(spec, None))
  assert crops[0]["local_views"].shape == (4, 2, 6, 6, 3)
  assert _digest(crops) == "fde3ce4440407a1c1a133a879ec216c5e44fb2a78e470e31b6021a7ec6937a2e"
  assert _digest(whole) == "c01a238b7b5d7c78298358b5ed925620c0bd63a0d6a3f5b290c67aa8d444e11c"


def test_missing_dataset_raises_one_clear_error(tmp_path):
  train = tfds_source.TfdsTrainSpec(name="cifar10", data_dir=str(tmp_path),
                                    batch_size_per_process=4)
  for call in (lambda: tfds_source.tfds_train_batches(train, host.HostCrops(32)),
               lambda: tfds_source.tfds_eval_batches(
                   "cifar10", data_dir=str(tmp_path), batch_size_per_process=4, image_size=32)):
    with pytest.raises(tfds_source.DatasetNotPreparedError) as e:
      call()
    msg = str(e.value)
    assert "cifar10" in msg and str(tmp_path) in msg and "jssl.data.offline" in msg
    assert "shared" not in msg and "\n" not in msg  # one line, no build-machine path
    assert isinstance(e.value, errors.DataNotFoundError)
    assert e.value.__cause__ is None and e.value.__suppress_context__
