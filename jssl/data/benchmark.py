"""Input-pipeline throughput: `python -m jssl.data.benchmark --data_dir=DIR`.

Prints images/s for (1) the TFDS host pipeline (decode + V host crops + batch)
and (2) the jitted on-device view fn (crop + photometric ops) on the default
backend. Prepare CIFAR-10 first with `python -m jssl.data.offline`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def _rate(it, steps: int, warmup: int) -> float:
  for _ in range(warmup):
    next(it)
  t = time.perf_counter()
  n = 0
  for _ in range(steps):
    n += len(next(it)["label"])
  return n / (time.perf_counter() - t)


def bench_tfds(data_dir: str, *, batch: int, views: int, steps: int, crop_on_host: bool) -> float:
  from jssl.data import tfds_source  # pylint: disable=g-import-not-at-top
  it = tfds_source.tfds_train_batches(
      "cifar10", data_dir=data_dir, batch_size_per_process=batch, image_size=32,
      num_views=views, crop_on_host=crop_on_host, seed=0)
  return _rate(it, steps, warmup=5)


def bench_view_fn(*, batch: int, views: int, size: int, steps: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  from jssl.data import views as views_lib  # pylint: disable=g-import-not-at-top
  recipe = views_lib.simclr_recipe(size, mean=(0.5,) * 3, std=(0.25,) * 3)
  fn = jax.jit(views_lib.make_view_fn(recipe, views))
  images = jax.device_put(np.random.RandomState(0).randint(
      0, 256, (batch, size, size, 3)).astype(np.uint8))
  jax.block_until_ready(fn(jax.random.key(0), {"image": images}))
  t = time.perf_counter()
  for i in range(steps):
    out = fn(jax.random.key(i), {"image": images})
  jax.block_until_ready(out)
  return batch * steps / (time.perf_counter() - t)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data_dir", default=None, help="prepared TFDS dir (skip TFDS if unset)")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--views", type=int, default=2)
  p.add_argument("--steps", type=int, default=40)
  a = p.parse_args()
  if a.data_dir:
    for host in (True, False):
      r = bench_tfds(a.data_dir, batch=a.batch, views=a.views, steps=a.steps, crop_on_host=host)
      print(f"tfds cifar10 train, crop_on_host={host}, V={a.views}, b={a.batch}: "
            f"{r:,.0f} images/s")
  import jax  # pylint: disable=g-import-not-at-top
  r = bench_view_fn(batch=a.batch, views=a.views, size=32, steps=10)
  print(f"view fn (jit, {jax.default_backend()}), V={a.views}, b={a.batch}, 32x32: "
        f"{r:,.0f} images/s")


if __name__ == "__main__":
  main()
