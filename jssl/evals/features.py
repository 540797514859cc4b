"""Feature extraction: one jitted, sharded pass over an eval split.

Every probe consumes the arrays this returns, so each split is encoded once
per evaluation whatever the number of protocols (DESIGN convention 10).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

from jssl import sharding as shd


def preprocessed_apply(module, preprocess: dict, *, crop_fraction: Optional[float] = None,
                       keys: Optional[Sequence[str]] = None):
  """`fn(variables, images_uint8) -> {name: array}`: the inference transform
  then the encoder, the one feature function of training-time evaluation,
  `jssl.evaluate` and exported encoders.

  `preprocess` holds `size`, `mean`, `std` (and `crop_fraction`), as an export
  records them; `jssl.data.eval_transform.eval_preprocess` resizes, centre-crops
  (`crop_fraction`, default the preprocess's own; pass 1.0 for images already
  cropped on host) and normalises, then `module.apply(..., train=False)`.
  `keys` keeps only those outputs (default: all).
  """
  from jssl.data import eval_transform  # pylint: disable=import-outside-toplevel
  crop = float(preprocess.get("crop_fraction", 1.0) if crop_fraction is None
               else crop_fraction)
  size, mean, std = int(preprocess["size"]), preprocess["mean"], preprocess["std"]

  def fn(variables, images):
    x = eval_transform.eval_preprocess(images, size=size, mean=mean, std=std, crop_fraction=crop)
    out = module.apply(variables, x, train=False)
    return out if keys is None else {k: out[k] for k in keys}

  return fn


def make_feature_fn(encode: Callable[[Any, jax.Array], dict], mesh, *,
                    feature: str | Sequence[str] = "pre_logits"):
  """Jits `encode(variables, images_uint8) -> {feature: [B, D]}` over `mesh`.

  `variables` are replicated, images are split over the data axis, features
  come back split the same way: one array for a `feature` name, a dict of
  them for a sequence of names (one encoder pass for several features).
  """
  names = (feature,) if isinstance(feature, str) else tuple(feature)

  def fn(variables, images):
    out = encode(variables, images)
    return out[feature] if isinstance(feature, str) else {k: out[k] for k in names}

  return jax.jit(fn, in_shardings=(shd.replicated(mesh), shd.data_sharding(mesh)),
                 out_shardings=shd.data_sharding(mesh))


def extract(feature_fn, variables, batches: Iterable[dict], mesh):
  """Runs `feature_fn` over host batches `{'image', 'label', 'mask'}`.

  Returns:
    features `[N, D]` float32 (a dict of them when `feature_fn` gives a dict)
    and labels `[N]` int32 on every process, in global batch order, with
    padding rows (mask False) dropped.
  """
  feats, labels, masks = [], [], []
  for batch in batches:
    g = shd.to_global({"image": batch["image"]}, mesh)
    f = feature_fn(variables, g["image"])
    # Gathered to every host: probes are cheap and run replicated.
    feats.append(jax.tree.map(
        lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True), np.float32),
        f))
    labels.append(_gather_host(batch["label"]))
    masks.append(_gather_host(batch["mask"]))
  if not feats:
    raise ValueError("feature extraction got no batches (empty eval split?)")
  mask = np.concatenate(masks).astype(bool)
  stacked = jax.tree.map(lambda *a: np.concatenate(a)[mask], *feats)
  return stacked, np.concatenate(labels)[mask].astype(np.int32)


def _gather_host(x) -> np.ndarray:
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
