"""View recipes: the ml_collections configs the run books build.

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

A recipe knows no source and no device (DESIGN rule 15): the host crops
(`jssl.data.host.HostCrops.from_recipe`) and the device views
(`jssl.data.device_views.make_view_fn`) both read it. Pure config, no jax.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, NamedTuple, Sequence, Tuple

import ml_collections

# Fields a per-view override may touch (dotted), i.e. every leaf of a recipe.
_SECTIONS = ("crop", "flip", "color_jitter", "grayscale", "blur", "solarize")
# Per-view overrides of solo-learn's `asymmetric.yaml` at 32 px (BYOL-style
# two-view recipes on CIFAR): no blur on either view (BYOL's blur p 1.0 / 0.1
# is for 224 px), solarize on the second view only.
CIFAR_ASYMMETRIC_PER_VIEW = ({"blur.p": 0.0, "solarize.p": 0.0},
                             {"blur.p": 0.0, "solarize.p": 0.2})


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
