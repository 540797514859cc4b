"""View recipes (ml_collections configs) and the jitted on-device view function.

A recipe is a `ConfigDict` describing one stochastic augmentation pipeline:

  crop (random resized) -> flip -> colour jitter -> grayscale -> blur -> solarize
  -> normalise

which is the order of SimCLR App. A / `data_util.preprocess_for_train` and BYOL
`augmentations.py`. `per_view` lists per-view overrides (dotted keys or nested
dicts), so asymmetric recipes such as BYOL's (blur p 1.0 / 0.1, solarize p
0 / 0.2) are pure config; see `byol_recipe`.

Multi-crop (SwAV Sec. 3.2, DINO): `recipe.local` adds L small crops at a second
resolution, `num` / `image_size` / `scale` / `overrides` (fields applied to every
local crop, e.g. `{'blur': {'p': 0.5}}`); see `add_local_crops` and
`multicrop_recipe`. A recipe without `local` has no local crops.

`make_view_fn(recipe, V)` returns `view_fn(key, batch) -> (x_1, ..., x_V,
l_1, ..., l_L)`: the V global views `float32 [B, h, w, C]` then the L local
views `float32 [B, l, l, C]`, normalised; one static shape per resolution, so
the step compiles once. Each example of each view gets its own key
(`jax.random.split` + `jax.vmap`); with jax's partitionable threefry the views
do not depend on how the batch is sharded (tested on 8 devices).

`eval_preprocess` is the deterministic inference transform; `jssl.export` ships
it with the encoder, so it is pure jnp.
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Dict, Mapping, NamedTuple, Sequence, Tuple

import jax
import ml_collections

from jssl.data import augment

# Fields a per-view override may touch (dotted), i.e. every leaf of a recipe.
_SECTIONS = ("crop", "flip", "color_jitter", "grayscale", "blur", "solarize")


def simclr_recipe(image_size: int, *, mean: Sequence[float], std: Sequence[float],
                  blur: bool | None = None) -> ml_collections.ConfigDict:
  """SimCLR views (Chen et al. 2020, App. A; google-research/simclr `data_util.py`).

  Args:
    image_size: output side h = w of every view, in pixels.
    mean, std: per-channel normalisation statistics on the [0, 1] scale.
    blur: Gaussian blur with p=0.5; None -> only for `image_size >= 96`
      (SimCLR blurs on ImageNet, not on CIFAR-10).

  Returns:
    An unlocked recipe `ConfigDict`.
  """
  if blur is None:
    blur = image_size >= 96
  r = ml_collections.ConfigDict()
  r.image_size = image_size           # output side, pixels
  r.crop = ml_collections.ConfigDict()
  r.crop.scale = (0.08, 1.0)          # area fraction range (SimCLR / Inception)
  r.crop.ratio = (3 / 4, 4 / 3)       # aspect ratio w/h range
  r.flip = ml_collections.ConfigDict()
  r.flip.p = 0.5                      # horizontal flip probability
  r.color_jitter = ml_collections.ConfigDict()
  # Strength s=0.5 (SimCLR CIFAR-10): 0.8s, 0.8s, 0.8s, 0.2s; s=1.0 on ImageNet.
  r.color_jitter.brightness = 0.4
  r.color_jitter.contrast = 0.4
  r.color_jitter.saturation = 0.4
  r.color_jitter.hue = 0.1
  r.color_jitter.p = 0.8              # probability the jitter is applied at all
  r.color_jitter.random_order = True  # per-example random op order
  r.grayscale = ml_collections.ConfigDict()
  r.grayscale.p = 0.2                 # colour drop probability
  r.blur = ml_collections.ConfigDict()
  r.blur.p = 0.5 if blur else 0.0     # SimCLR ImageNet: 0.5
  r.blur.sigma = (0.1, 2.0)           # sigma range, pixels
  r.blur.kernel_fraction = 0.1        # kernel side / image side
  r.solarize = ml_collections.ConfigDict()
  r.solarize.p = 0.0                  # SimCLR does not solarize
  r.solarize.threshold = 0.5
  r.mean = tuple(float(m) for m in mean)
  r.std = tuple(float(s) for s in std)
  # Per-view overrides: () or one dict per view, e.g. ({'blur.p': 1.0}, {'blur.p': 0.1}).
  r.per_view = ()
  return r


def byol_recipe(image_size: int, *, mean: Sequence[float],
                std: Sequence[float]) -> ml_collections.ConfigDict:
  """BYOL's asymmetric views (Grill et al. 2020, Table 6; byol `augmentations.py`).

  Same as SimCLR except saturation 0.2, blur p 1.0 / 0.1 and solarize p 0 / 0.2
  for views 1 / 2 -- expressed purely as `per_view` overrides.
  """
  r = simclr_recipe(image_size, mean=mean, std=std, blur=True)
  r.color_jitter.saturation = 0.2
  r.per_view = ({"blur.p": 1.0, "solarize.p": 0.0},
                {"blur.p": 0.1, "solarize.p": 0.2})
  return r


class LocalCrops(NamedTuple):
  """The local-crop settings of a recipe (`num=0`: none)."""
  num: int
  image_size: int
  scale: Tuple[float, float]


def add_local_crops(recipe: ml_collections.ConfigDict, *, num: int, image_size: int,
                    scale: Sequence[float],
                    overrides: Mapping[str, Any] | None = None
                    ) -> ml_collections.ConfigDict:
  """Adds `recipe.local`: `num` extra crops of side `image_size` (multi-crop).

  The global crops keep `recipe.crop.scale` and `recipe.per_view`; every local
  crop uses the recipe with `crop.scale = scale`, `image_size` and `overrides`
  applied (same photometric ops otherwise, as SwAV's `MultiCropDataset` and
  DINO's `DataAugmentationDINO`).

  Args:
    recipe: a view recipe (modified in place and returned).
    num: L, local crops per image (0 = none).
    image_size: local crop side, pixels (SwAV / DINO ImageNet: 96).
    scale: local crop area range (SwAV (0.05, 0.14), DINO (0.05, 0.4)).
    overrides: recipe fields for the local crops, dotted or nested, e.g.
      `{'blur.p': 0.5}` (DINO); stored nested because `ConfigDict` keys cannot
      hold dots (a locked config then takes
      `--config.views.local.overrides.blur.p=0.7` for a field set here).

  Returns:
    `recipe`.
  """
  nested: Dict[str, Any] = {}
  for name, value in _flatten(dict(overrides or {})).items():
    node = nested
    *parents, leaf = name.split(".")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  recipe.local = ml_collections.ConfigDict(dict(
      num=int(num),                        # L local crops per image
      image_size=int(image_size),          # local side, pixels
      scale=tuple(float(s) for s in scale),  # local crop area fraction range
      overrides=ml_collections.ConfigDict(nested)))
  if num > 0:
    local_config(recipe)  # typos in `overrides` fail here, not in the step
  return recipe


def multicrop_recipe(image_size: int, local_size: int = 96, num_local: int = 6, *,
                     mean: Sequence[float], std: Sequence[float],
                     global_scale: Sequence[float] = (0.14, 1.0),
                     local_scale: Sequence[float] = (0.05, 0.14),
                     local_overrides: Mapping[str, Any] | None = None,
                     blur: bool | None = None) -> ml_collections.ConfigDict:
  """SimCLR-style photometric ops with 2 global + `num_local` local crops.

  Defaults are SwAV's ImageNet multi-crop (Caron et al. 2020, Sec. 3.2 /
  `scripts/swav_800ep_pretrain.sh`: 2 x 224 px at scale (0.14, 1) + 6 x 96 px
  at (0.05, 0.14)); DINO uses (0.4, 1) / (0.05, 0.4). Colour-jitter strength
  is the SimCLR recipe's default (0.5); ImageNet configs set 1.0. Use as the
  `recipe` of `jssl.runbook.*_data` via `functools.partial`. Set
  `num_views = 2` on the result (the global crops).
  """
  r = simclr_recipe(image_size, mean=mean, std=std, blur=blur)
  r.crop.scale = tuple(float(s) for s in global_scale)
  return add_local_crops(r, num=num_local, image_size=local_size, scale=local_scale,
                         overrides=local_overrides)


def local_crops(recipe: ml_collections.ConfigDict) -> LocalCrops:
  """`recipe.local` as a `LocalCrops`; `num=0` when the recipe has none."""
  local = recipe.get("local", None)
  if local is None or int(local.get("num", 0)) <= 0:
    return LocalCrops(0, 0, (0.0, 0.0))
  return LocalCrops(int(local.num), int(local.image_size),
                    tuple(float(s) for s in local.scale))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for k, v in d.items():
    name = f"{prefix}{k}"
    if isinstance(v, (Mapping, ml_collections.ConfigDict)):
      out.update(_flatten(dict(v.items()), name + "."))
    else:
      out[name] = v
  return out


def view_config(recipe: ml_collections.ConfigDict, view: int,
                num_views: int) -> ml_collections.ConfigDict:
  """The recipe of view `view`: `recipe` with `recipe.per_view[view]` applied.

  Raises:
    ValueError: if `per_view` is neither empty nor of length `num_views`.
    KeyError: if an override names a field the recipe does not have (typos fail).
  """
  per_view = tuple(recipe.get("per_view", ()))
  if per_view and len(per_view) != num_views:
    raise ValueError(f"recipe.per_view has {len(per_view)} entries but num_views="
                     f"{num_views}; give one override dict per view or none.")
  cfg = ml_collections.ConfigDict(copy.deepcopy(recipe.to_dict()))
  if per_view:
    _apply_overrides(cfg, per_view[view], f"per_view[{view}]")
  return cfg


def local_config(recipe: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The recipe of every local crop: `recipe` with `image_size`, `crop.scale`
  from `recipe.local` and `recipe.local.overrides` applied (not `per_view`,
  which lists the global views).

  Raises:
    ValueError: if the recipe has no local crops.
    KeyError: if an override names a field the recipe does not have.
  """
  spec = local_crops(recipe)
  if not spec.num:
    raise ValueError("recipe has no local crops (recipe.local.num is 0 or absent)")
  cfg = ml_collections.ConfigDict(copy.deepcopy(recipe.to_dict()))
  cfg.image_size = spec.image_size
  cfg.crop.scale = spec.scale
  _apply_overrides(cfg, recipe.local.get("overrides", {}), "local.overrides")
  return cfg


def _apply_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any],
                     what: str) -> None:
  items = dict(overrides.items()) if overrides else {}
  for name, value in _flatten(items).items():
    section, _, leaf = name.rpartition(".")
    node = cfg
    for part in section.split(".") if section else ():
      if part not in node:
        raise KeyError(f"{what} override {name!r}: no field {part!r}")
      node = node[part]
    if leaf not in node:
      raise KeyError(f"{what} override {name!r}: no field {leaf!r}")
    node[leaf] = value


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


def example_keys(key, images: jax.Array):
  """One key per example, sharded like `images` on the batch axis.

  Under an Explicit-axes mesh (`jssl.sharding`), vmap needs every mapped input
  sharded alike; keys split from one replicated key are unsharded, so reshard
  them onto the batch axis. The values do not change: jax's threefry is
  partitionable (`jax_threefry_partitionable`, default), so views do not depend
  on the sharding (tested: 8 devices == 1).
  """
  keys = jax.random.split(key, images.shape[0])
  sharding = getattr(jax.typeof(images), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if spec and spec[0] is not None:
    keys = jax.sharding.reshard(
        keys, jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(spec[0])))
  return keys


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


def eval_resize_shape(height: int, width: int, size: int,
                      crop_fraction: float = 1.0) -> Tuple[int, int]:
  """Shape after resizing the shorter side to `round(size / crop_fraction)`.

  The longer side scales proportionally, truncated (torchvision `Resize(int)`).
  """
  short = int(round(size / crop_fraction))
  if height <= width:
    return short, max(short, int(short * width / height))
  return max(short, int(short * height / width)), short


def eval_preprocess(images: jax.Array, *, size: int, mean: Sequence[float],
                    std: Sequence[float], crop_fraction: float = 1.0) -> jax.Array:
  """Deterministic inference transform: resize, centre crop, normalise.

  The standard evaluation protocol (SimCLR `preprocess_for_eval`; torchvision
  `Resize(size / crop_fraction)` + `CenterCrop(size)`, crop_fraction 0.875 on
  ImageNet, 1.0 on CIFAR): the shorter side is bilinearly resized (antialiased)
  to `round(size / crop_fraction)`, the central `size x size` window is kept,
  and channels are normalised with `(x / 255 - mean) / std`. Pure jnp, so it
  runs inside jit and ships with an exported encoder.

  Args:
    images: uint8 (or float in [0, 255]) `[B, H, W, C]`, or one `[H, W, C]`.
    size: output side.
    mean, std: per-channel statistics on the [0, 1] scale.
    crop_fraction: fraction of the resized shorter side kept by the crop.

  Returns:
    float32 `[B, size, size, C]` (or `[size, size, C]`).
  """
  single = images.ndim == 3
  x = augment.to_float(images[None] if single else images)
  b, h, w, c = x.shape
  rh, rw = eval_resize_shape(h, w, size, crop_fraction)
  if (rh, rw) != (h, w):
    x = jax.image.resize(x, (b, rh, rw, c), method="linear", antialias=True)
  top, left = (rh - size) // 2, (rw - size) // 2
  x = x[:, top:top + size, left:left + size, :]
  x = augment.normalize(x, mean=mean, std=std)
  return x[0] if single else x
