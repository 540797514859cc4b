"""`Datasets` for your own data: `config.data.source` 'folder' or 'npz'.

Training: a folder is decoded and cropped on host (`jssl.data.loader`,
`{'views': ...}` batches); an npz is held in memory and cropped on device like
the digits (`{'image': ...}` batches, `jssl.data.sources.ArraySource`). Both
continue their data order exactly on resume.

Evaluation: every example (folder or npz) is resized and centre-cropped on
host to `config.eval.image_size`, so a folder of any sizes and an npz of
another size mix. Which examples the probes use: `jssl.data.pipeline`.
"""
from __future__ import annotations

from typing import Optional, Tuple

from etils import epath
import jax
import numpy as np

from jssl import errors
from jssl.data import folder as folder_lib
from jssl.data import host, loader, sources
from jssl.data.pipeline import Datasets, views_spec

EVAL_FIT_FRACTION = 0.8  # unlabelled training data: probes fit on 80% of the eval set


def _is_npz(path: str) -> bool:
  p = epath.Path(path)
  return path.lower().endswith(".npz") or (p.exists() and not p.is_dir())


def _load(path: str, field: str, source: str,
          class_names: Optional[Tuple[str, ...]] = None):
  if source == "npz":
    images, labels = folder_lib.load_npz(path, field=field)
    return folder_lib.ArrayImages(images, labels)
  return folder_lib.scan_folder(path, field=field, class_names=class_names)


def _classes(src) -> Optional[int]:
  if src.labels is None:
    return None
  names = getattr(src, "class_names", ())
  return len(names) if names else int(src.labels.max()) + 1


def build(config, per_process: int, eval_per_process: int) -> Datasets:
  dc = config.data
  path = dc.get("path")
  if not path:
    what = "a folder DIR/<class>/*.jpg or DIR/*.jpg" if dc.source == "folder" else \
        "an .npz file with 'images' [N, H, W, C] uint8 (+ 'labels' [N])"
    raise errors.ConfigError(f"config.data.path is unset; data.source={dc.source!r} needs "
                             f"{what}")
  train = _load(path, "config.data.path", dc.source)
  num_classes = _classes(train)
  if num_classes is not None and num_classes < 2:
    train.labels, num_classes = None, None  # one class is no label
  if config.batch_size > train.num_examples:
    raise errors.ConfigError(f"config.batch_size={config.batch_size} > the "
                             f"{train.num_examples} examples of config.data.path={path!r}")

  seed = config.seed
  if dc.source == "npz":
    arrays = sources.ArraySource(train.images, train.labels)

    def train_batches(start_step):
      return arrays.train_batches(per_process, seed=seed, start_step=start_step)

    spec = {"image": jax.ShapeDtypeStruct((config.batch_size, *train.images.shape[1:]),
                                          np.uint8)}
  else:
    crops = host.HostCrops.from_recipe(config.views, config.views.num_views)
    workers = int(dc.get("workers", 0))

    def train_batches(start_step):
      return loader.crop_batches(train, crops, loader.LoaderSpec(
          per_process, seed=seed, workers=workers), start_step)

    spec = views_spec(config, 3)
  if num_classes is not None:
    spec["label"] = jax.ShapeDtypeStruct((config.batch_size,), np.int32)

  fit, test, probe_classes, skipped = _probe_sets(config, train, num_classes)
  size = int(config.eval.image_size)
  crop_fraction = float(config.eval.get("crop_fraction", 1.0))
  eval_spec = loader.LoaderSpec(eval_per_process, workers=int(dc.get("workers", 0)))

  def eval_batches(split):
    src, idx = fit if split == "train" else test
    return loader.eval_batches(src, idx, size=size, crop_fraction=crop_fraction,
                               spec=eval_spec)

  return Datasets(train_batches, eval_batches, train.num_examples, num_classes, spec,
                  (size, size, 3), eval_cropped_on_host=True,
                  probe_classes=probe_classes, probes_skipped=skipped)


def _probe_sets(config, train, num_classes):
  """((fit source, indices), (test source, indices), classes, why skipped)."""
  dc = config.data
  eval_path = dc.get("eval_path")
  none = ((None, []), (None, []), None)
  if not eval_path:
    return (*none, "no labelled evaluation set: set config.data.eval_path to a labelled "
                   "folder (DIR/<class>/*.jpg) or .npz with 'labels'")
  names = getattr(train, "class_names", ()) or None
  kind = "npz" if _is_npz(eval_path) else "folder"
  ev = _load(eval_path, "config.data.eval_path", kind, class_names=names)
  if ev.labels is None:
    return (*none, f"config.data.eval_path={eval_path!r} has no labels (a flat folder or "
                   "an npz without 'labels')")
  every = np.arange(ev.num_examples)
  if num_classes is not None:
    classes = max(num_classes, _classes(ev))
    return (train, np.arange(train.num_examples)), (ev, every), classes, ""
  perm = np.random.default_rng(0).permutation(ev.num_examples)
  k = int(round(EVAL_FIT_FRACTION * ev.num_examples))
  if k < 1 or k == ev.num_examples:
    raise errors.DataError(f"config.data.eval_path={eval_path!r} has {ev.num_examples} "
                           "examples; the probes of unlabelled training data need >= 2 "
                           "(80% fit, 20% test)")
  return (ev, np.sort(perm[:k])), (ev, np.sort(perm[k:])), _classes(ev), ""
