"""The jitted on-device view function built from a view recipe.

`make_view_fn(recipe, V)` returns `view_fn(key, batch) -> (x_1, ..., x_V,
l_1, ..., l_L)`: the V global views `float32 [B, h, w, C]` then the L local
views `float32 [B, l, l, C]`, normalised; one static shape per resolution, so
the step compiles once. Each example of each view gets its own key
(`jssl.sharding.example_keys`: `jax.random.split` + `jax.vmap`); with jax's
partitionable threefry the views do not depend on how the batch is sharded
(tested on 8 devices).

The recipe (`jssl.data.recipes`) says what to do; this module composes the jnp
ops of `jssl.data.augment` on device, inside the train step, so the
photometric work stays on the accelerator (big_vision's host/device split).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Tuple

import jax
import ml_collections

from jssl.data import augment
from jssl.data.recipes import local_config, local_crops, view_config
from jssl.sharding import example_keys


def _one_view(key, image, *, cfg: Dict[str, Any], crop: bool):
  """uint8 [H, W, C] -> float32 [h, w, C] normalised (one example, one view)."""
  k_crop, k_flip, k_jit, k_gray, k_blur, k_sol = augment.split(key, 6)
  x = augment.to_float(image)
  size = cfg["image_size"]
  if crop:
    x = augment.random_resized_crop(k_crop, x, size=size, scale=cfg["crop"]["scale"],
                                    ratio=cfg["crop"]["ratio"])
  x = augment.random_flip(k_flip, x, p=cfg["flip"]["p"])
  cj = cfg["color_jitter"]
  x = augment.color_jitter(k_jit, x, brightness=cj["brightness"], contrast=cj["contrast"],
                           saturation=cj["saturation"], hue=cj["hue"], p=cj["p"],
                           random_order=cj["random_order"])
  x = augment.random_grayscale(k_gray, x, p=cfg["grayscale"]["p"])
  bl = cfg["blur"]
  x = augment.gaussian_blur(
      k_blur, x, p=bl["p"], sigma=bl["sigma"],
      kernel_size=augment.blur_kernel_size(size, bl["kernel_fraction"]))
  x = augment.solarize(k_sol, x, p=cfg["solarize"]["p"],
                       threshold=cfg["solarize"]["threshold"])
  return augment.normalize(x, mean=cfg["mean"], std=cfg["std"])



def make_view_fn(recipe: ml_collections.ConfigDict, num_views: int):
  """Builds `view_fn(key, batch) -> (V global views..., L local views...)`.

  Global views are `float32 [B, h, w, C]` (`h = recipe.image_size`), local
  views `float32 [B, l, l, C]` (`l = recipe.local.image_size`, L =
  `recipe.local.num`, 0 without `recipe.local`). `batch` is either
    * `{'image': uint8 [B, H, W, C]}`: fixed-size arrays; every crop (global
      and local) is a random resized crop taken on device, independently; or
    * `{'views': uint8 [B, V, h, w, C]}` (+ `'local_views': uint8 [B, L, l, l,
      C]` when L > 0): crops already taken on host (TFDS); only flip and
      photometric ops run on device.
  Other keys (e.g. 'label') are ignored. The function is pure and jittable; call
  it inside the train step so the photometric work stays on the accelerator.
  """
  cfgs = [view_config(recipe, v, num_views).to_dict() for v in range(num_views)]
  local = local_crops(recipe)
  local_cfg = local_config(recipe).to_dict() if local.num else None

  def host_crops(batch, name, n, size):
    images = batch.get(name)
    if images is None:
      raise KeyError(f"batch has host crops 'views' but no {name!r} for the "
                     f"{n} local crops of recipe.local; has {sorted(batch)}")
    if images.ndim != 5 or images.shape[1] != n:
      raise ValueError(f"batch[{name!r}] must be [B, {'V' if name == 'views' else 'L'}"
                       f"={n}, h, w, C], got {images.shape}")
    if images.shape[2:4] != (size,) * 2:
      raise ValueError(f"host crops batch[{name!r}] are {images.shape[2:4]}, "
                       f"expected {size} px (recipe)")
    return images

  def views_of(key, images, cfg_list, crop):
    keys = jax.random.split(key, len(cfg_list))
    out = []
    for v, cfg in enumerate(cfg_list):
      x = images if crop else images[:, v]
      fn = functools.partial(_one_view, cfg=cfg, crop=crop)
      out.append(jax.vmap(fn)(example_keys(keys[v], x), x))
    return out

  def view_fn(key, batch) -> Tuple[jax.Array, ...]:
    if "views" in batch:
      images = host_crops(batch, "views", num_views, recipe.image_size)
      crop = False
    elif "image" in batch:
      images = batch["image"]
      if images.ndim != 4:
        raise ValueError(f"batch['image'] must be [B, H, W, C], got {images.shape}")
      crop = True
    else:
      raise KeyError(f"batch needs 'image' or 'views', has {sorted(batch)}")
    # The global views use `key` exactly as before multi-crop existed, so a
    # recipe without local crops gives the same views; local crops draw from
    # an independent key.
    out = views_of(key, images, cfgs, crop)
    if local.num:
      if not crop:
        images = host_crops(batch, "local_views", local.num, local.image_size)
      out += views_of(jax.random.fold_in(key, 1), images, [local_cfg] * local.num,
                      crop)
    return tuple(out)

  return view_fn
