r"""Train-step and input-pipeline throughput of a config, on the devices present.

  python -m jssl.benchmark --config=configs/simclr.py:cifar10 \
      --config.batch_size=128 [--steps=15] [--pipeline_batches=30]

Prints: compile time, the median step time over `--steps` steps after 2
warm-up steps (images/s and views/s), peak memory (device allocator on
GPU/TPU, process max RSS on CPU), the host input pipeline's images/s (when
its dataset is available), and the folder source's host pipeline on generated
JPEGs (`--host_folder`, `jssl.data.benchmark.folder_figures`: decode + 2
random resized crops at 224 px from 500x375 and at 32 px from 32x32, per CPU
second and with one thread per core) next to the step's demand
(`host_feeds_step_x`: the folder pipeline's per-core rate at the nearer size
times the host's cores, over the step's images/s per host; on CPU devices,
which share the cores with the pipeline, the ratio of images per CPU second). The train step is fed a synthetic
global batch of the config's shapes so it measures compute only. A benchmark,
not a test: these machines are shared, so read figures as +-10%.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:preset].",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 15, "Timed steps (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_PIPELINE = flags.DEFINE_integer("pipeline_batches", 30,
                                 "Host batches timed for the input pipeline "
                                 "(0 to skip).")
_JSON = flags.DEFINE_string("json", None, "Also write the figures here.")
_HOST_FOLDER = flags.DEFINE_bool("host_folder", True,
                                 "Time the folder source's host pipeline on "
                                 "generated JPEGs (224 px and 32 px).")


def _peak_memory_bytes() -> tuple[int, str]:
  dev = jax.local_devices()[0]
  stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), f"{dev.platform} allocator peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, \
      "process max RSS"


def benchmark_step(config) -> dict:
  from jssl import methods, schedules, sharding as shd, step as step_lib  # pylint: disable=import-outside-toplevel
  from jssl.data import device_views, recipes  # pylint: disable=import-outside-toplevel
  from jssl import train  # pylint: disable=import-outside-toplevel

  mesh = shd.make_mesh(config.mesh)
  shd.check_global_batch(config.batch_size, mesh)
  size, v = config.views.image_size, config.views.num_views
  b = config.batch_size
  if config.data.source in ("tfds", "folder"):  # crops taken on host
    spec = {"views": ((b, v, size, size, 3), np.uint8)}
    local = recipes.local_crops(config.views)
    if local.num:  # multi-crop: host local crops at their own resolution
      spec["local_views"] = ((b, local.num, local.image_size,
                              local.image_size, 3), np.uint8)
  else:
    arrays_shape = (b, size, size, 3)
    spec = {"image": (arrays_shape, np.uint8)}
  spec["label"] = ((b,), np.int32)
  rng = np.random.default_rng(0)
  host = {k: (rng.integers(0, 255, s, dtype=np.uint8) if d == np.uint8 else
              rng.integers(0, 10, s).astype(d)) for k, (s, d) in spec.items()}
  batch = shd.to_global(host, mesh)
  batch_spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                            batch)
  steps = 1000
  method = methods.make(config, methods.TrainLength(steps, 100.0), mesh=mesh)
  tx, schedule = schedules.make_optimizer(config.optimizer, global_batch=b,
                                          total_steps=steps, steps_per_epoch=100,
                                          frozen=method.frozen)
  view_fn = device_views.make_view_fn(config.views, v)
  init_fn, state_sh = step_lib.make_init(method, tx, view_fn, mesh, batch_spec,
                                         seed=0)
  train_step = step_lib.make_train_step(method, tx, view_fn, schedule, mesh,
                                        state_sh)
  state = init_fn()
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  t_compile = time.perf_counter() - t0
  if _WARMUP.value < 0 or _STEPS.value < 1:
    raise ValueError(f"--warmup must be >= 0 and --steps >= 1, got "
                     f"{_WARMUP.value} and {_STEPS.value}")
  for _ in range(_WARMUP.value):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  times = []
  cpu0 = time.process_time()
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  cpu_per_step = (time.process_time() - cpu0) / _STEPS.value
  med = statistics.median(times)
  peak, how = _peak_memory_bytes()
  del train
  return {"devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
          "global_batch": b, "views": v, "image_size": size,
          "model": config.model.name, "compile_s": round(t_compile, 2),
          "step_s_median": round(med, 4),
          "step_s_min": round(min(times), 4), "step_s_max": round(max(times), 4),
          # Host CPU seconds per step (all threads): on a shared CPU machine
          # this is steadier than wall time.
          "cpu_s_per_step": round(cpu_per_step, 3),
          "images_per_s": round(b / med, 1), "views_per_s": round(b * v / med, 1),
          "peak_memory_mb": round(peak / 2**20, 1), "peak_memory_kind": how}


def benchmark_pipeline(config, n_batches: int) -> dict:
  from jssl import sharding as shd, train  # pylint: disable=import-outside-toplevel
  mesh = shd.make_mesh(config.mesh)
  try:
    data = train.build_datasets(config, mesh)
  except Exception as e:  # pylint: disable=broad-except
    return {"pipeline": f"skipped: {type(e).__name__}: {str(e)[:200]}"}
  it = data.train_batches(0)
  next(it)  # start-up (file opening, shuffle buffer fill) not timed
  t0 = time.perf_counter()
  for _ in range(n_batches):
    next(it)
  dt = time.perf_counter() - t0
  per_process = config.batch_size // jax.process_count()
  return {"pipeline_images_per_s_per_host": round(per_process * n_batches / dt, 1),
          "pipeline_batches": n_batches}


def main(argv):
  del argv
  config = _CONFIG.value
  out = benchmark_step(config)
  if _PIPELINE.value:
    out.update(benchmark_pipeline(config, _PIPELINE.value))
  if _HOST_FOLDER.value:
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
  width = max(len(k) for k in out)
  for k, v in out.items():
    print(f"{k:<{width}}  {v}")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  app.run(main)
