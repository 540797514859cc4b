"""Trained protocols (`jssl.evals.finetune`): the papers' augmented-crop linear
evaluation and label-fraction fine-tuning."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import models
from jssl import sharding as shd
from jssl.evals import finetune

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
PP = {"size": 8, "mean": MEAN, "std": STD}
COLOURS = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [220, 220, 40]], np.uint8)


def _coloured(n_per_class, seed):
  """4 classes of 8x8 images: one colour per class plus pixel noise, so any
  reasonable encoder + linear head separates them, but only after training."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(4), n_per_class).astype(np.int32)
  noise = rng.integers(-25, 26, size=(len(labels), 8, 8, 3))
  images = np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
  return images, labels


def _encoder():
  module = models.make_encoder({"name": "resnet_tiny", "stem": "cifar"})
  variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
  return module, variables


def _test_batches(images, labels, b=24):
  for i in range(0, len(labels), b):
    yield {"image": images[i:i + b], "label": labels[i:i + b],
           "mask": np.ones(len(labels[i:i + b]), bool)}


def test_label_subset_is_balanced_deterministic_and_nested():
  labels = np.repeat(np.arange(5), [100, 50, 20, 7, 1])
  small = finetune.label_subset(labels, 0.1, seed=3)
  np.testing.assert_array_equal(np.bincount(labels[small]), [10, 5, 2, 1, 1])
  np.testing.assert_array_equal(small, finetune.label_subset(labels, 0.1, seed=3))
  assert np.all(np.diff(small) > 0)
  big = finetune.label_subset(labels, 0.5, seed=3)
  assert set(small) <= set(big)  # a larger fraction extends the smaller one
  assert not np.array_equal(small, finetune.label_subset(labels, 0.1, seed=4))
  assert len(finetune.label_subset(labels, 1.0)) == len(labels)
  with pytest.raises(ValueError, match="label fraction"):
    finetune.label_subset(labels, 0.0)
  with pytest.raises(ValueError, match="non-empty"):
    finetune.label_subset(np.zeros((0,), int), 0.1)


def test_presets_follow_their_sources_and_bad_settings_are_named():
  lin = finetune.protocol_config("linear", "simclr")
  assert not lin.train_encoder and lin.epochs == 90 and lin.batch_size == 4096
  assert lin.optimizer.name == "sgd" and lin.optimizer.nesterov
  assert lin.optimizer.base_lr == 0.1 and lin.optimizer.weight_decay == 1e-6
  mae = finetune.protocol_config("linear", "mae")
  assert mae.head_bn and mae.optimizer.name == "lars" and mae.optimizer.warmup_epochs == 10
  assert mae.batch_size == 16384 and mae.optimizer.weight_decay == 0.0
  ft1 = finetune.protocol_config("finetune", label_fraction=0.01)
  ft10 = finetune.protocol_config("finetune", label_fraction=0.1)
  assert ft1.train_encoder and (ft1.epochs, ft10.epochs) == (60, 30)
  assert ft1.optimizer.base_lr * 4096 / 256 == pytest.approx(0.8)  # SimCLR B.5
  over = finetune.protocol_config("linear", epochs=3, optimizer={"base_lr": 2.0})
  assert over.epochs == 3 and over.optimizer.base_lr == 2.0 and over.optimizer.nesterov
  with pytest.raises(ValueError, match="unknown linear settings"):
    finetune.protocol_config("linear", epoch=3)
  with pytest.raises(ValueError, match="unknown linear preset 'byol'"):
    finetune.protocol_config("linear", "byol")
  with pytest.raises(ValueError, match="unknown trained protocol"):
    finetune.protocol_config("semi")
  with pytest.raises(ValueError, match="needs label_fraction"):
    finetune.protocol_config("finetune")
  with pytest.raises(ValueError, match="label_fraction is for 'finetune'"):
    finetune.protocol_config("linear", label_fraction=0.1)
  with pytest.raises(ValueError, match=r"label_fraction must be in \(0, 1\]"):
    finetune.protocol_config("finetune", label_fraction=1.5)


def _run(cfg, mesh=None, n_train=32, **kw):
  module, variables = _encoder()
  tr_x, tr_y = _coloured(n_train, 0)
  te_x, te_y = _coloured(12, 1)
  return finetune.train_classifier(
      module, variables, finetune.array_train_data(tr_x, tr_y), _test_batches(te_x, te_y),
      num_classes=4, preprocess=PP, cfg=cfg, mesh=mesh, log=lambda _: None, **kw), variables


def test_linear_protocol_learns_with_the_encoder_frozen():
  # MAE's preset (BN head, LARS) with a trust coefficient and lr sized for 60
  # steps of 32: at eta = 0.001 and lr = 0.1 * 32 / 256 the kernel moves by
  # ~1e-5 of its norm per step, and nothing is learned in a unit test.
  cfg = finetune.protocol_config("linear", "mae", epochs=15, batch_size=32,
                                 optimizer=dict(base_lr=4.0, trust_coefficient=0.1))
  (r, trained), _ = _run(cfg, return_variables=True)
  assert r["top1"] >= 0.9, r  # chance is 0.25
  assert r["num_train"] == 128 and r["num_test"] == 48 and r["batch_size"] == 32
  assert r["steps"] == 60 and r["epochs"] == 15
  assert set(trained) == {"head"}  # the encoder is not a trained variable
  assert trained["head"]["params"]["Dense_0"]["kernel"].shape[-1] == 4
  # The head's batch norm tracked the (non-zero) feature mean.
  assert np.abs(trained["head"]["batch_stats"]["BatchNorm_0"]["mean"]).max() > 0


def test_finetune_trains_the_encoder_and_its_batch_norm():
  cfg = finetune.protocol_config("finetune", label_fraction=1.0, epochs=10, batch_size=32,
                                 optimizer={"base_lr": 0.4})
  (r, trained), variables = _run(cfg, return_variables=True)
  assert r["top1"] >= 0.9, r
  enc = trained["encoder"]
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       enc["params"], jax.device_get(variables["params"]))
  assert max(jax.tree.leaves(moved)) > 0
  stats = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       enc["batch_stats"], jax.device_get(variables["batch_stats"]))
  assert max(jax.tree.leaves(stats)) > 0


def test_eight_devices_equal_one():
  cfg = finetune.protocol_config("finetune", label_fraction=1.0, epochs=2, batch_size=16,
                                 optimizer={"base_lr": 0.4})
  one = shd.make_mesh(devices=jax.devices()[:1])
  eight = shd.make_mesh(devices=jax.devices()[:8])
  (r1, v1), _ = _run(cfg, mesh=one, n_train=8, return_variables=True)
  (r8, v8), _ = _run(cfg, mesh=eight, n_train=8, return_variables=True)
  assert r1["top1"] == r8["top1"] and r1["steps"] == r8["steps"] == 4
  np.testing.assert_allclose(r1["train_loss"], r8["train_loss"], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5), v1, v8)


def test_batch_is_capped_by_the_data_and_rounded_to_the_devices():
  cfg = finetune.protocol_config("linear", epochs=1, batch_size=4096)
  r, _ = _run(cfg, n_train=5)  # 20 examples, 8 devices
  assert r["batch_size"] == 16 and r["steps"] == 1
  tiny = finetune.array_train_data(*_coloured(1, 0))  # 4 examples < 8 devices
  with pytest.raises(ValueError, match="cannot fill one row per device"):
    finetune.train_classifier(*_encoder(), tiny, [], num_classes=4, preprocess=PP,
                              cfg=cfg, log=lambda _: None)


def test_tfds_example_indices_select_those_rows():
  tfds = pytest.importorskip("tensorflow_datasets")
  from jssl.data import tfds_source  # pylint: disable=import-outside-toplevel
  with tfds.testing.mock_data(num_examples=20):
    labels = tfds_source.split_labels("cifar10", "train", None)
    assert labels.shape == (20,) and tfds_source.split_size("cifar10", "train", None) == 20
    ds = tfds.builder("cifar10").as_dataset(split="train", shuffle_files=False)
    rows = [ex["image"] for ex in tfds.as_numpy(ds)]  # file order
    keep = np.array([2, 5, 11, 17])
    it = tfds_source.tfds_train_batches(tfds_source.TfdsTrainSpec(
        name="cifar10", batch_size_per_process=4, example_indices=keep, seed=0), None)
    seen = np.concatenate([next(it)["image"] for _ in range(3)])
  wanted = {rows[i].tobytes() for i in keep}
  assert {im.tobytes() for im in seen} == wanted  # every row of the subset, nothing else
  with pytest.raises(ValueError, match="example_indices is empty"):
    next(tfds_source.tfds_train_batches(tfds_source.TfdsTrainSpec(
        name="cifar10", batch_size_per_process=4, example_indices=[]), None))
