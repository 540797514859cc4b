"""Offline registration of the real CIFAR-10 archive into a TFDS data dir (slow, data)."""

import numpy as np
import pytest


@pytest.mark.slow
@pytest.mark.data
def test_register_cifar10_offline(cifar_dir):
  import tensorflow_datasets as tfds
  from jssl.data import host, offline, tfds_source
  builder = tfds.builder("cifar10", data_dir=cifar_dir)
  assert builder.info.splits["train"].num_examples == 50000
  assert builder.info.splits["test"].num_examples == 10000
  # Registration is idempotent (already prepared: no work).
  assert offline.register_archive("cifar10", "/nonexistent", cifar_dir).endswith("3.0.2")
  ds = tfds.as_numpy(builder.as_dataset(split="test", batch_size=10000))
  test = next(iter(ds))
  assert test["image"].shape == (10000, 32, 32, 3) and test["image"].dtype == np.uint8
  assert test["label"].min() == 0 and test["label"].max() == 9
  assert (np.bincount(test["label"]) == 1000).all()
  it = tfds_source.tfds_train_batches(tfds_source.TfdsTrainSpec(
      name="cifar10", data_dir=cifar_dir, batch_size_per_process=8, seed=0),
      host.HostCrops(32, num_views=2))
  assert next(it)["views"].shape == (8, 2, 32, 32, 3)
