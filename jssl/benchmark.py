r"""Train-step and input-pipeline throughput of a config, on the devices present.

  python -m jssl.benchmark --config=configs/simclr.py:cifar10 \
      --config.batch_size=128 [--steps=15] [--pipeline_batches=30]

Prints: compile time, the median step time over `--steps` steps after 2
warm-up steps (images/s and views/s), MFU (XLA's FLOP count of the compiled
step over the device's peak for the compute dtype `model.dtype`; see
`jssl.perf` for the FLOP count, the peak table and its sources, and the
measured CPU peak), XLA's compile-time memory analysis of the step (temp,
argument, output bytes per device), peak memory (device allocator on GPU/TPU,
process max RSS on CPU), the host input pipeline's images/s (when its dataset
is available), and the folder source's host pipeline on generated JPEGs
(`--host_folder`, `jssl.data.benchmark.folder_figures`: decode + 2 random
resized crops at 224 px from 500x375 and at 32 px from 32x32, per CPU second
and with one thread per core) next to the step's demand. The train step is fed
a synthetic global batch of the config's shapes so it measures compute only. A
benchmark, not a test: these machines are shared, so read figures as +-10%.

Output: a `key  value` table, then (`--json_line`, on by default) the same
figures as ONE JSON line on stdout, the only line that starts with '{', so
`grep '^{'` over many runs collects a table. Its keys (`JSON_KEYS`; a figure
that could not be measured is null):

  benchmark, config, method, model, dtype, devices, device_kind, platform,
  num_devices, global_batch, per_device_batch, views, image_size,
  compile_s, step_s_median, step_s_min, step_s_max, cpu_s_per_step,
  images_per_s, images_per_s_per_device, views_per_s,
  flops_per_step_per_device   XLA cost analysis of the compiled step
  flops_per_step_per_device_hlo   the same of the unoptimised program / devices
  tflops_per_s_per_device, peak_tflops_per_device, peak_basis,
  mfu, mfu_hlo                fractions of the peak (0.42 = 42%)
  matmul_precision            jax_default_matmul_precision (null: default)
  peak_memory_mb, peak_memory_kind,
  compiled_temp_mb, compiled_argument_mb, compiled_output_mb,
  compiled_alias_mb, compiled_code_mb (and compiled_peak_mb where reported)
  pipeline_images_per_s_per_host   the config's own input pipeline, or null
  input_headroom_x, input_headroom_basis   what the input side delivers over
      what the step consumes, per host (> 1: the step is not input-bound):
      the config's pipeline when measured, else the folder pipeline on
      generated JPEGs (`host_feeds_step_x`); on CPU devices, which share the
      cores with the pipeline, in images per CPU second of each.
  cpu_tuning                  on a CPU-only host, the XLA:CPU flag and conv_impl
      the step ran with (`jssl.cpu_tuning`, applied as `jssl.main` does, so the
      figures are what a training run gets); null on accelerator hosts
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from jssl import perf

# The command-line flags, defined only when run as a program (`_define_flags`):
# defining them at import clashed with `jssl.main`'s --config in one process
# (tests import both).
_F: dict = {}


def _define_flags() -> None:
  _F.update(
      config=config_flags.DEFINE_config_file("config", None, "Config file[:preset].",
                                             lock_config=True),
      steps=flags.DEFINE_integer("steps", 15, "Timed steps (median reported)."),
      warmup=flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation."),
      pipeline=flags.DEFINE_integer("pipeline_batches", 30,
                                    "Host batches timed for the input pipeline (0 to skip)."),
      json=flags.DEFINE_string("json", None, "Also write the figures here."),
      json_line=flags.DEFINE_bool("json_line", True,
                                  "Print the figures as one JSON line on stdout."),
      host_folder=flags.DEFINE_bool("host_folder", True,
                                    "Time the folder source's host pipeline on generated "
                                    "JPEGs (224 px and 32 px)."))


JSON_KEYS = (
    "benchmark", "config", "method", "model", "dtype", "devices", "device_kind", "platform",
    "num_devices", "global_batch", "per_device_batch", "views", "image_size",
    "compile_s", "step_s_median", "step_s_min", "step_s_max", "cpu_s_per_step",
    "images_per_s", "images_per_s_per_device", "views_per_s",
    "flops_per_step_per_device", "flops_per_step_per_device_hlo", "tflops_per_s_per_device",
    "peak_tflops_per_device", "peak_basis", "mfu", "mfu_hlo", "matmul_precision",
    "peak_memory_mb", "peak_memory_kind", "compiled_temp_mb", "compiled_argument_mb",
    "compiled_output_mb", "compiled_alias_mb", "compiled_code_mb",
    "pipeline_images_per_s_per_host", "input_headroom_x", "input_headroom_basis",
    "cpu_tuning")


def _peak_memory_bytes() -> tuple[int, str]:
  dev = jax.local_devices()[0]
  stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), f"{dev.platform} allocator peak (process)"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, \
      "process max RSS"


def synthetic_batch(config, rng: np.random.Generator) -> dict:
  """A host batch of the config's global shapes, as the step receives it:
  host crops `views` [b, V, S, S, 3] (+ `local_views`) for host-cropping
  sources (tfds, folder), else `image` [b, S, S, 3]; uint8 pixels, int32
  `label`; image-text configs (with a `text` field) also get `text` int32
  [b, K, L] token rows ending in a non-zero EOS."""
  from jssl.data import recipes  # pylint: disable=import-outside-toplevel
  size, v = config.views.image_size, config.views.num_views
  b = config.batch_size
  text = config.get("text")
  if config.data.source in ("tfds", "folder") and text is None:  # crops taken on host
    spec = {"views": ((b, v, size, size, 3), np.uint8)}
    local = recipes.local_crops(config.views)
    if local.num:  # multi-crop: host local crops at their own resolution
      spec["local_views"] = ((b, local.num, local.image_size,
                              local.image_size, 3), np.uint8)
  else:
    spec = {"image": ((b, size, size, 3), np.uint8)}
  spec["label"] = ((b,), np.int32)
  host = {k: (rng.integers(0, 255, s, dtype=np.uint8) if d == np.uint8 else
              rng.integers(0, 10, s).astype(d)) for k, (s, d) in spec.items()}
  if text is not None:
    k = int(config.data.get("captions_per_image", 1) or 1)
    length = int(text.tokenizer.context_length)
    vocab = int(text.model.get("vocab_size", 0) or 0) or _tokenizer_vocab(text)
    tokens = rng.integers(3, vocab, (b, k, length)).astype(np.int32)
    tokens[..., -1] = 2  # EOS last: rows are full-length captions
    host["text"] = tokens
  return host


def _tokenizer_vocab(text) -> int:
  from jssl.text import tokenizers  # pylint: disable=import-outside-toplevel
  return int(tokenizers.make(text.tokenizer).vocab_size)


def benchmark_step(config, *, steps: int = 15, warmup: int = 2,
                   hlo_flops: bool = True, measure_cpu_peak: bool = True) -> dict:
  """Compiles and times the train step of `config` on a synthetic batch.

  Returns the step's figures (see the module docstring for the keys): compile
  time, median/min/max step time, images/s, FLOPs per step and MFU, XLA's
  memory analysis, peak memory. `hlo_flops` adds the cost analysis of the
  unoptimised program (a cross-check); `measure_cpu_peak` times the CPU's
  matmul peak once (cached) when the devices are CPUs.
  """
  from jssl import methods, schedules, sharding as shd, step as step_lib  # pylint: disable=import-outside-toplevel
  from jssl.data import device_views  # pylint: disable=import-outside-toplevel

  if warmup < 0 or steps < 1:
    raise ValueError(f"--warmup must be >= 0 and --steps >= 1, got {warmup} and {steps}")
  mesh = shd.make_mesh(config.mesh)
  shd.check_global_batch(config.batch_size, mesh)
  size, v = config.views.image_size, config.views.num_views
  b = config.batch_size
  batch = shd.to_global(synthetic_batch(config, np.random.default_rng(0)), mesh)
  batch_spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                            batch)
  total = 1000
  method = methods.make(config, methods.TrainLength(total, 100.0), mesh=mesh)
  tx, schedule = schedules.make_optimizer(config.optimizer, global_batch=b,
                                          total_steps=total, steps_per_epoch=100,
                                          frozen=method.frozen, model=config.model,
                                          constant_lr=method.constant_lr)
  view_fn = device_views.make_view_fn(config.views, v)
  init_fn, state_sh = step_lib.make_init(method, tx, view_fn, mesh, batch_spec,
                                         seed=0)
  train_step = step_lib.make_train_step(method, tx, view_fn, schedule, mesh,
                                        state_sh)
  state = init_fn()
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  lowered = train_step.lower(state, batch)
  compiled = lowered.compile()
  t_compile = time.perf_counter() - t0
  for _ in range(warmup):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  times = []
  cpu0 = time.process_time()
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  cpu_per_step = (time.process_time() - cpu0) / steps
  med = statistics.median(times)
  peak_mem, how = _peak_memory_bytes()
  dev = jax.devices()[0]
  n = jax.device_count()
  dtype = str(config.model.get("dtype", "float32") or "float32")
  flops = perf.step_flops(compiled)
  flops_hlo = perf.hlo_flops(lowered, n) if hlo_flops else None
  peak = perf.peak_flops(dev, dtype, measure_cpu=measure_cpu_peak)
  mfu = perf.mfu(flops, med, peak.flops)
  mfu_hlo = perf.mfu(flops_hlo, med, peak.flops)
  out = {"benchmark": "jssl.benchmark", "config": None,
         "method": config.get("method"), "model": config.model.name, "dtype": dtype,
         "devices": f"{n} x {dev.device_kind}", "device_kind": dev.device_kind,
         "platform": dev.platform, "num_devices": n,
         "global_batch": b, "per_device_batch": b // n, "views": v, "image_size": size,
         "compile_s": round(t_compile, 2),
         "step_s_median": round(med, 4),
         "step_s_min": round(min(times), 4), "step_s_max": round(max(times), 4),
         # Host CPU seconds per step (all threads): on a shared CPU machine
         # this is steadier than wall time.
         "cpu_s_per_step": round(cpu_per_step, 3),
         "images_per_s": round(b / med, 1),
         "images_per_s_per_device": round(b / med / n, 1),
         "views_per_s": round(b * v / med, 1),
         "flops_per_step_per_device": flops, "flops_per_step_per_device_hlo": flops_hlo,
         "tflops_per_s_per_device": None if flops is None else round(flops / med / 1e12, 4),
         "peak_tflops_per_device": None if peak.flops is None else round(peak.flops / 1e12, 4),
         "peak_basis": peak.basis,
         "mfu": None if mfu is None else round(mfu, 4),
         "mfu_hlo": None if mfu_hlo is None else round(mfu_hlo, 4),
         "matmul_precision": jax.config.jax_default_matmul_precision,
         "peak_memory_mb": round(peak_mem / 2**20, 1), "peak_memory_kind": how}
  out.update(perf.memory_fields(compiled))
  return out


def benchmark_pipeline(config, n_batches: int) -> dict:
  """Images/s of the config's own host input pipeline (per wall second and per
  CPU second of this process), or a `pipeline` note when it cannot be built
  (e.g. its dataset is absent)."""
  from jssl import sharding as shd, train  # pylint: disable=import-outside-toplevel
  mesh = shd.make_mesh(config.mesh)
  try:
    data = train.build_datasets(config, mesh)
  except Exception as e:  # pylint: disable=broad-except
    return {"pipeline": f"skipped: {type(e).__name__}: {str(e)[:200]}"}
  it = data.train_batches(0)
  next(it)  # start-up (file opening, shuffle buffer fill) not timed
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(n_batches):
    next(it)
  dt, dc = time.perf_counter() - t0, time.process_time() - c0
  per_process = config.batch_size // jax.process_count()
  return {"pipeline_images_per_s_per_host": round(per_process * n_batches / dt, 1),
          "pipeline_images_per_cpu_s": round(per_process * n_batches / max(dc, 1e-9), 1),
          "pipeline_batches": n_batches}


def input_headroom(out: dict) -> dict:
  """`input_headroom_x`: images the input side delivers per host over what the
  step consumes per host, and its basis. The config's own pipeline when it was
  measured, else the folder pipeline's `host_feeds_step_x`; on CPU devices in
  images per CPU second of each (they share the cores), else per wall second.
  Both null when neither was measured."""
  on_cpu = out.get("platform") == "cpu"
  if out.get("pipeline_images_per_s_per_host"):
    if on_cpu:
      step_per_cpu_s = out["global_batch"] / max(out["cpu_s_per_step"], 1e-9)
      ratio = out["pipeline_images_per_cpu_s"] / step_per_cpu_s
      basis = "config pipeline vs step, images per CPU second"
    else:
      demand = out["images_per_s"] / jax.process_count()
      ratio = out["pipeline_images_per_s_per_host"] / demand
      basis = "config pipeline vs step, images per wall second per host"
    return {"input_headroom_x": round(ratio, 2), "input_headroom_basis": basis}
  if out.get("host_feeds_step_x") is not None:
    return {"input_headroom_x": out["host_feeds_step_x"],
            "input_headroom_basis": "folder pipeline on generated JPEGs (host_feeds_step_x)"}
  return {"input_headroom_x": None, "input_headroom_basis": None}


def json_line(out: dict) -> str:
  """`out` as one JSON line with every `JSON_KEYS` key (null when absent)
  first, then any other figures."""
  row = {k: out.get(k) for k in JSON_KEYS}
  row.update({k: v for k, v in out.items() if k not in row})
  return json.dumps(row, separators=(", ", ": "), default=str)


def main(argv):
  del argv
  # Before the first JAX computation: the settings `python -m jssl.main` runs with.
  from jssl import cpu_tuning  # pylint: disable=import-outside-toplevel
  tuning = cpu_tuning.apply_for_run()
  config = _F["config"].value
  out = benchmark_step(config, steps=_F["steps"].value, warmup=_F["warmup"].value)
  config_arg = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), None)
  out["config"] = config_arg
  out["cpu_tuning"] = None if tuning is None else cpu_tuning.describe(tuning)
  if _F["pipeline"].value:
    out.update(benchmark_pipeline(config, _F["pipeline"].value))
  if _F["host_folder"].value:
    from jssl.data import benchmark as data_bench  # pylint: disable=import-outside-toplevel
    host = data_bench.folder_figures()
    out.update(host)
    near = "224px" if config.views.image_size >= 128 else "32px"
    per_core = next(v for k, v in host.items() if near in k and k.endswith("per_cpu_s"))
    if jax.default_backend() == "cpu":
      # The step and the pipeline share the cores: compare CPU seconds per
      # image (steadier than wall time on a shared machine).
      step_per_cpu_s = out["global_batch"] / out["cpu_s_per_step"]
      out["host_feeds_step_x"] = round(per_core / step_per_cpu_s, 2)
    else:
      # Capacity of the host (per-core rate x cores) over the step's demand
      # per host.
      demand = out["images_per_s"] / jax.process_count()
      out["host_feeds_step_x"] = round(per_core * (os.cpu_count() or 1) / demand, 2)
  out.update(input_headroom(out))
  width = max(len(k) for k in out)
  for k, v in out.items():
    print(f"{k:<{width}}  {v}")
  if _F["json_line"].value:
    print(json_line(out), flush=True)
  if _F["json"].value:
    with open(_F["json"].value, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  from jssl import configs  # pylint: disable=import-outside-toplevel
  _define_flags()
  # Run-book names (--config=simclr:cifar10) as jssl.main takes them.
  sys.argv = configs.resolve_argv(sys.argv)
  app.run(main, argv=sys.argv)
