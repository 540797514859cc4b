"""Image <-> patch-sequence reshaping, shared by the ViT and the MAE objective.

`patchify` is a pure array op that belongs to no layer above it: the ViT's
patch embedding (`jssl.models.vit`) applies it to its input, and MAE builds its
pixel target with it (`jssl.methods.mae`; `jssl.losses.mae` takes the patches
as input and re-exports the function as `jssl.losses.patchify`). Keeping it
here lets models and losses both use it without either importing the other
(DESIGN rule 2: models never import losses; tests/test_layering.py).
"""
from __future__ import annotations

import jax.numpy as jnp


def patchify(images, patch_size: int):
  """[B, H, W, C] images -> [B, N, p*p*C] patches, row-major patches, (p, p, C) inside.

  Same element order as facebookresearch/mae models_mae.py::patchify
  ('nchpwq->nhwpqc' on NCHW), written for NHWC.
  """
  # The same checks (and messages) as the losses' `check_rank`: floats of rank 4.
  dtype = getattr(images, "dtype", None)
  shape = tuple(getattr(images, "shape", ()))
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"images must be a floating array, got dtype {dtype} and shape {shape}")
  if images.ndim != 4:
    raise ValueError(f"images must have shape [B, H, W, C], got shape {shape}")
  b, h, w, c = images.shape
  p = patch_size
  if h % p or w % p:
    raise ValueError(f"images [B, H, W, C] = {images.shape} not divisible by patch "
                     f"size ({p}, {p})")
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)
