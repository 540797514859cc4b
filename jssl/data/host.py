"""Host-side image work for sources of any image size: decode, crop, resize (PIL).

The middle layer of `jssl.data` (DESIGN.md rule 15): a source hands over one
example by index, this module turns its image into fixed-size uint8 crops, and
the device makes the views from them (`jssl.data.device_views.make_view_fn` with a
`{'views': uint8 [B, V, s, s, C]}` batch: flip and photometric ops only).

* `HostCrops`: the crop spec (a recipe's geometry only; no method, no source).
* `crop_views(image, rng, spec)`: V global (+ L local) random resized crops of
  one image. The box is drawn as torchvision's `RandomResizedCrop` does (10
  draws, then the clamped centre crop), and PIL resizes the box directly
  (`Image.resize(box=...)`, bilinear with antialiasing when shrinking).
  A JPEG is decoded at the smallest 1/2^k scale that still gives every crop
  at least its output side (`Image.draft`, DCT-domain scaling): a 224 px crop
  of a large photo then decodes 2-8x fewer pixels, the usual trick of fast
  ImageNet loaders. It is deterministic, so resumed runs see the same pixels.
* `resize_center_crop(image, size, crop_fraction)`: the eval geometry of
  `jssl.data.eval_transform.eval_preprocess` (shorter side to `size / crop_fraction`,
  centre `size x size`) on host, so variable-size images batch.

PIL releases the GIL while it decodes and resizes, so worker threads scale
over cores (`jssl.data.pipeline`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

from jssl.data.eval_transform import eval_resize_shape

Box = Tuple[int, int, int, int]  # left, top, width, height (pixels)


@dataclasses.dataclass(frozen=True)
class HostCrops:
  """Geometry of the host crops of one example (from a view recipe)."""
  image_size: int                          # side of the V global crops, pixels
  num_views: int = 2                       # V
  scale: Tuple[float, float] = (0.08, 1.0)  # crop area fraction range
  ratio: Tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio (w/h) range
  num_local: int = 0                       # L local (multi-crop) crops, 0 = none
  local_size: int = 0                      # side of the local crops
  local_scale: Tuple[float, float] = (0.05, 0.14)

  @classmethod
  def from_recipe(cls, recipe, num_views: int) -> "HostCrops":
    from jssl.data import recipes  # pylint: disable=import-outside-toplevel
    local = recipes.local_crops(recipe)
    return cls(int(recipe.image_size), int(num_views),
               tuple(float(s) for s in recipe.crop.scale),
               tuple(float(r) for r in recipe.crop.ratio),
               local.num, local.image_size, tuple(local.scale))


def crop_box(rng: np.random.Generator, height: int, width: int, *,
             scale: Sequence[float], ratio: Sequence[float],
             attempts: int = 10) -> Box:
  """torchvision `RandomResizedCrop.get_params`: area and log-ratio draws,
  falling back to the whole image clamped to the ratio range."""
  area = height * width
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(attempts):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, w, h
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def _rgb(image: Image.Image) -> Image.Image:
  # Grey, palette, CMYK and alpha images all become 3-channel RGB, so a folder
  # of mixed channel counts batches (alpha is dropped, not composited).
  return image if image.mode == "RGB" else image.convert("RGB")


def crop_views(image: Image.Image, rng: np.random.Generator,
               spec: HostCrops) -> Dict[str, np.ndarray]:
  """`{'views': uint8 [V, s, s, 3]}` (+ `'local_views': uint8 [L, l, l, 3]`).

  `image` is an opened (not yet decoded) PIL image; its decode happens here,
  after the boxes are known (see the module docstring on `draft`). Global
  boxes are drawn before local ones, so adding local crops does not change
  the global crops.
  """
  width, height = image.size
  boxes = [(crop_box(rng, height, width, scale=spec.scale, ratio=spec.ratio),
            spec.image_size) for _ in range(spec.num_views)]
  boxes += [(crop_box(rng, height, width, scale=spec.local_scale, ratio=spec.ratio),
             spec.local_size) for _ in range(spec.num_local)]
  # Largest decode reduction that keeps every box at least its output side.
  reduce = min(min(b[2], b[3]) / size for b, size in boxes)
  if reduce >= 2 and image.format == "JPEG":
    image.draft("RGB", (math.ceil(width / reduce), math.ceil(height / reduce)))
  image = _rgb(image)
  sx, sy = image.size[0] / width, image.size[1] / height
  out = []
  for (left, top, w, h), size in boxes:
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    out.append(np.asarray(image.resize((size, size), Image.BILINEAR, box=box)))
  res = {"views": np.stack(out[:spec.num_views])}
  if spec.num_local:
    res["local_views"] = np.stack(out[spec.num_views:])
  return res


def resize_center_crop(image: Image.Image, size: int,
                       crop_fraction: float = 1.0) -> np.ndarray:
  """uint8 `[size, size, 3]`: the geometry of `eval_transform.eval_preprocess`."""
  width, height = image.size
  rh, rw = eval_resize_shape(height, width, size, crop_fraction)
  if image.format == "JPEG" and min(width / rw, height / rh) >= 2:
    image.draft("RGB", (rw, rh))
  image = _rgb(image)
  if image.size != (rw, rh):
    image = image.resize((rw, rh), Image.BILINEAR)
  top, left = (rh - size) // 2, (rw - size) // 2
  return np.asarray(image.crop((left, top, left + size, top + size)))


def array_image(array: np.ndarray) -> Image.Image:
  """uint8 `[H, W, C]` (C = 1 or 3) as a PIL image (no copy for C = 3)."""
  if array.shape[-1] == 1:
    return Image.fromarray(array[..., 0], "L")
  return Image.fromarray(array, "RGB")

