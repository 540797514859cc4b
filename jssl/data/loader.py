"""Batches from an indexed source, decoded and cropped in host worker threads.

Training (`crop_batches`): global batch `step` holds the examples
`TrainOrder(...).indices(step)` (the same order rule as `ArraySource`), and
row r of the global batch is cropped with `np.random.default_rng([seed,
step, r])`. So a batch is a pure function of `(seed, step, process)`:
resuming at `start_step` continues the data order and the crops exactly, and
the global batch does not depend on the number of processes.

Evaluation (`eval_batches`): the chosen examples, resized and centre-cropped
on host, split into contiguous per-process shards, zero-padded with
`mask=False` so every process yields the same number of batches.

Workers are threads (`concurrent.futures`): PIL releases the GIL while it
decodes and resizes, so they scale over cores without pickling images between
processes, and the unreadable-file count stays in one process. grain
0.2.18's `MapDataset` + `ReadOptions(num_threads)` doing the same per-example
work measured the same (`python -m jssl.data.benchmark --grain`: within the
+-10% noise of a shared 2-core machine, at 32 and 224 px), and its
checkpointable iterator is not needed because the order is a pure function of
the step; so the pool (no dependency) is used. If Python overhead ever bound
a many-core host (tiny images), grain's `mp_prefetch` worker processes are
the next step.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import jax
import numpy as np

from jssl.data import host
from jssl.data.sources import TrainOrder

Batch = Dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class LoaderSpec:
  """How to batch a source on this host."""
  batch_size_per_process: int
  seed: int = 0
  workers: int = 0           # decode threads; 0 = one per CPU core
  ahead: int = 2             # batches decoded ahead of the consumer
  process_index: Optional[int] = None  # default jax.process_index()
  process_count: Optional[int] = None  # default jax.process_count()

  def procs(self) -> tuple[int, int]:
    return (jax.process_index() if self.process_index is None else self.process_index,
            jax.process_count() if self.process_count is None else self.process_count)


def _threaded(tasks: Iterator[List[Callable[[], dict]]], workers: int,
              ahead: int) -> Iterator[Batch]:
  """Runs each batch's example tasks on a thread pool, `ahead` batches in
  flight; yields the stacked batches in order."""
  pool = concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1,
                                               thread_name_prefix="jssl-data")
  pending: collections.deque = collections.deque()
  try:
    while True:
      while len(pending) < ahead + 1:
        batch = next(tasks, None)
        if batch is None:
          break
        pending.append([pool.submit(t) for t in batch])
      if not pending:
        return
      rows = [f.result() for f in pending.popleft()]
      yield {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  finally:
    for futures in pending:
      for f in futures:
        f.cancel()
    pool.shutdown(wait=False, cancel_futures=True)


def crop_batches(source, crops: host.HostCrops, spec: LoaderSpec,
                 start_step: int = 0) -> Iterator[Batch]:
  """Infinite `{'views': uint8 [b, V, s, s, 3]}` (+ `'local_views'`, + `'label'`
  when the source has labels), from global step `start_step`.

  `source` has `num_examples`, `read(i, fn) -> (fn(image), j)` (j: the example
  actually read, see `jssl.data.folder`) and `label(j)`.
  """
  index, count = spec.procs()
  order = TrainOrder(source.num_examples, spec.batch_size_per_process, seed=spec.seed,
                     process_index=index, process_count=count)
  labelled = getattr(source, "labels", None) is not None

  def example(step: int, row: int, i: int) -> dict:
    # A fresh generator per read: a replaced unreadable file then gives the
    # same crops whether or not it was met before in this process.
    out, j = source.read(i, lambda im: host.crop_views(
        im, np.random.default_rng([spec.seed, step, row]), crops))
    if labelled:
      out["label"] = np.int32(source.label(j))
    return out

  def tasks():
    step = start_step
    while True:
      idx = order.indices(step)
      yield [lambda s=step, r=r, i=int(i): example(s, r, i)
             for r, i in zip(order.global_rows(), idx)]
      step += 1

  return _threaded(tasks(), spec.workers, spec.ahead)


def eval_batches(source, indices: Sequence[int], *, size: int, crop_fraction: float,
                 spec: LoaderSpec) -> Iterator[Batch]:
  """Finite `{'image': uint8 [b, size, size, 3], 'label', 'mask'}` of the
  examples `indices` (this process's contiguous share), padded with `mask=False`."""
  index, count = spec.procs()
  shards = np.array_split(np.asarray(indices, np.int64), count)
  mine, b = shards[index], spec.batch_size_per_process
  num_batches = -(-max(len(s) for s in shards) // b)
  pad = {"image": np.zeros((size, size, 3), np.uint8), "label": np.int32(0),
         "mask": np.bool_(False)}

  def example(i: int) -> dict:
    image, j = source.read(i, lambda im: host.resize_center_crop(im, size, crop_fraction))
    return {"image": image, "label": np.int32(source.label(j)), "mask": np.bool_(True)}

  def tasks():
    for k in range(num_batches):
      idx = mine[k * b:(k + 1) * b]
      yield ([lambda i=int(i): example(i) for i in idx]
             + [lambda: pad] * (b - len(idx)))

  return _threaded(tasks(), spec.workers, spec.ahead)
