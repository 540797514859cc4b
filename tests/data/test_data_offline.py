"""Offline registration of the real CIFAR-10 archive into a TFDS data dir (slow, data)."""
import os

import numpy as np
import pytest

ARCHIVE = os.path.join("data", "cifar10", "cifar-10-binary-reconstructed.tar.gz")


@pytest.fixture(scope="session")
def cifar_dir(shared_dir, tmp_path_factory):
  archive = os.path.join(shared_dir, ARCHIVE)
  if not os.path.isfile(archive):
    pytest.skip(f"{archive} not present")
  pytest.importorskip("tensorflow_datasets")
  from jssl.data import offline
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  offline.main(["--dataset=cifar10", f"--archive={archive}", f"--data_dir={data_dir}"])
  return data_dir


@pytest.mark.slow
@pytest.mark.data
def test_register_cifar10_offline(cifar_dir):
  import tensorflow_datasets as tfds
  from jssl.data import offline, tfds_source
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
  it = tfds_source.tfds_train_batches("cifar10", data_dir=cifar_dir, batch_size_per_process=8,
                                      image_size=32, num_views=2, seed=0)
  assert next(it)["views"].shape == (8, 2, 32, 32, 3)
