"""From `config.data` to what the training loop needs (`Datasets`).

Sources (`config.data.source`):
  'digits' / 'arrays'  in-memory arrays by name (`jssl.data.digits`);
                       whole images, cropped on device.
  'folder'             `data.path` = a folder of JPEG/PNG files, any sizes
                       (`jssl.data.folder`); decoded and cropped on host in
                       worker threads (`jssl.data.loader`), views on device.
  'npz'                `data.path` = an .npz with `images` uint8 [N, H, W, C]
                       and optional `labels` [N]; cropped on device.
  'tfds'               a prepared TFDS dataset by `data.name`
                       (`jssl.data.tfds_source`); cropped on host by tf.data.

Probes. The online probe trains on the training labels, so it needs them.
The end-of-run probes (linear, kNN) fit on labelled features and report on
held-out ones: TFDS and digits use their train / test splits; folder and npz
use the training data and `data.eval_path` (a labelled folder or .npz with the
same classes). With unlabelled training data and a labelled `eval_path`, the
probes fit on a fixed 80% of the eval set and report on the other 20%.
Without a labelled eval set they are skipped, and `Datasets.probes_skipped`
says why (the loop logs it once and writes it to results.json).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Optional

import jax
import numpy as np

from jssl import errors
from jssl import sharding as shd
from jssl.data import recipes

SOURCES = ("digits", "arrays", "folder", "npz", "tfds", "digits_captions", "shapes_captions")
# Sources of images with captions only (image-text runs, `jssl.data.captions`).
CAPTION_ONLY = ("digits_captions", "shapes_captions")


@dataclasses.dataclass
class Datasets:
  """What the loop needs from the input pipeline."""
  train_batches: Callable[[int], Iterator[dict]]   # start_step -> host batches
  eval_batches: Callable[[str], Iterator[dict]]    # 'train'|'test' -> padded host batches
  num_train: int
  num_classes: Optional[int]  # training-label classes; None: unlabelled (no online probe)
  batch_spec: dict            # global-batch jax.ShapeDtypeStruct pytree
  image_shape: tuple          # eval image shape (H, W, C) as eval_batches yields it
  eval_cropped_on_host: bool = False  # eval batches come resized + centre-cropped
  probe_classes: Optional[int] = None  # classes of the end-of-run probes
  probes_skipped: str = ""    # why the end-of-run probes cannot run; '' = they run

  def __post_init__(self):
    if self.probe_classes is None and not self.probes_skipped:
      self.probe_classes = self.num_classes


def build_datasets(config, mesh, tokenizer=None):
  """Dispatches on `config.data.source` (see the module docstring).

  With `tokenizer` (image-text runs: `config.text` is set), the images come
  with captions tokenised on host: `jssl.data.captions.build`, which returns
  a `CaptionData` (the same loop-facing fields plus the held-out set of the
  zero-shot and retrieval evaluations).
  """
  dc = config.data
  per_process = shd.check_global_batch(config.batch_size, mesh)
  eval_per_process = shd.check_global_batch(config.eval.batch_size, mesh)
  if tokenizer is not None:
    from jssl.data import captions  # pylint: disable=import-outside-toplevel
    if dc.source not in captions.SOURCES:
      raise errors.ConfigError(
          f"config.data.source={dc.source!r} has no captions; an image-text run "
          f"(config.text is set) reads one of {', '.join(captions.SOURCES)}")
    return captions.build(config, per_process, eval_per_process, tokenizer)
  if dc.source in CAPTION_ONLY:
    raise errors.ConfigError(
        f"config.data.source={dc.source!r} is image-text data: train on it with the "
        "clip, siglip or lit run books (e.g. --config=clip:quickstart)")
  if dc.source in ("arrays", "digits"):
    return _arrays(config, per_process, eval_per_process)
  if dc.source in ("folder", "npz"):
    from jssl.data import own  # pylint: disable=import-outside-toplevel
    return own.build(config, per_process, eval_per_process)
  if dc.source == "tfds":
    return _tfds(config, per_process, eval_per_process)
  raise errors.ConfigError(
      f"config.data.source={dc.source!r}: expected one of {', '.join(SOURCES)}")


def _arrays(config, per_process: int, eval_per_process: int) -> Datasets:
  from jssl.data import digits, sources  # pylint: disable=import-outside-toplevel
  dc = config.data
  arrays = digits.load_arrays(dc.name, **dict(dc.get("kwargs", {})))
  train = sources.ArraySource(arrays.train_images, arrays.train_labels)
  test = sources.ArraySource(arrays.test_images, arrays.test_labels)
  splits = {"train": train, "test": test}
  image_shape = tuple(arrays.train_images.shape[1:])

  def train_batches(start_step):
    return train.train_batches(per_process, seed=config.seed, start_step=start_step)

  def eval_batches(split):
    return splits[split].eval_batches(eval_per_process)

  spec = {"image": jax.ShapeDtypeStruct((config.batch_size, *image_shape), np.uint8),
          "label": jax.ShapeDtypeStruct((config.batch_size,), np.int32)}
  return Datasets(train_batches, eval_batches, len(arrays.train_labels),
                  int(arrays.num_classes), spec, image_shape)


def _tfds(config, per_process: int, eval_per_process: int) -> Datasets:
  from jssl.data import host, tfds_source  # pylint: disable=import-outside-toplevel
  dc = config.data
  num_train, num_classes, channels = tfds_info(dc)
  # Multi-crop: the local crops are taken on host too ('local_views').
  crops = host.HostCrops.from_recipe(config.views, config.views.num_views)
  train = tfds_source.TfdsTrainSpec(name=dc.name, split=dc.train_split, data_dir=dc.data_dir,
                                    batch_size_per_process=per_process, seed=config.seed)

  def train_batches(start_step):
    return tfds_source.tfds_train_batches(train, crops, start_step)

  def eval_batches(split):
    return tfds_source.tfds_eval_batches(
        dc.name, dc[f"{split}_split"], data_dir=dc.data_dir,
        batch_size_per_process=eval_per_process, image_size=config.eval.image_size,
        crop_fraction=config.eval.crop_fraction)

  spec = views_spec(config, channels)
  spec["label"] = jax.ShapeDtypeStruct((config.batch_size,), np.int32)
  return Datasets(train_batches, eval_batches, num_train, num_classes, spec,
                  (config.eval.image_size, config.eval.image_size, channels),
                  eval_cropped_on_host=True)


def views_spec(config, channels: int) -> dict:
  """Global-batch shapes of host-cropped batches ('views', 'local_views')."""
  b, size, v = config.batch_size, config.views.image_size, config.views.num_views
  spec = {"views": jax.ShapeDtypeStruct((b, v, size, size, channels), np.uint8)}
  local = recipes.local_crops(config.views)
  if local.num:
    spec["local_views"] = jax.ShapeDtypeStruct(
        (b, local.num, local.image_size, local.image_size, channels), np.uint8)
  return spec


def tfds_info(dc) -> tuple[int, int, int]:
  """(train examples, classes, channels) of a prepared TFDS dataset."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from jssl.data import tfds_source  # pylint: disable=import-outside-toplevel
  try:
    builder = tfds.builder(dc.name, data_dir=dc.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.ConfigError(f"config.data.name={dc.name!r} is not a TFDS dataset: "
                             f"{str(e).splitlines()[0]}") from None
  if not builder.is_prepared():
    raise tfds_source._not_prepared(dc.name, dc.data_dir)  # pylint: disable=protected-access
  info = builder.info
  return (info.splits[dc.train_split].num_examples,
          info.features["label"].num_classes, info.features["image"].shape[-1])
