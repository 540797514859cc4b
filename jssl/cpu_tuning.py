"""XLA:CPU settings chosen by measurement on the CPU in hand, cached per CPU model.

Two settings decide how fast a convolutional train step runs on XLA:CPU, and the
best choice differs between CPU families (issue 16; `benchmarks/conv_cpu.py`):

* `conv_impl` of the ResNets (`jssl.models.conv`): 'xla' (XLA's convolution and
  its kernel gradient) or 'matmul' (the kernel gradient as shifted matmuls).
  On a 2-core AMD EPYC (AVX2) 'matmul' was 2x faster; on a 2-core Intel Xeon
  (AVX-512, AMX) 'xla' was 1.4x faster.
* Which ops XLA:CPU hands to YNNPACK (`--xla_cpu_experimental_ynn_fusion_type`, a
  list flag of XLA's `DebugOptions.LibraryFusionType`; `=-individual_convolution`
  removes single convolutions from jaxlib's default list, `=` empties it). On the
  Xeon, taking convolutions away from YNNPACK made the 'xla' step 1.6x faster.
  XLA reads the flag when the CPU backend starts, so it can only be chosen
  before the first JAX computation of the process.

`tune()` measures a small convolutional forward+backward (the shapes of a
ResNet-18 CIFAR stage: 3x3 convolutions at 32 and 16 px, a strided one) under
each candidate flag set in its own subprocess -- a candidate that crashes or
hangs (YNNPACK did on some x86 CPUs in jaxlib 0.10.2, jax-ml/jax#39257) is only
dropped -- and both conv_impl values in each. The fastest pair is cached in
`~/.cache/jssl/cpu_tuning.json` (or `$JSSL_CACHE_DIR`) under a key of the CPU
model, its ISA flags, the core count and the jaxlib version, so it runs once
per machine type (two rounds: about 140 s of CPU time, 80 s on 2 idle cores;
not cached when the machine is busy, see `tune`).

`python -m jssl.main` calls `apply()` before JAX starts when the run can only
use the CPU: it sets the cached (or freshly measured) XLA flag and makes
`conv_impl='auto'` resolve to the measured implementation. Switches:

* `JSSL_CPU_TUNING=off`: no measurement, no flag; 'auto' means 'matmul' on CPU
  (the behaviour before this module). The test suite runs this way.
* An `--xla_cpu_experimental_ynn_fusion_type` already in `XLA_FLAGS` is the
  user's choice and is kept; only conv_impl is then measured under it.
* In a notebook: `jssl.cpu_tuning.apply()` before the first JAX computation, or
  `python -m jssl.cpu_tuning` once to measure and print the table.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Optional

from absl import logging

ENV_SWITCH = "JSSL_CPU_TUNING"
_APPLIED_ENV = "JSSL_CPU_TUNING_FLAG"  # the flag apply() added, inherited by children
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# name -> flag appended to XLA_FLAGS ('' = jaxlib's default YNNPACK fusions).
CANDIDATES = {
    "ynn_default": "",
    "ynn_no_conv": f"{YNN_FLAG}=-individual_convolution",
    "ynn_off": f"{YNN_FLAG}=",
}
CONV_IMPLS = ("xla", "matmul")
FALLBACK_CONV_IMPL = "matmul"
_ACCELERATOR_PLUGINS = ("jax-cuda", "jax_cuda", "libtpu", "jax-rocm", "jax_rocm",
                        "jax-metal", "jax_metal")


@dataclasses.dataclass(frozen=True)
class Tuning:
  """What the CPU runs with. source: 'cache' | 'measured' | 'off' | 'none'."""
  xla_flag: str
  conv_impl: str
  source: str
  candidate: str = ""


_APPLIED: Optional[Tuning] = None


# --- identity of the machine ---------------------------------------------
def cpu_key() -> str:
  """CPU model + ISA flags + cores + jaxlib: what the best choice depends on."""
  model, flags = "", ""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      info = f.read()
    m = re.search(r"^model name\s*:(.*)$", info, re.M)
    model = m.group(1).strip() if m else ""
    m = re.search(r"^flags\s*:(.*)$", info, re.M)
    flags = m.group(1).strip() if m else ""
  except OSError:
    import platform  # pylint: disable=import-outside-toplevel
    model = platform.processor() or platform.machine()
  try:
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    jaxlib = metadata.version("jaxlib")
  except Exception:  # pylint: disable=broad-except
    jaxlib = "?"
  isa = hashlib.sha256(flags.encode()).hexdigest()[:8]
  return f"{model or 'unknown CPU'} | isa {isa} | {os.cpu_count()} cores | jaxlib {jaxlib}"


def cache_path() -> str:
  root = os.environ.get("JSSL_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "jssl")
  return os.path.join(root, "cpu_tuning.json")


def _read_cache() -> dict:
  try:
    with open(cache_path(), encoding="utf-8") as f:
      data = json.load(f)
    return data if isinstance(data, dict) else {}
  except (OSError, ValueError):
    return {}  # absent or damaged: measure again


def _write_cache(key: str, entry: dict) -> None:
  data = _read_cache()
  data[key] = entry
  path = cache_path()
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)  # atomic: concurrent runs never read half a file
  except OSError as e:
    print(f"jssl: could not cache the CPU tuning in {path} ({e}); it will be "
          "measured again next run", file=sys.stderr)


# --- measuring -------------------------------------------------------------
def _micro_benchmark(batch: int = 32, repeats: int = 3) -> dict:
  """Images/s of a small conv net's forward+backward, per conv_impl (worker)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jssl.models.conv import conv2d  # pylint: disable=import-outside-toplevel

  k = jax.random.split(jax.random.key(0), 5)
  x = jax.random.normal(k[0], (batch, 32, 32, 64))
  ws = (jax.random.normal(k[1], (3, 3, 64, 64)) * 0.05,
        jax.random.normal(k[2], (3, 3, 64, 128)) * 0.05,
        jax.random.normal(k[3], (3, 3, 128, 128)) * 0.05)
  same = ((1, 1), (1, 1))
  out = {}
  for impl in CONV_IMPLS:
    def loss(ws, x, impl=impl):
      h = jax.nn.relu(conv2d(x, ws[0], (1, 1), same, impl))
      h = jax.nn.relu(conv2d(h, ws[1], (2, 2), same, impl))
      h = jax.nn.relu(conv2d(h, ws[2], (1, 1), same, impl))
      return jnp.mean(h ** 2)
    fn = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(fn(ws, x))  # compile
    jax.block_until_ready(fn(ws, x))  # warm-up
    best = float("inf")
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(ws, x))
      best = min(best, time.perf_counter() - t0)
    out[impl] = batch / best
  return out


def _run_worker(flag: str, timeout: float, batch: int = 32) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
  env["JAX_PLATFORMS"] = "cpu"
  env[ENV_SWITCH] = "off"
  try:
    r = subprocess.run([sys.executable, "-m", "jssl.cpu_tuning", "--worker", str(batch)],
                       env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f}s"}
  lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
  if r.returncode != 0 or not lines:
    tail = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
    return {"error": f"exit status {r.returncode}: {tail[:200]}"}
  return json.loads(lines[-1])


def user_ynn_flag() -> Optional[str]:
  """The YNNPACK flag the user already put in XLA_FLAGS, if any (not one that
  `apply` set here or in a parent process: `_APPLIED_ENV` names that one)."""
  m = re.search(rf"{YNN_FLAG}=(\S*)", os.environ.get("XLA_FLAGS", ""))
  if m is None or m.group(0) == os.environ.get(_APPLIED_ENV):
    return None
  return m.group(0)


def choose(results: dict, *, tolerance: float = 0.03) -> tuple[str, str]:
  """(candidate, conv_impl) with the most images/s; errors are skipped.

  A candidate within `tolerance` of the fastest that comes earlier in
  `results` (fewer changes to jaxlib's defaults: the micro-benchmark only times
  convolutions, and the flags also move matmuls) wins the tie.
  """
  scored = [(v, name, impl) for name, res in results.items() for impl in CONV_IMPLS
            if isinstance(v := res.get(impl), (int, float))]
  top = max((v for v, _, _ in scored), default=None)
  best = next((x for x in scored if x[0] >= (1 - tolerance) * top), None) if scored else None
  if best is None:
    raise RuntimeError("every XLA:CPU candidate failed: "
                       + "; ".join(f"{n}: {r.get('error')}" for n, r in results.items()))
  return best[1], best[2]


def _busy() -> bool:
  """More runnable threads than cores: timings would measure the neighbours."""
  try:
    return os.getloadavg()[0] > (os.cpu_count() or 1)
  except OSError:
    return False


def _best_of(rounds: list) -> dict:
  """Per candidate and conv_impl, the best images/s over the rounds (an error
  only when every round failed)."""
  out = {}
  for name in rounds[0]:
    runs = [r[name] for r in rounds]
    ok = [r for r in runs if "error" not in r]
    out[name] = ({impl: max(r[impl] for r in ok) for impl in CONV_IMPLS} if ok
                 else runs[-1])
  return out


def tune(*, timeout: float = 180.0, rounds: int = 2, verbose: bool = True) -> dict:
  """Measures every candidate (subprocesses), caches and returns the entry.

  The candidates are measured round-robin, `rounds` times, best of each: load
  that comes and goes then hits them alike. On a busy machine (load average
  above the core count) the choice is used but not cached, so a quieter run
  measures again (a choice measured under load picked a 2x slower setting).
  """
  user = user_ynn_flag()
  candidates = {"user": ""} if user else CANDIDATES
  busy = _busy()
  if verbose:
    print(f"jssl: measuring XLA:CPU settings for this CPU ({cpu_key()}); "
          + ("the machine is busy: not cached" if busy else f"cached in {cache_path()}"),
          file=sys.stderr, flush=True)
  per_round = []
  for _ in range(max(int(rounds), 1)):
    per_round.append({name: _run_worker(flag, timeout) for name, flag in candidates.items()})
    if all("error" in r for r in per_round[-1].values()):
      break  # broken everywhere: another round would only repeat the errors
  results = _best_of(per_round)
  name, impl = choose(results)
  entry = {"candidate": name, "xla_flag": user or candidates[name], "conv_impl": impl,
           "images_per_s": results, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
           "busy": busy}
  if not busy:
    _write_cache(_cache_key(user), entry)
  return entry


def _cache_key(user: Optional[str]) -> str:
  return cpu_key() + (f" | user {user}" if user else "")


# --- applying --------------------------------------------------------------
def cpu_only() -> bool:
  """True when JAX can only run on the CPU here (no accelerator plugin, or
  JAX_PLATFORMS=cpu): tuning an accelerator host's CPU would be wasted."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return set(platforms.split(",")) == {"cpu"}
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  for dist in metadata.distributions():
    name = (dist.metadata.get("Name") or "").lower()
    if name.startswith(_ACCELERATOR_PLUGINS):
      return False
  return True


def _backend_started() -> bool:
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    return bool(xla_bridge._backends)  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except
    return True  # unknown: do not pretend a late flag takes effect


def apply(*, measure: bool = True) -> Tuning:
  """Sets the measured XLA:CPU flag and conv_impl for this process.

  Call before the first JAX computation. Measures (once per CPU model) when
  nothing is cached and `measure` is true.
  """
  global _APPLIED
  if os.environ.get(ENV_SWITCH, "auto").lower() == "off":
    _APPLIED = Tuning("", FALLBACK_CONV_IMPL, "off")
    return _APPLIED
  if os.environ.get(ENV_SWITCH, "auto").lower() not in ("auto", "on"):
    raise ValueError(f"{ENV_SWITCH} must be 'auto' or 'off', got "
                     f"{os.environ[ENV_SWITCH]!r}")
  user = user_ynn_flag()
  entry = _read_cache().get(_cache_key(user))
  source = "cache"
  if entry is None:
    if not measure:
      _APPLIED = Tuning("", FALLBACK_CONV_IMPL, "none")
      return _APPLIED
    entry, source = tune(), "measured"
  flag = "" if user else entry.get("xla_flag", "")
  if flag and flag not in os.environ.get("XLA_FLAGS", ""):
    if _backend_started():
      print(f"jssl: JAX's CPU backend already started; {flag} not applied",
            file=sys.stderr)
      flag = ""
    else:
      os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
      os.environ[_APPLIED_ENV] = flag
  _APPLIED = Tuning(flag, entry.get("conv_impl", FALLBACK_CONV_IMPL), source,
                    entry.get("candidate", ""))
  return _APPLIED


def conv_impl() -> str:
  """What `conv_impl='auto'` means on the CPU backend in this process."""
  if _APPLIED is not None:
    return _APPLIED.conv_impl
  if os.environ.get(ENV_SWITCH, "auto").lower() == "off":
    return FALLBACK_CONV_IMPL
  # Not applied (a notebook): a cached measurement for these flags, if any.
  entry = _read_cache().get(_cache_key(user_ynn_flag()))
  if entry and (not entry.get("xla_flag")
                or entry["xla_flag"] in os.environ.get("XLA_FLAGS", "")):
    return entry.get("conv_impl", FALLBACK_CONV_IMPL)
  return FALLBACK_CONV_IMPL


def describe(t: Tuning) -> str:
  if t.source in ("off", "none"):
    return f"XLA:CPU tuning {t.source}: conv_impl auto = {t.conv_impl}"
  return (f"XLA:CPU tuning ({t.source}, {t.candidate}): conv_impl auto = {t.conv_impl}"
          + (f", {t.xla_flag}" if t.xla_flag else ""))


def apply_for_run() -> Optional[Tuning]:
  """What `python -m jssl.main` and `python -m jssl.benchmark` do before JAX
  starts: apply the tuning when the process can only use the CPU, print one
  line saying what it runs with, and fall back to jaxlib's defaults (with a
  warning) when the measurement fails. None on accelerator hosts."""
  if not cpu_only():
    return None
  try:
    tuning = apply()
  except (RuntimeError, OSError) as e:
    logging.warning("XLA:CPU tuning failed (%s): running with jaxlib's defaults", e)
    return None
  if tuning.source != "off":
    print(f"jssl: {describe(tuning)}", flush=True)
  return tuning


def main(argv: list[str]) -> int:
  if "--worker" in argv:
    batch = int(argv[argv.index("--worker") + 1]) if len(argv) > 1 else 32
    print(json.dumps(_micro_benchmark(batch)), flush=True)
    return 0
  entry = tune(verbose=True)
  print(f"{'candidate':12s} {'flag':58s} " + " ".join(f"{i:>10s}" for i in CONV_IMPLS))
  for name, res in entry["images_per_s"].items():
    flag = CANDIDATES.get(name, user_ynn_flag() or "")
    cells = [f"{res[i]:10.1f}" if i in res else f"{'-':>10s}" for i in CONV_IMPLS]
    print(f"{name:12s} {flag or '(jaxlib default)':58s} " + " ".join(cells)
          + (f"  {res['error']}" if "error" in res else ""))
  print(f"chosen: {entry['candidate']} with conv_impl={entry['conv_impl']} "
        f"(images/s of the micro-benchmark; {cpu_key()})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
