"""Test setup: 8 simulated CPU devices, so sharded == single-device is testable.

XLA reads the flag when the backend starts, so it must be set before anything
imports jax; pytest imports conftest first.
"""
import os
import tempfile

# Backend optimisation level 0: XLA:CPU compiles dominate the suite and the
# test programs are tiny, so LLVM's optimisation passes cost far more than they
# save (measured: a method's 1-vs-8-device test 50 s -> 33 s cold). Semantics
# are unchanged; only the generated code is slower.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
    + " --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The same small programs (smoke-config step, init, evals) are compiled by many
# tests and subprocesses; XLA:CPU compiles dominate the suite's time, so share
# them through JAX's persistent compilation cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "jssl-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
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


@pytest.fixture(scope="session")
def cifar_dir(shared_dir):
  """A TFDS data dir with the real CIFAR-10 prepared from ../shared (skip if absent).

  Prepared once per machine under the temp dir, under a file lock, so parallel
  test workers share one preparation (~40 s).
  """
  import fcntl  # pylint: disable=import-outside-toplevel
  archive = os.path.join(shared_dir, "data", "cifar10",
                         "cifar-10-binary-reconstructed.tar.gz")
  if not os.path.isfile(archive):
    pytest.skip(f"{archive} not present")
  pytest.importorskip("tensorflow_datasets")
  from jssl.data import offline  # pylint: disable=import-outside-toplevel
  data_dir = os.path.join(tempfile.gettempdir(), "jssl-test-tfds")
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    offline.main(["--dataset=cifar10", f"--archive={archive}", f"--data_dir={data_dir}"])
  return data_dir
