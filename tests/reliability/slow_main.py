"""`python -m jssl.main` with every training batch delayed by
$JSSL_TEST_STEP_DELAY seconds, so a test can send a signal mid-run (the smoke
step alone takes milliseconds). Only the input is slowed: the training
computation is jssl's, unchanged."""
import os
import sys
import time

sys.path.insert(0, os.getcwd())  # the checkout under test, as `python -m` would

from jssl import main  # noqa: E402
from jssl import sharding  # noqa: E402

_prefetch = sharding.prefetch_to_mesh


def _slow_prefetch(*args, **kwargs):
  delay = float(os.environ.get("JSSL_TEST_STEP_DELAY", "0"))
  for batch in _prefetch(*args, **kwargs):
    time.sleep(delay)
    yield batch


sharding.prefetch_to_mesh = _slow_prefetch

if __name__ == "__main__":
  main.cli()
