"""TFDS input pipelines (host side, tf.data), yielding numpy batches per process.

Train (`tfds_train_batches(TfdsTrainSpec(...), host.HostCrops(...))`):
`tfds.split_for_jax_process(split)` -> example shuffle -> repeat -> decode ->
per-view random resized crop on host (variable-size images such as ImageNet
must be cropped before batching) -> batch -> prefetch -> `tfds.as_numpy`.
Batches are `{'views': uint8 [b, V, h, w, C], 'label': int32 [b]}` for
`jssl.data.device_views.make_view_fn`, which applies flip and photometric ops
on device; with multi-crop (`crops.num_local` L > 0) also `'local_views':
uint8 [b, L, l, l, C]`, the small crops at their own resolution. The crop
geometry is the folder loader's `jssl.data.host.HostCrops`. For fixed-size
datasets (CIFAR) `crops=None` yields `{'image': uint8 [b, H, W, C]}` instead
and the crop runs on device too; that moves all randomness to the accelerator
and makes the host pipeline ~V x lighter.

Building blocks for other TFDS train pipelines (e.g. image-text):
`process_shard` (this process's shard, undecoded, in fixed file order, and the
lockstep epoch length), `resumable_order` (the seeded epoch order from any
step, for exact resume) and `stream_seed`.

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

import dataclasses
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from jssl import errors
from jssl.data import host

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


def read_split(name: str, split: str, data_dir: Optional[str], **kwargs):
  """(builder, the whole `split` in file order) of a prepared TFDS dataset.

  `kwargs` go to `builder.as_dataset` (e.g. `decoders`). Raises
  `DatasetNotPreparedError` when the dataset is not prepared.
  """
  return _as_dataset(name, data_dir, split=split, shuffle_files=False, **kwargs)


def stream_seed(*keys: int) -> int:
  """A 31-bit tf.data seed derived from integer `keys` (e.g. seed, process)."""
  return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] % (2**31 - 1))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TfdsTrainSpec:
  """What to read from TFDS and how to batch it on this process.

  The crop geometry is a separate `jssl.data.host.HostCrops`, as for the
  folder loader (`jssl.data.loader.crop_batches`).
  """
  name: str                          # TFDS name, e.g. 'cifar10'
  batch_size_per_process: int        # rows per yielded batch (remainder dropped)
  split: str = "train"               # slicing allowed; divided evenly over processes
  data_dir: Optional[str] = None     # TFDS data dir holding the prepared dataset
  seed: int = 0                      # seeds the epoch shuffles and the crops
  shuffle_buffer: int = 10_000       # examples in the shuffle buffer
  image_key: str = "image"
  label_key: str = "label"
  # Train only on these positions of `split` (its file order, as `split_labels`
  # reads it), e.g. a label-fraction subset from
  # `jssl.evals.finetune.label_subset`; one process only.
  example_indices: Optional[Tuple[int, ...]] = None
  process_index: Optional[int] = None  # default jax.process_index()
  process_count: Optional[int] = None  # default jax.process_count()

  def __post_init__(self):
    if self.example_indices is not None:  # hashable and immutable, like the rest
      object.__setattr__(self, "example_indices",
                         tuple(int(i) for i in np.asarray(self.example_indices).ravel()))

  def procs(self) -> Tuple[int, int]:
    import jax  # pylint: disable=g-import-not-at-top
    return (jax.process_index() if self.process_index is None else self.process_index,
            jax.process_count() if self.process_count is None else self.process_count)


@dataclasses.dataclass(frozen=True)
class Shard:
  """This process's part of a TFDS split, undecoded (see `process_shard`)."""
  builder: Any        # tfds.core.DatasetBuilder (features: `builder.info.features`)
  dataset: Any        # tf.data.Dataset of example dicts, fixed file order
  lockstep_size: int  # examples of the shortest process shard


def process_shard(name: str, split: str, data_dir: Optional[str], *,
                  process_index: int, process_count: int,
                  skip_decoding: Sequence[str] = ("image",)) -> Shard:
  """This process's shard of `split`, in fixed file order, features in
  `skip_decoding` left as encoded bytes.

  The split is divided by `tfds.split_for_jax_process`. Files are read in a
  fixed order (no file shuffle), so an epoch order built from it is
  reproducible. Decode a skipped feature after shuffling (the shuffle buffer
  then holds compressed bytes) with
  `shard.builder.info.features[key].decode_example`. `lockstep_size` is the
  length of the shortest shard (even splits put the extra examples first, so
  the last one): cutting every epoch to it keeps processes in lockstep.
  Raises `DatasetNotPreparedError` when the dataset is not prepared.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  subsplit = tfds.split_for_jax_process(split, process_index=process_index,
                                        process_count=process_count)
  builder, ds = _as_dataset(
      name, data_dir, split=subsplit, shuffle_files=False,
      decoders={k: tfds.decode.SkipDecoding() for k in skip_decoding})
  last = tfds.split_for_jax_process(split, process_index=process_count - 1,
                                    process_count=process_count)
  return Shard(builder, ds, split_size(name, last, data_dir))


def resumable_order(ds, *, batch_size: int, steps_per_epoch: int, seed: int,
                    start_step: int, shuffle_buffer: int = 10_000):
  """`(i, example)` of an infinite epoch stream, from global step `start_step`.

  Epoch e is `ds` (a finite dataset in a fixed order, e.g. `process_shard`)
  through a `shuffle_buffer` shuffle seeded by `(seed, e)` only, cut to
  `steps_per_epoch * batch_size` examples; `i` is the position in the
  uninterrupted stream (use it to seed per-example randomness statelessly).
  Starting at `start_step` rebuilds epoch `start_step // steps_per_epoch`
  and skips its batches already consumed (read, not decoded, when `ds`
  holds encoded bytes), so a restarted run continues the exact order
  (module doc, "Resuming"). Batch the result with `batch_size`,
  `drop_remainder=True`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  b = batch_size
  epoch_seed = tf.constant(stream_seed(seed), tf.int64)

  def epoch(e):
    # Seeded by (seed, epoch) only, so any epoch can be rebuilt without replay.
    shuffled = ds.shuffle(shuffle_buffer, seed=(epoch_seed * 1_000_003 + e) % (2**31 - 1),
                          reshuffle_each_iteration=False)
    return shuffled.take(steps_per_epoch * b)

  first, done = divmod(start_step, steps_per_epoch)
  ds = tf.data.Dataset.range(first, 2**62).flat_map(epoch).skip(done * b)
  return ds.enumerate(start=start_step * b)


def _crop(image, i, crop_seed: int, crops: host.HostCrops) -> Batch:
  """V global (+ L local) crops of one decoded image; stateless in (crop_seed, i)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jssl.data import tf_ops  # pylint: disable=g-import-not-at-top
  seeds = tf.random.experimental.stateless_split(
      tf.stack([tf.constant(crop_seed, tf.int64), i]), crops.num_views)
  out = {"views": tf.stack([
      tf_ops.random_resized_crop(image, seeds[v], size=crops.image_size, scale=crops.scale,
                                 ratio=crops.ratio) for v in range(crops.num_views)])}
  if crops.num_local:
    # Separate seeds, so the global crops are the same with or without
    # local crops.
    local_seeds = tf.random.experimental.stateless_split(
        tf.stack([tf.constant(crop_seed, tf.int64), -1 - i]), crops.num_local)
    out["local_views"] = tf.stack([
        tf_ops.random_resized_crop(image, local_seeds[v], size=crops.local_size,
                                   scale=crops.local_scale, ratio=crops.ratio)
        for v in range(crops.num_local)])
  return out


def tfds_train_batches(spec: TfdsTrainSpec, crops: Optional[host.HostCrops],
                       start_step: int = 0) -> Iterator[Batch]:
  """Infinite training batches of this process's shard of a TFDS split.

  Args:
    spec: the split, batch size, seed and processes (`TfdsTrainSpec`).
    crops: the host crop geometry (`host.HostCrops.from_recipe(recipe,
      num_views)`): yields `{'views': uint8 [b, V, s, s, C]}` (+
      `'local_views': uint8 [b, L, l, l, C]` when `crops.num_local`). None:
      whole images `{'image': uint8 [b, H, W, C]}` (fixed-size datasets only;
      every crop then runs on device).
    start_step: start at this global step of the uninterrupted order (module
      doc, "Resuming").

  Yields:
    numpy dicts as described above, with `'label': int32 [b]`.
  """
  if crops is not None and crops.num_local and crops.local_size <= 0:
    raise ValueError(f"{crops.num_local} local crops need local_size > 0")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  index, count = spec.procs()
  if spec.example_indices is not None:
    if count != 1:
      raise ValueError(f"example_indices select rows of the whole split; got "
                       f"{count} processes (use one)")
    keep = np.unique(np.asarray(spec.example_indices, np.int64))
    if keep.size == 0:
      raise ValueError("example_indices is empty")
  # Crop seeds differ per process; the shuffle seeds per epoch (resumable_order).
  base = stream_seed(spec.seed, index)
  shard = process_shard(spec.name, spec.split, spec.data_dir, process_index=index,
                        process_count=count, skip_decoding=(spec.image_key,))
  ds, shortest = shard.dataset, shard.lockstep_size
  decode = shard.builder.info.features[spec.image_key].decode_example
  if spec.example_indices is not None:
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keep), tf.ones_like(keep, tf.int64)),
        default_value=0)
    ds = ds.enumerate().filter(lambda i, ex: table.lookup(i) > 0).map(lambda i, ex: ex)
    shortest = int(keep.size)
  b = spec.batch_size_per_process
  steps_per_epoch = shortest // b
  if steps_per_epoch == 0:
    raise ValueError(f"{spec.name}[{spec.split}]: {shortest} examples per process < batch "
                     f"{b} per process")
  ds = ds.map(lambda ex: {"image": ex[spec.image_key], "label": ex[spec.label_key]})
  # Example i of the uninterrupted stream gets the stateless seed (base, i):
  # crops are a pure function of (seed, process, step, row).
  ds = resumable_order(ds, batch_size=b, steps_per_epoch=steps_per_epoch, seed=spec.seed,
                       start_step=start_step, shuffle_buffer=spec.shuffle_buffer)

  def prepare(i, ex):
    image = decode(ex["image"])
    out = {"label": tf.cast(ex["label"], tf.int32)}
    if crops is not None:
      out.update(_crop(image, i, base, crops))
    else:
      out["image"] = image
    return out

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(b, drop_remainder=True)
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
