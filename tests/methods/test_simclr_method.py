"""SimCLR through the shared method harness (the template for every method)."""
from jssl_testing import load_config
import methods_testing as mt


def test_simclr_one_device_equals_eight_and_trains():
  config = load_config("configs/simclr.py:smoke")
  batches = mt.digit_batches(config, 3)
  (_, h1), _ = mt.assert_one_device_equals_eight(config, batches)
