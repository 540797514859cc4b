"""In-memory array sources: resumable training batches, padded eval batches, prefetch.

No TensorFlow here: these feed training from numpy arrays (digits, CIFAR held
in memory) on machines without TF. Batches are numpy dicts holding this
process's slice of the global batch; `jssl.sharding` assembles the global
`jax.Array` (`jax.make_array_from_process_local_data`).
"""
from __future__ import annotations

import queue
import threading
from typing import Dict, Iterator, Optional

import jax
import numpy as np

Batch = Dict[str, np.ndarray]


class ArraySource:
  """Images `uint8 [N, H, W, C]` and labels `int [N]` held in host memory.

  Training order: at epoch e the global order is a permutation seeded by
  `(seed, e)`; global batch `g = batch_size_per_process * process_count` takes
  positions `[i * g, (i + 1) * g)` of it (remainder dropped), and process p
  keeps rows `[p * b, (p + 1) * b)` of that. So a batch is a pure function of
  `(seed, step)`, the global batch does not depend on the number of processes,
  and resuming at `start_step` reproduces an uninterrupted run exactly.

  Evaluation: examples are split into `process_count` contiguous shards; every
  process yields the same number of batches (the largest shard's), padding with
  zeros and `mask=False`, as multi-host collectives require.
  """

  def __init__(self, images: np.ndarray, labels: Optional[np.ndarray], *,
               process_index: Optional[int] = None, process_count: Optional[int] = None):
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
      raise ValueError(f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
    if labels is not None:  # None: unlabelled, batches have no 'label'
      labels = np.asarray(labels)
      if labels.shape != images.shape[:1]:
        raise ValueError(f"labels {labels.shape} do not match images {images.shape}")
      labels = labels.astype(np.int32)
    self.images = images
    self.labels = labels
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count

  @property
  def num_examples(self) -> int:
    return int(self.images.shape[0])

  def steps_per_epoch(self, batch_size_per_process: int) -> int:
    """Full global batches per epoch (the remainder is dropped)."""
    steps = self.num_examples // (batch_size_per_process * self.process_count)
    if steps == 0:
      raise ValueError(f"global batch {batch_size_per_process * self.process_count} > "
                       f"{self.num_examples} examples")
    return steps

  def _permutation(self, seed: int, epoch: int) -> np.ndarray:
    # Seeded by (seed, epoch) only, so any step can be reached without replay.
    return np.random.default_rng([seed, epoch]).permutation(self.num_examples)

  def batch_indices(self, batch_size_per_process: int, *, seed: int, step: int) -> np.ndarray:
    """Example indices of this process's rows of global batch `step`, in order."""
    spe = self.steps_per_epoch(batch_size_per_process)
    epoch, i = divmod(step, spe)
    g = batch_size_per_process * self.process_count
    rows = self._permutation(seed, epoch)[i * g:(i + 1) * g]
    p = self.process_index
    return rows[p * batch_size_per_process:(p + 1) * batch_size_per_process]

  def train_batches(self, batch_size_per_process: int, *, seed: int,
                    start_step: int = 0) -> Iterator[Batch]:
    """Infinite `{'image': uint8 [b, H, W, C], 'label': int32 [b]}`, from `start_step`
    (no 'label' when the source is unlabelled)."""
    spe = self.steps_per_epoch(batch_size_per_process)
    step = start_step
    perm_epoch, perm = None, None
    g = batch_size_per_process * self.process_count
    lo = self.process_index * batch_size_per_process
    while True:
      epoch, i = divmod(step, spe)
      if epoch != perm_epoch:  # one permutation per epoch, cached
        perm_epoch, perm = epoch, self._permutation(seed, epoch)
      # Not sorted: row r of the global batch gets the r-th augmentation key,
      # so the global order must not depend on the number of processes.
      idx = perm[i * g:(i + 1) * g][lo:lo + batch_size_per_process]
      if self.labels is None:
        yield {"image": self.images[idx]}
      else:
        yield {"image": self.images[idx], "label": self.labels[idx]}
      step += 1

  def eval_batches(self, batch_size_per_process: int) -> Iterator[Batch]:
    """Finite `{'image', 'label', 'mask'}` batches; padding rows have `mask=False`."""
    shards = np.array_split(np.arange(self.num_examples), self.process_count)
    mine = shards[self.process_index]
    longest = max(len(s) for s in shards)
    num_batches = -(-longest // batch_size_per_process)
    b = batch_size_per_process
    for k in range(num_batches):
      idx = mine[k * b:(k + 1) * b]
      n = len(idx)
      image = np.zeros((b,) + self.images.shape[1:], np.uint8)
      label = np.zeros((b,), np.int32)
      mask = np.zeros((b,), bool)
      image[:n], label[:n], mask[:n] = self.images[idx], self.labels[idx], True
      yield {"image": image, "label": label, "mask": mask}


_DONE = object()
PREFETCH_THREAD = "jssl-prefetch"


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Runs `iterator` in a background thread, keeping up to `size` items ready.

  Overlaps host batch assembly with the device step (numpy releases the GIL
  for copies). Exceptions from the producer are re-raised in the consumer.
  Closing the returned generator stops the thread and waits for it (up to a
  minute): a producer left running could still be copying a batch to the
  devices when the interpreter exits, and XLA aborts the process when a
  daemon thread calls into it during finalisation (a CLI run that exited 0 in
  every other respect died with SIGABRT in the test suite).
  """
  q: queue.Queue = queue.Queue(maxsize=max(1, size))
  stop = threading.Event()

  def produce():
    try:
      for item in iterator:
        while not stop.is_set():
          try:
            q.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      q.put(_DONE)
    except BaseException as e:  # pylint: disable=broad-except
      q.put(e)

  thread = threading.Thread(target=produce, name=PREFETCH_THREAD, daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if item is _DONE:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    if thread is not threading.current_thread():
      thread.join(timeout=60)  # it sees `stop` after the item in hand


class TrainOrder:
  """`ArraySource`'s training order for any indexed source: the example indices
  of this process's rows of global batch `step`, a pure function of
  `(seed, step)` (so resuming at any step continues the order exactly)."""

  def __init__(self, num_examples: int, batch_size_per_process: int, *, seed: int,
               process_index: Optional[int] = None, process_count: Optional[int] = None):
    self.num_examples, self.b, self.seed = int(num_examples), int(batch_size_per_process), seed
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self.global_batch = self.b * self.process_count
    self.steps_per_epoch = self.num_examples // self.global_batch
    if self.steps_per_epoch == 0:
      raise ValueError(f"global batch {self.global_batch} > {self.num_examples} examples")
    self._epoch, self._perm = None, None

  def indices(self, step: int) -> np.ndarray:
    epoch, i = divmod(step, self.steps_per_epoch)
    if epoch != self._epoch:  # the same permutation rule as ArraySource
      self._epoch = epoch
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
    g, lo = self.global_batch, self.process_index * self.b
    return self._perm[i * g:(i + 1) * g][lo:lo + self.b]

  def global_rows(self) -> range:
    """Rows of the global batch this process holds (crop seeds use them)."""
    lo = self.process_index * self.b
    return range(lo, lo + self.b)
