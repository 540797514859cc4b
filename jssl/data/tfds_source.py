"""TFDS input pipelines (host side, tf.data), yielding numpy batches per process.

Train: `tfds.split_for_jax_process(split)` -> file shuffle + example shuffle ->
repeat -> decode -> per-view random resized crop on host (variable-size images
such as ImageNet must be cropped before batching) -> batch -> prefetch ->
`tfds.as_numpy`. Batches are `{'views': uint8 [b, V, h, w, C], 'label': int32
[b]}` for `jssl.data.device_views.make_view_fn`, which applies flip and photometric ops
on device; with multi-crop (`num_local_views` L > 0) also `'local_views': uint8
[b, L, l, l, C]`, the small crops at their own resolution. For fixed-size datasets (CIFAR) `crop_on_host=False` yields
`{'image': uint8 [b, H, W, C]}` instead and the crop runs on device too; that
moves all randomness to the accelerator and makes the host pipeline ~V x lighter.

Resuming continues the data order exactly: a batch is a pure function of
`(seed, step, process)`. Each process reads its shard
(`tfds.split_for_jax_process`) in file order; epoch e is that shard through a
shuffle buffer seeded by `(seed, e)`, cut to `steps_per_epoch * b` examples
(the smallest shard's full batches, so processes stay in lockstep); the crops
of stream position i use the stateless seed `(seed, process, i)`. On resume
at step s the stream starts at epoch `s // steps_per_epoch` and skips the
batches of that epoch already consumed. Cost: the skipped examples are read
(as bytes, not decoded) once more, i.e. up to one epoch of this process's
shard at a restart (CIFAR-10: a second; ImageNet on one host: minutes), and
the order is mixed by a `shuffle_buffer`-example buffer over a fixed file
order (TFDS shuffles examples when it writes the files) instead of TFDS's
per-epoch file shuffle.

A dataset that is not prepared in `data_dir` raises `DatasetNotPreparedError`
naming the dataset, the data dir and the offline registration command
(`python -m jssl.data.offline`), since TFDS cannot download here.

Reference: big_vision `input_pipeline.py` and TFDS "Splits and slicing" /
`split_for_jax_process` docs; SimCLR `data.py` (`build_input_fn`).
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Sequence

import numpy as np

from jssl import errors

Batch = Dict[str, np.ndarray]


class DatasetNotPreparedError(errors.DataNotFoundError):
  """The TFDS dataset is not prepared in the data dir (and cannot be downloaded)."""


def _not_prepared(name: str, data_dir: Optional[str]) -> DatasetNotPreparedError:
  where = data_dir or "~/tensorflow_datasets (TFDS default)"
  return DatasetNotPreparedError(
      f"TFDS dataset {name!r} is not prepared in data_dir={where!r}: prepare it with "
      f"TFDS (`tfds build {name}`, needs a network), or offline register a local copy "
      f"of its archive with `python -m jssl.data.offline --dataset={name} "
      f"--archive=PATH/TO/ARCHIVE --data_dir={data_dir or 'DATA_DIR'}`, or point "
      f"config.data.data_dir at an already prepared TFDS directory.")


def _as_dataset(name: str, data_dir: Optional[str], **kwargs):
  """`builder.as_dataset(**kwargs)`, turning "no prepared data" into one clear error."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=data_dir)
  try:
    return builder, builder.as_dataset(**kwargs)
  except AssertionError:
    # TFDS asserts `is_prepared()` first; anything else is not ours to reword.
    if builder.is_prepared():
      raise
    raise _not_prepared(name, data_dir) from None


def stream_seed(*keys: int) -> int:
  """A 31-bit tf.data seed derived from integer `keys` (e.g. seed, process)."""
  return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] % (2**31 - 1))


def tfds_train_batches(name: str, split: str = "train", *, data_dir: Optional[str],
                       batch_size_per_process: int, image_size: int, num_views: int = 2,
                       crop_on_host: bool = True,
                       crop_scale: Sequence[float] = (0.08, 1.0),
                       crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
                       num_local_views: int = 0, local_image_size: int = 0,
                       local_crop_scale: Sequence[float] = (0.05, 0.14),
                       seed: int = 0, start_step: int = 0, shuffle_buffer: int = 10_000,
                       image_key: str = "image", label_key: str = "label",
                       example_indices: Optional[Sequence[int]] = None,
                       process_index: Optional[int] = None,
                       process_count: Optional[int] = None) -> Iterator[Batch]:
  """Infinite training batches of this process's shard of a TFDS split.

  Args:
    name: TFDS name, e.g. 'cifar10'.
    split: TFDS split (slicing allowed), divided evenly over processes.
    data_dir: TFDS data dir holding the prepared dataset.
    batch_size_per_process: rows per yielded batch (remainder dropped).
    image_size: side of the host crops (the recipe's `image_size`).
    num_views: V crops per example.
    crop_on_host: True -> `{'views': uint8 [b, V, s, s, C]}`; False ->
      `{'image': uint8 [b, H, W, C]}` (fixed-size datasets only; crop on device).
    crop_scale, crop_ratio: random resized crop ranges (area fraction, w/h).
    num_local_views: L local (multi-crop) crops per example, host crops only;
      0 = none (`jssl.data.recipes.local_crops(recipe).num`).
    local_image_size: side of the local crops (`recipe.local.image_size`).
    local_crop_scale: area range of the local crops (`recipe.local.scale`);
      they share `crop_ratio`.
    seed, start_step: seed the shuffles and crops; start at global step
      `start_step` of the uninterrupted order (module doc, "Resuming").
    shuffle_buffer: examples in the shuffle buffer.
    image_key, label_key: feature names.
    example_indices: train only on these positions of `split` (in its file
      order, as `split_labels` reads it), e.g. a label-fraction subset from
      `jssl.evals.finetune.label_subset`; one process only.
    process_index, process_count: default to `jax.process_index()/count()`.

  Yields:
    numpy dicts as described above, with `'label': int32 [b]`.
  """
  if num_local_views and not crop_on_host:
    raise ValueError("num_local_views > 0 needs crop_on_host=True; with "
                     "crop_on_host=False the view fn takes every crop on device")
  if num_local_views and local_image_size <= 0:
    raise ValueError(f"num_local_views={num_local_views} needs local_image_size > 0")
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from jssl.data import tf_ops  # pylint: disable=g-import-not-at-top

  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if example_indices is not None:
    if count != 1:
      raise ValueError(f"example_indices select rows of the whole split; got "
                       f"{count} processes (use one)")
    keep = np.unique(np.asarray(example_indices, np.int64))
    if keep.size == 0:
      raise ValueError("example_indices is empty")
  # Crop seeds differ per process; the shuffle seeds per epoch (below).
  base = stream_seed(seed, index)
  subsplit = tfds.split_for_jax_process(split, process_index=index, process_count=count)
  # Fixed file order: the epoch order must be reproducible from (seed, epoch).
  builder, ds = _as_dataset(
      name, data_dir, split=subsplit, shuffle_files=False,
      # Decode after the shuffle: the buffer then holds compressed bytes.
      decoders={image_key: tfds.decode.SkipDecoding()})
  decode = builder.info.features[image_key].decode_example
  if example_indices is not None:
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keep), tf.ones_like(keep, tf.int64)),
        default_value=0)
    ds = ds.enumerate().filter(lambda i, ex: table.lookup(i) > 0).map(lambda i, ex: ex)
    shortest = int(keep.size)
  else:
    # Even splits put the extra examples first: the last shard is the shortest.
    last = tfds.split_for_jax_process(split, process_index=count - 1, process_count=count)
    shortest = split_size(name, last, data_dir)
  b = batch_size_per_process
  steps_per_epoch = shortest // b
  if steps_per_epoch == 0:
    raise ValueError(f"{name}[{split}]: {shortest} examples per process < batch "
                     f"{b} per process")
  ds = ds.map(lambda ex: {"image": ex[image_key], "label": ex[label_key]})
  epoch_seed = tf.constant(stream_seed(seed), tf.int64)

  def epoch(e):
    # Seeded by (seed, epoch) only, so any epoch can be rebuilt without replay.
    shuffled = ds.shuffle(shuffle_buffer, seed=(epoch_seed * 1_000_003 + e) % (2**31 - 1),
                          reshuffle_each_iteration=False)
    return shuffled.take(steps_per_epoch * b)

  first, done = divmod(start_step, steps_per_epoch)
  ds = tf.data.Dataset.range(first, 2**62).flat_map(epoch).skip(done * b)
  # Example i of the uninterrupted stream gets the stateless seed (base, i):
  # crops are a pure function of (seed, process, step, row).
  ds = ds.enumerate(start=start_step * b)

  def prepare(i, ex):
    image = decode(ex["image"])
    out = {"label": tf.cast(ex["label"], tf.int32)}
    if crop_on_host:
      seeds = tf.random.experimental.stateless_split(
          tf.stack([tf.constant(base, tf.int64), i]), num_views)
      out["views"] = tf.stack([
          tf_ops.random_resized_crop(image, seeds[v], size=image_size, scale=crop_scale,
                                     ratio=crop_ratio) for v in range(num_views)])
      if num_local_views:
        # Separate seeds, so the global crops are the same with or without
        # local crops.
        local_seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(base, tf.int64), -1 - i]), num_local_views)
        out["local_views"] = tf.stack([
            tf_ops.random_resized_crop(image, local_seeds[v], size=local_image_size,
                                       scale=local_crop_scale, ratio=crop_ratio)
            for v in range(num_local_views)])
    else:
      out["image"] = image
    return out

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size_per_process, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return iter(tfds.as_numpy(ds))


def split_size(name: str, split: str, data_dir: Optional[str]) -> int:
  """Number of examples of a prepared TFDS split (slicing allowed)."""
  _, ds = _as_dataset(name, data_dir, split=split, shuffle_files=False)
  n = int(ds.cardinality())
  if n < 0:
    raise ValueError(f"{name}[{split}]: unknown number of examples")
  return n


def split_labels(name: str, split: str, data_dir: Optional[str], *,
                 label_key: str = "label", image_key: str = "image") -> np.ndarray:
  """The labels of a TFDS split in file order (images are not decoded)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _, ds = _as_dataset(name, data_dir, split=split, shuffle_files=False,
                      decoders={image_key: tfds.decode.SkipDecoding()})
  ds = ds.map(lambda ex: ex[label_key]).batch(4096)
  return np.concatenate([np.asarray(b) for b in tfds.as_numpy(ds)]).astype(np.int32)


def tfds_eval_batches(name: str, split: str = "test", *, data_dir: Optional[str],
                      batch_size_per_process: int, image_size: int,
                      crop_fraction: float = 1.0, image_key: str = "image",
                      label_key: str = "label", process_index: Optional[int] = None,
                      process_count: Optional[int] = None) -> Iterator[Batch]:
  """Finite eval batches `{'image': uint8 [b, s, s, C], 'label': int32, 'mask': bool}`.

  Images are resized (shorter side to `image_size / crop_fraction`) and centre
  cropped on host, then normalised on device by
  `jssl.data.eval_transform.eval_preprocess(size=image_size)` (an identity resize there).
  Every process yields `ceil(largest shard / b)` batches, zero-padded with
  `mask=False`, so multi-host evaluation steps stay in lockstep.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from jssl.data import tf_ops  # pylint: disable=g-import-not-at-top

  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  mine = tfds.split_for_jax_process(split, process_index=index, process_count=count)
  # Even splits put the extra examples first, so shard 0 is the longest.
  first = tfds.split_for_jax_process(split, process_index=0, process_count=count)
  _, ds = _as_dataset(name, data_dir, split=mine, shuffle_files=False)
  _, ds0 = _as_dataset(name, data_dir, split=first, shuffle_files=False)
  n_local, n_max = int(ds.cardinality()), int(ds0.cardinality())
  if n_local < 0 or n_max < 0:
    raise ValueError(f"{name}[{split}]: unknown cardinality; cannot pad for multi-host")
  b = batch_size_per_process
  total = -(-n_max // b) * b

  def prepare(ex):
    image = tf_ops.to_uint8(tf_ops.resize_and_center_crop(
        ex[image_key], size=image_size, crop_fraction=crop_fraction))
    return {"image": image, "label": tf.cast(ex[label_key], tf.int32),
            "mask": tf.constant(True)}

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  pad = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec)
  ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(total - n_local))
  ds = ds.batch(b, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return iter(tfds.as_numpy(ds))
