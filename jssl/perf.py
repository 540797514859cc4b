r"""Model FLOPs utilisation (MFU): XLA's FLOP count of a compiled step over the
device's peak.

  flops = step_flops(compiled)            # per device, from XLA's cost analysis
  peak = peak_flops(jax.devices()[0], "bfloat16")
  mfu(flops, step_seconds, peak.flops)     # fraction of the peak

FLOPs. `compiled.cost_analysis()['flops']` of the jitted train step
(`jitted.lower(...).compile()`): XLA's HloCostAnalysis of the optimised, SPMD-
partitioned program, so **per device** (checked on 8 CPU devices: a data-
parallel matmul counts 1/8 of the global 2*M*N*K). A dot or a convolution
counts 2 FLOPs per multiply-add (a VALID convolution exactly 2*out*k*k*c_in;
SAME padding skips the padded taps); elementwise ops add ~1 per element. It
counts what the program executes: rematerialised forwards count again (so it
sits between "model" and "hardware" FLOPs of the PaLM paper, App. B), the
optimiser update counts too. On jax 0.10 `cost_analysis()` returns a dict
(older releases: a list with one dict per program); `step_flops` takes either.
`hlo_flops(lowered)` is the same analysis of the unoptimised global program
(before partitioning and fusion), divided by the device count: a cross-check
where a backend's optimised program hides FLOPs in library calls.

Peaks (`PEAKS`): dense (no 2:4 sparsity) vendor figures per device as
`device.device_kind` spells it, matched by substring, the more specific key
first ('H100 PCIe' before 'H100'). Which peak divides depends on the compute
dtype and on how XLA runs float32 matmuls:

  - bfloat16 / float16 compute: the bf16 tensor-core (GPU) or MXU (TPU) peak.
  - float32 on NVIDIA: JAX's default matmul precision lets XLA use TF32 tensor
    cores for float32 dots and convolutions (docs.jax.dev "Matmul precision":
    "bfloat16 on TPU, TF32 on recent GPUs"), so the TF32 tensor peak divides;
    with `jax_default_matmul_precision` 'highest' / 'float32' the CUDA-core
    FP32 peak divides instead.
  - float32 on TPU: the default precision is one bf16 MXU pass (jax#1856,
    jax#18934), so the bf16 peak divides; 'high' (3 passes) and 'highest'
    (6 passes) divide it by 3 and 6.
  - CPU: no datasheet; `cpu_matmul_peak` times a large jitted matmul of the
    dtype on the machine in hand (the best XLA:CPU reaches under the current
    XLA_FLAGS) and caches it per CPU model, core count, jax version and
    XLA_FLAGS under $XDG_CACHE_HOME/jssl (~/.cache/jssl). Simulated CPU devices
    (`--xla_force_host_platform_device_count`) share the cores, so each gets
    the measured peak over the local device count.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import time
from typing import Any, Mapping, Optional

# Dense peaks in FLOP/s per jax device. Keys of each entry: 'bfloat16' (tensor
# core / MXU), 'tf32' (NVIDIA TF32 tensor core), 'float32' (NVIDIA CUDA cores,
# no tensor core). Each with the datasheet it comes from; the NVIDIA datasheets
# list the tensor figures "with sparsity", the dense figure is half.
_NV_H100 = ("NVIDIA H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100; "
            "SXM: BF16 1,979 / TF32 989 TFLOPS with sparsity, FP32 67; PCIe: BF16 1,513 / "
            "TF32 756 with sparsity, FP32 51); NVIDIA H100 whitepaper table: dense BF16 "
            "989.4, TF32 494.7, FP32 66.9 (SXM5)")
_NV_H200 = ("NVIDIA H200 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h200; "
            "H200 SXM: BF16 1,979 / TF32 989 TFLOPS with sparsity, FP32 67 -- the H100 SXM "
            "compute, GH100 die, with 141 GB HBM3e)")
_NV_A100 = ("NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4; "
            "BF16 312, TF32 156, FP32 19.5 TFLOPS dense; same for SXM4/PCIe, 40/80 GB)")
_TPU = "Cloud TPU system architecture docs (cloud.google.com/tpu/docs/{v}: peak compute per chip)"


@dataclasses.dataclass(frozen=True)
class Peak:
  """A device family's dense peak FLOP/s per jax device, by compute kind."""
  match: str                       # substring of `device.device_kind`
  name: str
  flops: Mapping[str, float]       # 'bfloat16' | 'tf32' | 'float32' -> FLOP/s
  source: str


PEAKS: tuple[Peak, ...] = (
    # NVIDIA: more specific strings first ('H100 PCIe' contains 'H100').
    Peak("H100 PCIe", "NVIDIA H100 PCIe",
         {"bfloat16": 756e12, "tf32": 378e12, "float32": 51e12}, _NV_H100),
    Peak("H100", "NVIDIA H100 SXM",  # device_kind 'NVIDIA H100 80GB HBM3'
         {"bfloat16": 989e12, "tf32": 494e12, "float32": 67e12}, _NV_H100),
    Peak("H200", "NVIDIA H200 SXM",
         {"bfloat16": 989e12, "tf32": 494e12, "float32": 67e12}, _NV_H200),
    Peak("A100", "NVIDIA A100",  # 'NVIDIA A100-SXM4-80GB', 'NVIDIA A100-PCIE-40GB', ...
         {"bfloat16": 312e12, "tf32": 156e12, "float32": 19.5e12}, _NV_A100),
    # TPU: one jax device per chip from v4 on (megacore); 'TPU v5 lite' is v5e,
    # v5p reports 'TPU v5' (or 'TPU v5p'), v6e 'TPU v6 lite'.
    Peak("TPU v4", "TPU v4", {"bfloat16": 275e12}, _TPU.format(v="v4")),
    Peak("TPU v5 lite", "TPU v5e", {"bfloat16": 197e12}, _TPU.format(v="v5e")),
    Peak("TPU v5e", "TPU v5e", {"bfloat16": 197e12}, _TPU.format(v="v5e")),
    Peak("TPU v5", "TPU v5p", {"bfloat16": 459e12}, _TPU.format(v="v5p")),
    Peak("TPU v6 lite", "TPU v6e", {"bfloat16": 918e12}, _TPU.format(v="v6e")),
)

_FULL_F32 = ("highest", "float32", "f32_f32_f32")
_TF32 = ("high", "tensorfloat32", "tf32_tf32_f32")
_BF16 = ("bfloat16", "fastest", "bf16_bf16_f32")


def lookup(device_kind: str) -> Optional[Peak]:
  """The `PEAKS` entry whose `match` is a substring of `device_kind` (case-
  insensitive; the first in table order), or None for an unknown device."""
  kind = device_kind.lower()
  for p in PEAKS:
    if p.match.lower() in kind:
      return p
  return None


@dataclasses.dataclass(frozen=True)
class DevicePeak:
  flops: Optional[float]   # FLOP/s per jax device; None when unknown
  basis: str               # which figure and why, e.g. 'NVIDIA H200 SXM tf32 (...)'


def _matmul_precision(precision: Optional[str]) -> str:
  if precision is None:
    import jax  # pylint: disable=import-outside-toplevel
    precision = jax.config.jax_default_matmul_precision
  return str(precision or "default").lower()


def peak_for(device_kind: str, platform_name: str, dtype: str,
             matmul_precision: Optional[str] = None) -> DevicePeak:
  """The peak a step in compute `dtype` ('float32' | 'bfloat16' | 'float16') is
  measured against on an accelerator (see the module docstring for the rule);
  `matmul_precision` defaults to `jax_default_matmul_precision`. CPUs have no
  table entry: use `peak_flops`, which measures them."""
  dtype = str(dtype)
  if dtype not in ("float32", "bfloat16", "float16"):
    raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
  entry = lookup(device_kind)
  if entry is None:
    return DevicePeak(None, f"unknown device {device_kind!r} (no peak in jssl.perf.PEAKS)")
  prec = _matmul_precision(matmul_precision)
  if dtype != "float32":
    return DevicePeak(entry.flops["bfloat16"], f"{entry.name} bf16 dense ({entry.source})")
  if platform_name == "tpu" or "tf32" not in entry.flops:
    passes = 6 if prec in _FULL_F32 else 3 if prec in _TF32 else 1
    return DevicePeak(entry.flops["bfloat16"] / passes,
                      f"{entry.name} bf16 dense / {passes} (float32 matmuls at precision "
                      f"{prec!r} take {passes} bf16 pass(es)) ({entry.source})")
  if prec in _FULL_F32:
    return DevicePeak(entry.flops["float32"],
                      f"{entry.name} fp32 non-tensor (matmul precision {prec!r}) "
                      f"({entry.source})")
  if prec in _BF16:
    return DevicePeak(entry.flops["bfloat16"],
                      f"{entry.name} bf16 dense (matmul precision {prec!r}) ({entry.source})")
  return DevicePeak(entry.flops["tf32"],
                    f"{entry.name} tf32 dense: float32 dots/convs run on TF32 tensor cores "
                    f"at matmul precision {prec!r} ({entry.source})")


def peak_flops(device, dtype: str, *, measure_cpu: bool = True) -> DevicePeak:
  """`peak_for` for a jax device; on CPU the measured `cpu_matmul_peak` over
  the local device count (simulated devices share the cores)."""
  if device.platform == "cpu":
    if not measure_cpu:
      return DevicePeak(None, "cpu: not measured")
    import jax  # pylint: disable=import-outside-toplevel
    n = jax.local_device_count()
    per_machine, kind = cpu_matmul_peak("float32"), "float32"
    if dtype != "float32":
      # A CPU without bfloat16 units (AVX2; no AVX512-BF16 / AMX) converts and
      # runs 16-bit dots in its float32 units, and XLA's bf16 matmul can come out
      # slower than its float32 one, while convolutions reach float32 speed.
      # Measured (AMD EPYC, AVX2, 2 cores): bf16 matmul 71.5 vs float32 104.9
      # GFLOP/s, and SimCLR's bf16 CIFAR step ran at 90 GFLOP/s, an "MFU" of
      # 1.26 against the bf16 figure. The peak is what the hardware reaches in
      # either dtype.
      bf16 = cpu_matmul_peak("bfloat16")
      kind = "bfloat16" if bf16 >= per_machine else "float32 (above its bfloat16)"
      per_machine = max(bf16, per_machine)
    return DevicePeak(per_machine / n,
                      f"cpu measured {kind} matmul peak "
                      f"of {cpu_model()!r} ({per_machine / 1e9:.1f} GFLOP/s) / {n} device(s)")
  return peak_for(device.device_kind, device.platform, dtype)


def step_flops(compiled) -> Optional[float]:
  """'flops' of `compiled.cost_analysis()` (per device; see module docstring),
  or None when the backend gives no cost analysis. Accepts jax's dict and the
  older list-of-dicts form (summed over programs)."""
  try:
    ca = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  return _flops_of(ca)


def hlo_flops(lowered, num_devices: int) -> Optional[float]:
  """FLOPs of the unoptimised global program of `lowered` over `num_devices`
  (even data-parallel split), or None."""
  try:
    ca = lowered.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  f = _flops_of(ca)
  return None if f is None else f / num_devices


def _flops_of(ca: Any) -> Optional[float]:
  if ca is None:
    return None
  if isinstance(ca, Mapping):
    ca = [ca]
  total = [float(d["flops"]) for d in ca if d and "flops" in d]
  return sum(total) if total else None


def mfu(flops_per_step: Optional[float], step_seconds: float,
        peak: Optional[float]) -> Optional[float]:
  """flops_per_step / step_seconds / peak (all per device), or None when a
  figure is missing."""
  if not flops_per_step or not peak or step_seconds <= 0:
    return None
  return flops_per_step / step_seconds / peak


def memory_fields(compiled) -> dict:
  """XLA's compile-time memory analysis of `compiled` in MiB (per device):
  temp (activations, workspace), argument, output and alias (donated) bytes,
  generated code, and the peak when the backend reports it. {} if absent."""
  try:
    ma = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if ma is None:
    return {}
  out = {}
  for key, attr in (("compiled_temp_mb", "temp_size_in_bytes"),
                    ("compiled_argument_mb", "argument_size_in_bytes"),
                    ("compiled_output_mb", "output_size_in_bytes"),
                    ("compiled_alias_mb", "alias_size_in_bytes"),
                    ("compiled_code_mb", "generated_code_size_in_bytes"),
                    ("compiled_peak_mb", "peak_memory_in_bytes")):
    v = getattr(ma, attr, None)
    if v is not None and v >= 0:
      out[key] = round(v / 2**20, 1)
  if out.get("compiled_peak_mb", 0) < out.get("compiled_temp_mb", 0):
    # XLA:CPU's peak_memory_in_bytes leaves the temp buffers out (measured:
    # 1.4 MiB against 41 MiB of temps); report it only where it can be a peak.
    out.pop("compiled_peak_mb")
  return out


# --- CPU: measured matmul peak ----------------------------------------------------


def cpu_model() -> str:
  """The CPU's model string ('model name' of /proc/cpuinfo; else platform's)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      m = re.search(r"^model name\s*:(.*)$", f.read(), re.M)
    if m:
      return m.group(1).strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown cpu"


def cache_dir() -> str:
  """$XDG_CACHE_HOME/jssl, else ~/.cache/jssl."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jssl")


def _cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


def _cpu_key(dtype: str, size: int) -> str:
  import jax  # pylint: disable=import-outside-toplevel
  flags = os.environ.get("XLA_FLAGS", "")
  raw = f"{cpu_model()}|{_cores()} cores|jax {jax.__version__}|{flags}|{dtype}|{size}"
  return hashlib.sha256(raw.encode()).hexdigest()[:16]


def measure_matmul_flops(dtype: str = "float32", size: int = 2048, *,
                         min_seconds: float = 0.5, max_reps: int = 10) -> float:
  """Best FLOP/s of a jitted [size, size] @ [size, size] matmul in `dtype` on
  the first device (after one untimed call; at least 2 and up to `max_reps`
  timed calls, stopping after `min_seconds`)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  dt = jnp.dtype(dtype)
  key = jax.random.key(0)
  a = jax.random.normal(key, (size, size), jnp.float32).astype(dt)
  b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), jnp.float32).astype(dt)
  f = jax.jit(lambda x, y: x @ y)
  jax.block_until_ready(f(a, b))
  best, spent, reps = float("inf"), 0.0, 0
  while reps < 2 or (spent < min_seconds and reps < max_reps):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, b))
    dt_s = time.perf_counter() - t0
    best, spent, reps = min(best, dt_s), spent + dt_s, reps + 1
  return 2.0 * size ** 3 / best


def cpu_matmul_peak(dtype: str = "float32", size: int = 2048, *,
                    cache: bool = True) -> float:
  """The machine's matmul FLOP/s in `dtype` ('float32' | 'bfloat16') as XLA:CPU
  reaches it (`measure_matmul_flops`), measured once and cached per CPU model,
  core count, jax version and XLA_FLAGS in `cache_dir()/cpu_peak.json`."""
  path = os.path.join(cache_dir(), "cpu_peak.json")
  key = _cpu_key(dtype, size)
  table = {}
  if cache:
    try:
      with open(path, encoding="utf-8") as f:
        table = json.load(f)
      if key in table:
        return float(table[key]["flops"])
    except (OSError, ValueError, KeyError, TypeError):
      table = {}
  flops = measure_matmul_flops(dtype, size)
  if cache:
    table[key] = {"flops": flops, "cpu": cpu_model(), "cores": _cores(), "dtype": dtype,
                  "size": size, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
      os.makedirs(cache_dir(), exist_ok=True)
      tmp = f"{path}.{os.getpid()}.tmp"
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1)
      os.replace(tmp, path)
    except OSError:
      pass  # a read-only home: measure again next time
  return flops
