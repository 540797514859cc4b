"""Input-pipeline throughput: `python -m jssl.data.benchmark [--data_dir=DIR]`.

Prints images/s for
  (1) the folder source's host pipeline (`jssl.data.loader`: JPEG decode +
      V=2 random resized crops, worker threads) on generated JPEG folders:
      ImageNet-like 500x375 photos cropped to 224 px, and 32x32 images
      cropped to 32 px; with one thread (the per-core rate) and with one
      thread per core; the same work through grain's `MapDataset` with the
      same thread count, for comparison (`--grain`, needs `pip install grain`);
  (2) the TFDS host pipeline (decode + V host crops + batch), when
      `--data_dir` holds a prepared CIFAR-10 (`python -m jssl.data.offline`);
  (3) the jitted on-device view fn (crop + photometric ops) on the default backend.

A benchmark, not a test: on a shared machine read the figures as +-10-20%.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def _rate(it, steps: int, warmup: int) -> float:
  return _rates(it, steps, warmup)[0]


def _rates(it, steps: int, warmup: int) -> tuple[float, float]:
  """(images per wall second, images per CPU second of this process).

  The second is the per-core rate: on a machine shared with other jobs it is
  much steadier than wall time (it counts only the cycles this process got).
  """
  for _ in range(warmup):
    next(it)
  t, c = time.perf_counter(), time.process_time()
  n = 0
  for _ in range(steps):
    b = next(it)
    n += len(b["label"] if "label" in b else b["views"])
  return n / (time.perf_counter() - t), n / max(time.process_time() - c, 1e-9)


def make_jpeg_folder(root: str, n: int, width: int, height: int, seed: int = 0) -> str:
  """`n` photo-like JPEGs (smooth colour fields + grain, quality 90) in `root`.

  Pure noise would decode slower than photos (nothing compresses); a coarse
  random field upsampled bicubically plus mild noise is closer to real images.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(seed)
  for k in range(n):
    coarse = Image.fromarray(rng.integers(0, 255, (9, 12, 3), np.uint8))
    img = np.asarray(coarse.resize((width, height), Image.BICUBIC), np.int16)
    img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(os.path.join(root, f"{k:05d}.jpg"), quality=90)
  return root


def bench_folder(root: str, *, size: int, batch: int, workers: int, steps: int,
                 views: int = 2) -> tuple[float, float]:
  """(images/s, images per CPU-s) of `jssl.data.loader.crop_batches` over the folder `root`."""
  from jssl.data import folder, host, loader  # pylint: disable=g-import-not-at-top
  src = folder.scan_folder(root)
  spec = loader.LoaderSpec(batch, workers=workers, process_index=0, process_count=1)
  it = loader.crop_batches(src, host.HostCrops(size, views), spec)
  try:
    return _rates(it, steps, warmup=1)
  finally:
    it.close()  # stops the workers before the caller deletes the folder


def bench_grain(root: str, *, size: int, batch: int, workers: int, steps: int,
                views: int = 2) -> tuple[float, float]:
  """The same per-example work (decode + crops) through grain's MapDataset."""
  import grain  # pylint: disable=g-import-not-at-top
  from jssl.data import folder, host  # pylint: disable=g-import-not-at-top
  src = folder.scan_folder(root)
  crops = host.HostCrops(size, views)

  def example(k):
    out, _ = src.read(int(k) % src.num_examples, lambda im: host.crop_views(
        im, np.random.default_rng([0, int(k)]), crops))
    return out

  ds = (grain.MapDataset.range(0, (steps + 1) * batch).map(example).batch(batch)
        .to_iter_dataset(grain.ReadOptions(num_threads=workers,
                                           prefetch_buffer_size=2 * batch)))
  return _rates(iter(ds), steps, warmup=1)


def folder_figures(*, batch: int = 64, steps: int = 16, grain_too: bool = False,
                   workdir: str | None = None) -> dict:
  """images/s of the folder pipeline at 224 px (500x375 JPEGs) and 32 px (32x32)."""
  cores = os.cpu_count() or 1
  out = {}
  with tempfile.TemporaryDirectory(dir=workdir) as tmp:
    for size, (w, h) in ((224, (500, 375)), (32, (32, 32))):
      root = make_jpeg_folder(os.path.join(tmp, f"{size}"), 2 * batch, w, h)
      name = f"jpeg_{w}x{h}_to_{size}px"
      wall, cpu = bench_folder(root, size=size, batch=batch, workers=1, steps=steps)
      out[f"folder_{name}_images_per_cpu_s"] = round(cpu, 1)
      wall, cpu = bench_folder(root, size=size, batch=batch, workers=cores, steps=steps)
      out[f"folder_{name}_images_per_s_{cores}_threads"] = round(wall, 1)
      out[f"folder_{name}_images_per_cpu_s_{cores}_threads"] = round(cpu, 1)
      if grain_too:
        wall, cpu = bench_grain(root, size=size, batch=batch, workers=cores, steps=steps)
        out[f"grain_{name}_images_per_s_{cores}_threads"] = round(wall, 1)
        out[f"grain_{name}_images_per_cpu_s_{cores}_threads"] = round(cpu, 1)
  return out


def bench_tfds(data_dir: str, *, batch: int, views: int, steps: int, crop_on_host: bool) -> float:
  from jssl.data import host, tfds_source  # pylint: disable=g-import-not-at-top
  spec = tfds_source.TfdsTrainSpec(name="cifar10", data_dir=data_dir,
                                   batch_size_per_process=batch, seed=0)
  it = tfds_source.tfds_train_batches(
      spec, host.HostCrops(32, views) if crop_on_host else None)
  return _rate(it, steps, warmup=5)


def bench_view_fn(*, batch: int, views: int, size: int, steps: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  from jssl.data import device_views, recipes  # pylint: disable=g-import-not-at-top
  recipe = recipes.simclr_recipe(size, mean=(0.5,) * 3, std=(0.25,) * 3)
  fn = jax.jit(device_views.make_view_fn(recipe, views))
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
  p.add_argument("--folder_batch", type=int, default=64)
  p.add_argument("--folder_steps", type=int, default=16)
  p.add_argument("--grain", action="store_true", help="also time grain's MapDataset")
  a = p.parse_args()
  for k, v in folder_figures(batch=a.folder_batch, steps=a.folder_steps,
                             grain_too=a.grain).items():
    print(f"{k}: {v:,.1f}")
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
