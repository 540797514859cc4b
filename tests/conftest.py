"""Test setup: 8 simulated CPU devices, so sharded == single-device is testable.

XLA reads the flag when the backend starts, so it must be set before anything
imports jax; pytest imports conftest first.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TF (input pipelines) must not grab an accelerator or all host threads in tests.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import jax  # noqa: E402
import pytest  # noqa: E402

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))


@pytest.fixture(scope="session")
def shared_dir():
  return os.environ.get("JSSL_SHARED_DIR", SHARED)


@pytest.fixture
def x64():
  """Runs a test with float64 enabled (parity tests), restoring the flag after."""
  prev = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", prev)
