"""Test setup: 8 simulated CPU devices, so sharded == single-device is testable.

XLA reads the flag when the backend starts, so it must be set before anything
imports jax; pytest imports conftest first.
"""
import hashlib
import os
import re
import tempfile

# Backend optimisation level 0: XLA:CPU compiles dominate the suite and the
# test programs are tiny, so LLVM's optimisation passes cost far more than they
# save (measured: a method's 1-vs-8-device test 50 s -> 33 s cold). Semantics
# are unchanged; only the generated code is slower.
#
# YNN fusions off (empty list): jaxlib 0.10.2 sends dots (49 in the fine-tune
# test's train step) to YNNPACK, whose kernels are picked at run time by the
# host's ISA (AVX2 on an EPYC, AVX-512/AMX on a Xeon) and which crash or hang
# on some x86 CPUs in this release (jax-ml/jax#39257, #40412; fixed upstream
# after 0.10.2). The likely cause of the worker abort on the CI Xeon (issue 14,
# not reproducible on AVX2): with YNN off every CPU runs XLA's own generated
# code, as jaxlib 0.10.1 did. Measured: no slower (CPU time of test_step 36 ->
# 35 s, of the fine-tune test 10.6 -> 9.7 s, cold).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
    + " --xla_backend_optimization_level=0"
    + " --xla_cpu_experimental_ynn_fusion_type="
).strip()
# XLA/TF C++ logs: INFO hidden; WARNING, ERROR and FATAL shown. Level 3 hid
# ERROR too (e.g. the XLA:CPU loader's "compiled for other CPU features" line,
# XLA's "very slow compile" alarm) while a worker aborted on a CI Xeon (issue
# 14). pyproject's `--capture=sys` leaves C++ output uncaptured, so it reaches
# the terminal even when a worker dies: fd capture lost the last lines (a
# LOG(FATAL) or LLVM ERROR) with the worker, leaving only "Fatal Python error:
# Aborted".
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# No per-machine XLA:CPU measurement in tests (jssl.cpu_tuning): every CPU runs
# the same settings (YNN off above, conv_impl auto = matmul), and the runs the
# tests start do not spend 30 s measuring. tests/test_cpu_tuning.py turns it on.
os.environ["JSSL_CPU_TUNING"] = "off"


def _host_cpu_tag() -> str:
  """A short hash of this host's CPU model and ISA flags (/proc/cpuinfo).

  XLA:CPU compiles for the host's CPU features, and JAX's persistent cache key
  does not include them (platform 'cpu', XLA flags, devices, jaxlib version);
  an entry written on another CPU is loaded with only an ERROR log
  ("... could lead to execution errors such as SIGILL", cpu_aot_loader.cc).
  One cache directory per CPU type keeps a temp dir shared by runners of
  different CPUs (an AVX2 EPYC, an AVX-512/AMX Xeon) from mixing entries.
  """
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      info = f.read()
  except OSError:
    info = ""
  fields = [m.group(1).strip() if m else "" for m in (
      re.search(r"^model name\s*:(.*)$", info, re.M),
      re.search(r"^flags\s*:(.*)$", info, re.M))]
  return hashlib.sha256("|".join(fields).encode()).hexdigest()[:12]


# The same small programs (smoke-config step, init, evals) are compiled by many
# tests and subprocesses; XLA:CPU compiles dominate the suite's time, so share
# them through JAX's persistent compilation cache, one per CPU type.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"jssl-test-jax-cache-{_host_cpu_tag()}"))
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
