"""Encoder export and `load_encoder`: a trained backbone in one line.

An export directory holds two files:
  export.json   format version, the encoder's model config, the preprocessing
                (resize/centre-crop size, mean, std), feature names and dims,
                provenance (method, step, config of the run) and the feature
                its linear probe reads (`eval.linear_feature`)
  params.npz    the encoder's variables only (no heads, no optimiser state),
                flattened to '/'-joined paths; plain arrays, read with
                `allow_pickle=False` so no code runs on load

Why .npz and not Orbax here: an export is a deliverable, read by probes, other
frameworks and people; one self-describing numpy archive is readable anywhere
(numpy, PyTorch conversions) without JAX or Orbax. Training checkpoints, which
must be sharded and async, stay in Orbax (`jssl.checkpoint`).

Paths may be local or URLs (`gs://bucket/run/export`): both files go through
`jssl.storage` (etils.epath), serialised in memory.

Usage:
  encoder = jssl.load_encoder("workdir/export")
  feats = encoder(images_uint8)          # [B, H, W, C] uint8 -> [B, D] numpy
"""
from __future__ import annotations

import io
import json
import os
from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jssl import errors
from jssl import storage

FORMAT = "jssl-encoder/1"


def export_encoder(path, *, variables: Any, model_config: dict,
                   preprocess: dict, provenance: dict | None = None,
                   linear_feature: str = "pre_logits") -> str:
  """Writes an export directory (see module docstring). Process 0 only.

  `linear_feature` (the run's `eval.linear_feature`) is recorded so
  `jssl.evaluate` probes the export on the same feature by default.

  Refuses to overwrite an existing export of a different model config.
  """
  path = storage.path(path, what="export", error=errors.ExportError)
  if jax.process_index() != 0:
    return os.fspath(path)
  variables = jax.device_get(variables)
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  meta = {
      "format": FORMAT,
      "model": model_config,
      "preprocess": preprocess,
      "provenance": provenance or {},
      "eval": {"linear_feature": linear_feature},
      "variables": {k: list(np.shape(v)) for k, v in flat.items()},
  }
  path.mkdir(parents=True, exist_ok=True)
  old = path / "export.json"
  if old.exists():
    prev = json.loads(old.read_text())
    if prev.get("model") != model_config:
      raise errors.ExportError(
          f"{path} already holds an export of a different model "
          f"({prev.get('model')}); refusing to overwrite it")
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in flat.items()})
  storage.write_atomic(path / "params.npz", buf.getvalue())
  storage.write_atomic(old, json.dumps(meta, indent=2, sort_keys=True))
  return os.fspath(path)


class Encoder:
  """A loaded encoder: raw uint8 images in, features out, on CPU.

  Attributes:
    model_config: dict the encoder was built from.
    preprocess_config: the exported preprocessing (`size`, `mean`, `std`,
      `crop_fraction`).
    dim: feature width D of `'pre_logits'`.
    output_shapes: `{name: shape}` of every encoder output for one image
      (batch dimension 1), traced once at load.
    linear_feature: the output the run's linear probe read ('pre_logits', or
      a ViT's 'cls_last4'); `jssl.evaluate`'s default for its linear probe.
  """

  def __init__(self, module, variables, model_config: dict, preprocess: dict,
               provenance: dict, device: jax.Device, linear_feature: str = "pre_logits"):
    from jssl.evals import features  # pylint: disable=import-outside-toplevel
    self.module = module
    self.model_config = model_config
    self.preprocess_config = preprocess
    self.provenance = provenance
    self.device = device
    self.linear_feature = linear_feature
    self.variables = jax.device_put(variables, device)
    pp = dict(preprocess)
    self._features = jax.jit(features.preprocessed_apply(module, pp))
    self.channels = int(preprocess.get("channels", 3))
    spec = jax.eval_shape(self._features, self.variables, jax.ShapeDtypeStruct(
        (1, pp["size"], pp["size"], self.channels), jnp.uint8))
    self.output_shapes = {k: tuple(v.shape) for k, v in spec.items()}
    self.dim = int(spec["pre_logits"].shape[-1])

  def features(self, images, *, batch_size: int = 256) -> dict[str, np.ndarray]:
    """All named features (`pre_logits`, `feature_map`, ...) as numpy."""
    images = self._check(images)
    outs = []
    for i in range(0, len(images), batch_size):
      chunk = jax.device_put(images[i:i + batch_size], self.device)
      outs.append(jax.device_get(self._features(self.variables, chunk)))
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

  def __call__(self, images, *, batch_size: int = 256) -> np.ndarray:
    """`[B, H, W, C]` uint8 -> `[B, D]` float32 `pre_logits` features."""
    images = self._check(images)
    out = []
    for i in range(0, len(images), batch_size):
      chunk = jax.device_put(images[i:i + batch_size], self.device)
      out.append(np.asarray(self._features(self.variables, chunk)["pre_logits"]))
    return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

  def _check(self, images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
      raise ValueError(
          f"expected images of rank 4 [B, H, W, C], got shape {images.shape}")
    if images.dtype != np.uint8:
      raise ValueError(
          f"expected raw uint8 images (0..255), got dtype {images.dtype}; the "
          "encoder applies its own preprocessing (see .preprocess_config)")
    if images.shape[-1] != self.channels:
      raise ValueError(
          f"expected {self.channels} channels, got images of shape {images.shape}")
    return images


def _read_meta(meta_path, fmt: str) -> dict:
  """An export's JSON metadata, checked to be of format `fmt`."""
  try:
    meta = json.loads(meta_path.read_text())
  except json.JSONDecodeError as e:
    raise errors.ExportError(f"corrupt export metadata {meta_path}: {e}") from e
  if meta.get("format") != fmt:
    raise errors.ExportError(
        f"{meta_path}: unknown export format {meta.get('format')!r}, expected {fmt!r}")
  return meta


def _read_npz(npz_path) -> dict:
  """The arrays of an export's .npz (no pickles: nothing runs on load)."""
  try:
    with np.load(io.BytesIO(npz_path.read_bytes()), allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except Exception as e:  # zipfile / numpy raise several types
    raise errors.ExportError(f"corrupt export parameters {npz_path}: {e}") from e


def load_encoder(path, *, device: jax.Device | None = None) -> Encoder:
  """Loads an export directory written by `export_encoder` (on CPU by default).

  Raises:
    FileNotFoundError: `path` is not an export directory.
    ValueError: the files are corrupt or do not match the model they describe.
  """
  from jssl import models  # pylint: disable=import-outside-toplevel
  path = storage.path(path, what="export", error=errors.ExportError)
  meta_path, npz_path = path / "export.json", path / "params.npz"
  for p in (meta_path, npz_path):
    if not p.exists():
      raise errors.ExportNotFoundError(
          f"{path} is not a jssl export: {p.name} is missing "
          "(exports are written to <workdir>/export at the end of training)")
  meta = _read_meta(meta_path, FORMAT)
  flat = _read_npz(npz_path)

  device = device or jax.devices("cpu")[0]
  module = models.make_encoder(meta["model"])
  pp = meta["preprocess"]
  channels = int(pp.get("channels", 3))
  expected = jax.eval_shape(
      lambda: module.init(jax.random.key(0),
                          jnp.zeros((1, pp["size"], pp["size"], channels)),
                          train=False))
  exp_flat = flax.traverse_util.flatten_dict(expected, sep="/")
  missing = sorted(set(exp_flat) - set(flat))
  extra = sorted(set(flat) - set(exp_flat))
  bad = [f"{k}: saved {flat[k].shape}, model {exp_flat[k].shape}"
         for k in exp_flat if k in flat and flat[k].shape != exp_flat[k].shape]
  if missing or extra or bad:
    raise errors.ExportError(
        f"{npz_path} does not match model {meta['model']}: missing "
        f"{missing[:5]}, unexpected {extra[:5]}, shape mismatches {bad[:5]}")
  variables = flax.traverse_util.unflatten_dict(
      {k: np.asarray(v, exp_flat[k].dtype) for k, v in flat.items()}, sep="/")
  # Exports from before `eval` was recorded probed 'pre_logits'.
  return Encoder(module, variables, meta["model"], pp,
                 meta.get("provenance", {}), device,
                 linear_feature=meta.get("eval", {}).get("linear_feature", "pre_logits"))


# --- Dual encoders (CLIP, SigLIP, LiT) ---------------------------------------
#
# A dual-encoder export is an image-encoder export (export.json + params.npz:
# the image tower, so `load_encoder` and every image probe work on it) plus:
#   dual.json     format, the run config the method is rebuilt from (method,
#                 image and text towers, embed_dim, loss), the preprocessing,
#                 the tokenizer config, provenance
#   dual.npz      every variable the two embedding functions use
#                 (`DualEncoder.variables`: towers, projections, temperature)
#   tokenizer/    the tokenizer's vocabulary / model file, if it has one

DUAL_FORMAT = "jssl-dual/1"


def export_dual(path, *, variables: Any, config: dict, preprocess: dict,
                tokenizer, provenance: dict | None = None) -> str:
  """Writes the dual-encoder part of an export directory (process 0 only);
  call `export_encoder` for the image tower into the same directory."""
  path = storage.path(path, what="export", error=errors.ExportError)
  if jax.process_index() != 0:
    return os.fspath(path)
  flat = flax.traverse_util.flatten_dict(jax.device_get(variables), sep="/")
  files = tokenizer.files()
  meta = {"format": DUAL_FORMAT, "config": config, "preprocess": preprocess,
          "tokenizer": tokenizer.config(), "tokenizer_files": sorted(files),
          "provenance": provenance or {},
          "variables": {k: list(np.shape(v)) for k, v in flat.items()}}
  path.mkdir(parents=True, exist_ok=True)
  for name, data in files.items():
    (path / "tokenizer").mkdir(parents=True, exist_ok=True)
    storage.write_atomic(path / "tokenizer" / name, data)
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in flat.items()})
  storage.write_atomic(path / "dual.npz", buf.getvalue())
  storage.write_atomic(path / "dual.json", json.dumps(meta, indent=2, sort_keys=True))
  return os.fspath(path)


class DualModel:
  """A loaded image-text model: raw uint8 images and strings in, L2-normalised
  embeddings out, on CPU. `similarity(images, texts)` gives the cosine
  similarities; `image_tower` is the image encoder (`load_encoder`'s object).
  """

  def __init__(self, dual, variables, tokenizer, preprocess: dict, config: dict,
               provenance: dict, image_tower: Encoder, device: jax.Device):
    from jssl.data import eval_transform  # pylint: disable=import-outside-toplevel
    self.config, self.preprocess_config, self.provenance = config, preprocess, provenance
    self.tokenizer, self.image_tower, self.device = tokenizer, image_tower, device
    self.dual = dual  # the method's DualEncoder (embedding functions of `variables`)
    self.variables = jax.device_put(variables, device)
    size, mean, std = int(preprocess["size"]), preprocess["mean"], preprocess["std"]
    crop = float(preprocess.get("crop_fraction", 1.0))
    self._images = jax.jit(lambda v, x: dual.embed_images(v, eval_transform.eval_preprocess(
        x, size=size, mean=mean, std=std, crop_fraction=crop)))
    self._texts = jax.jit(dual.embed_texts)

  def encode_image(self, images, *, batch_size: int = 256) -> np.ndarray:
    """`[B, H, W, C]` uint8 -> `[B, D]` float32, L2-normalised."""
    images = self.image_tower._check(images)  # pylint: disable=protected-access
    return self._batched(self._images, images, batch_size)

  def encode_text(self, texts, *, batch_size: int = 256) -> np.ndarray:
    """A string or a list of strings -> `[N, D]` float32, L2-normalised
    (tokenised inside; text longer than the context is truncated)."""
    if isinstance(texts, str):
      texts = [texts]
    return self._batched(self._texts, self.tokenizer(list(texts)), batch_size)

  def similarity(self, images, texts) -> np.ndarray:
    """Cosine similarities `[num_images, num_texts]`."""
    return self.encode_image(images) @ self.encode_text(texts).T

  def _batched(self, fn, rows, batch_size):
    if len(rows) == 0:  # the embedding width, from one stand-in row
      return np.asarray(fn(self.variables, np.zeros((1, *rows.shape[1:]), rows.dtype)))[:0]
    return np.concatenate([
        np.asarray(fn(self.variables, jax.device_put(rows[i:i + batch_size], self.device)),
                   np.float32) for i in range(0, len(rows), batch_size)])


def load_clip(path, *, device: jax.Device | None = None) -> DualModel:
  """Loads a dual-encoder export (CLIP, SigLIP or LiT) written at the end of
  training into `<workdir>/export`; see `DualModel`."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jssl import methods  # pylint: disable=import-outside-toplevel
  from jssl.text import tokenizers  # pylint: disable=import-outside-toplevel
  path = storage.path(path, what="export", error=errors.ExportError)
  meta_path, npz_path = path / "dual.json", path / "dual.npz"
  if not meta_path.exists() and (path / "export.json").exists():
    raise errors.ExportError(
        f"{path} is an image-encoder export, not an image-text one (no dual.json): "
        "load it with jssl.load_encoder")
  image_tower = load_encoder(path, device=device)
  if not npz_path.exists():
    raise errors.ExportNotFoundError(f"{path} is not a complete image-text export: "
                                     "dual.npz is missing")
  meta = _read_meta(meta_path, DUAL_FORMAT)
  config = ml_collections.ConfigDict(meta["config"])
  if "lit" in config:
    # The locked image tower is the export's own image encoder.
    config.lit.image_tower = os.fspath(path)
  tokenizer = tokenizers.make(meta["tokenizer"], root=path / "tokenizer")
  method = methods.make(config)
  pp = meta["preprocess"]
  views = (jnp.zeros((1, pp["size"], pp["size"], int(pp.get("channels", 3))), jnp.float32),)
  params, state = jax.eval_shape(method.init, jax.random.key(0), views)
  expected = jax.eval_shape(method.dual.variables, params, state)
  exp_flat = flax.traverse_util.flatten_dict(expected, sep="/")
  flat = _read_npz(npz_path)
  bad = sorted(set(exp_flat) ^ set(flat)) + [
      k for k in exp_flat if k in flat and flat[k].shape != exp_flat[k].shape]
  if bad:
    raise errors.ExportError(f"{npz_path} does not match the {config.method} model it "
                             f"describes: {bad[:5]}")
  variables = flax.traverse_util.unflatten_dict(
      {k: np.asarray(v, exp_flat[k].dtype) for k, v in flat.items()}, sep="/")
  return DualModel(method.dual, variables, tokenizer, pp, meta["config"],
                   meta.get("provenance", {}), image_tower, image_tower.device)
