"""Every preset of every run book builds its method (no typo survives to a pod)."""
import pytest

from jssl import methods
from jssl_testing import load_config


@pytest.mark.parametrize("preset", ["quickstart", "cifar10", "imagenet", "smoke"])
def test_simclr_presets_build(preset):
  c = load_config(f"configs/simclr.py:{preset}")
  m = methods.make(c)
  assert m.encoder is not None
  assert c.views.num_views == 2
  assert c.batch_size % 8 == 0  # divisible by the 8 test devices and pod slices
