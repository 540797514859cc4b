"""Offline caption sets, generated (no files): the image-text quickstart's data.

`digits_captions(labels, images, seed=...)` writes captions for scikit-learn's
handwritten digits (`jssl.data.digits`) from varied templates, with the class
spelled as a word ("seven") or a numeral ("7"). Two disjoint template sets:

* `TRAIN_TEMPLATES` (set A) write the training captions;
* `HELDOUT_TEMPLATES` (set B) write the held-out images' captions (retrieval)
  and, with '{}' for the class word, the zero-shot prompts
  (`ZERO_SHOT_TEMPLATES`), so zero-shot (Radford et al. 2021, Sec. 3.1) and
  retrieval are scored with wording the model never saw in training: the
  held-out scores measure transfer to new phrasing, not recall of training
  strings.

Zero-shot class names are the words ('zero' ... 'nine'), not the numerals:
training captions use both spellings, so the model has to tie both to the
image, and a held-out prompt "a scan of a handwritten {}" with the word is a
class description, not a copy of a training string.

Besides the class, a caption may name the stroke weight ("thick" / "thin":
the image's ink above / below its class's median in the same split), so that
captions say something about the image beyond its class and image->text
retrieval is more than class matching.

Everything is a pure function of `(seed, images, labels)`.

`shapes_captions(n, seed=..., heldout=...)` generates the second offline set,
shapes and colours with compositional captions (see its section below).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
               "nine")

# Slots: {n} the class (word or numeral), {w} the stroke weight ('thick'/'thin').
TRAIN_TEMPLATES = (
    "a handwritten {n}",
    "the digit {n}, drawn by hand",
    "a photo of the number {n}",
    "a {w} {n} written with a pen",
    "an {n} in someone's handwriting",  # 'an' is fixed below for consonants
    "a small grey picture of a {n}",
    "the number {n} written in {w} strokes",
    "a blurry scan of the digit {n}",
    "someone wrote a {n} here",
    "a {w} handwritten {n} on white paper",
    "digit: {n}",
    "a pixelated {n}",
)
HELDOUT_TEMPLATES = (
    "a scan of a handwritten {n}",
    "an image showing the numeral {n}",
    "a low resolution drawing of the figure {n}",
    "the written character {n}, made by a person",
    "a tiny picture of the symbol {n}",
    "this is a {w} {n}",
)
# Held-out prompts for zero-shot: set B with the class word in '{}' (no
# article right before it, so any class name reads correctly).
ZERO_SHOT_TEMPLATES = tuple(t.replace("{n}", "{}") for t in HELDOUT_TEMPLATES
                            if "{w}" not in t)


def _article(text: str) -> str:
  """'a eight' -> 'an eight', 'an seven' -> 'a seven' (the next word decides)."""
  words = text.split(" ")
  for k in range(len(words) - 1):
    if words[k].lower() in ("a", "an"):
      w = words[k + 1].lower()
      vowel = (w[:1] in "aeiu8" or (w[:1] == "o" and not w.startswith("one"))
               or w.startswith("11") or w.startswith("18"))
      words[k] = words[k][0] + ("n" if vowel else "")
  return " ".join(words)


def stroke_weights(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """bool [N]: True ('thick') where an image's ink exceeds its class's median."""
  ink = np.asarray(images, np.float64).reshape(len(images), -1).sum(axis=1)
  thick = np.zeros(len(images), bool)
  for c in np.unique(labels):
    m = labels == c
    thick[m] = ink[m] > np.median(ink[m])
  return thick


def fill(template: str, label: int, *, numeral: bool, thick: bool) -> str:
  """One caption: `template` with the class (word or numeral) and the weight."""
  n = str(int(label)) if numeral else DIGIT_WORDS[int(label)]
  return _article(template.format(n=n, w="thick" if thick else "thin"))


def digits_captions(labels: np.ndarray, images: np.ndarray, *, heldout: bool = False,
                    per_image: int = 5, seed: int = 0,
                    templates: Optional[Sequence[str]] = None) -> List[List[str]]:
  """`per_image` distinct captions per image: a seeded choice of templates
  (set A, or set B when `heldout`) and, per caption, of the spelling.

  Args:
    labels: int [N] digit classes.
    images: uint8 [N, ...] the images (their ink gives the stroke weight).
    heldout: use `HELDOUT_TEMPLATES` (set B) instead of `TRAIN_TEMPLATES`.
    per_image: captions per image (<= number of templates).
    seed: the choice's seed; image i's captions depend on (seed, i) only.
    templates: override the template set (tests).

  Returns:
    N lists of `per_image` strings.
  """
  labels = np.asarray(labels)
  templates = tuple(templates or (HELDOUT_TEMPLATES if heldout else TRAIN_TEMPLATES))
  if not 1 <= per_image <= len(templates):
    raise ValueError(f"per_image={per_image}: must be in [1, {len(templates)}] (the templates)")
  thick = stroke_weights(images, labels)
  out = []
  for i, (label, t) in enumerate(zip(labels, thick)):
    rng = np.random.default_rng([seed, int(heldout), i])
    chosen = rng.permutation(len(templates))[:per_image]
    numerals = rng.random(per_image) < 0.5
    out.append([fill(templates[j], label, numeral=bool(num), thick=bool(t))
                for j, num in zip(chosen, numerals)])
  return out


# ----------------------------------------------------------------------------
# shapes_captions: generated shapes with compositional captions.
#
# Images (`size` px RGB on black) show one shape, or two in the two halves of
# the image ("a small red circle above a large blue square"). What is tested
# is attribute binding (the "attribute binding is the test"): every
# shape and every colour occurs in training, but the (shape, colour) pairs of
# `HELDOUT_PAIRS` never do; the held-out images are single shapes of exactly
# those pairs, captioned and prompted with templates not used in training.
# Zero-shot classes are all 18 "colour shape" names (`SHAPE_CLASSES`), so
# naming the colour alone or the shape alone is not enough.

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255),
           "yellow": (255, 255, 0), "purple": (160, 0, 255), "white": (255, 255, 255)}
SIZES = ("small", "large")
_RADIUS = {"small": 0.12, "large": 0.22}  # of the image side
# (shape, colour) with (shape index + colour index) % 3 == 0: each colour once,
# each shape twice; red circle, yellow circle, blue square, white square,
# green triangle, purple triangle.
HELDOUT_PAIRS = tuple((s, c) for i, s in enumerate(SHAPES) for j, c in enumerate(COLOURS)
                      if (i + j) % 3 == 0)
TRAIN_PAIRS = tuple((s, c) for s in SHAPES for c in COLOURS if (s, c) not in HELDOUT_PAIRS)
SHAPE_CLASSES = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS)  # label = index
RELATIONS = {"above": "below", "below": "above", "to the left of": "to the right of",
             "to the right of": "to the left of"}

# {o}: one object ("small red circle" or "red circle"); {a} {r} {b}: two.
SHAPES_TRAIN_TEMPLATES = (
    "a {o}", "a picture of a {o}", "a {o} on a black background", "one {o}",
    "there is a {o} here", "a simple drawing of a {o}")
SHAPES_TRAIN_PAIR_TEMPLATES = (
    "a {a} {r} a {b}", "a picture of a {a} {r} a {b}", "two shapes: a {a} {r} a {b}",
    "there is a {a} {r} a {b}")
SHAPES_HELDOUT_TEMPLATES = (
    "an image of a {o}", "a rendering that shows one {o}", "the {o} alone",
    "a {o}, drawn by a computer")
SHAPES_ZERO_SHOT_TEMPLATES = tuple(t.replace("{o}", "{}") for t in SHAPES_HELDOUT_TEMPLATES)


def draw_shape(image: np.ndarray, shape: str, colour: str, size: str, cy: int, cx: int):
  """Paints one shape centred on pixel (cy, cx) of `image` uint8 [S, S, 3], in place."""
  s = image.shape[0]
  r = _RADIUS[size] * s
  y, x = np.mgrid[:s, :s].astype(np.float64)
  dy, dx = y - cy, x - cx
  if shape == "circle":
    mask = dy**2 + dx**2 <= r**2
  elif shape == "square":
    mask = (np.abs(dy) <= 0.85 * r) & (np.abs(dx) <= 0.85 * r)
  elif shape == "triangle":  # apex up, base at cy + r, as wide as it is tall
    mask = (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
  else:
    raise ValueError(f"shape {shape!r}: one of {SHAPES}")
  image[mask] = COLOURS[colour]


def _place(rng, lo: float, hi: float, r: float) -> int:
  """An integer centre in [lo + r, hi - r - 1] (the shape stays inside [lo, hi))."""
  a, b = int(np.ceil(lo + r)), int(np.floor(hi - r - 1))
  return int(rng.integers(a, max(a, b) + 1))


def _object_text(obj, with_size: bool) -> str:
  return f"{obj['size']} {obj['colour']} {obj['shape']}" if with_size else \
      f"{obj['colour']} {obj['shape']}"


def shapes_scene(rng, size: int, pairs, two: bool, sizes=SIZES) -> dict:
  """One scene of shapes drawn from `pairs` ((shape, colour)) and `sizes`:
  `objects` (shape, colour, size, cy, cx each) and, with two objects,
  `relation` of objects[0] to objects[1] ('above' or 'to the left of')."""
  def obj():
    shape, colour = pairs[int(rng.integers(len(pairs)))]
    return {"shape": shape, "colour": colour, "size": sizes[int(rng.integers(len(sizes)))]}

  if not two:
    o = obj()
    r = _RADIUS[o["size"]] * size
    o["cy"], o["cx"] = _place(rng, 0, size, r), _place(rng, 0, size, r)
    return {"objects": [o], "relation": None}
  a, b = obj(), obj()
  vertical = bool(rng.integers(2))
  half = size / 2
  for o, (lo, hi) in ((a, (0, half)), (b, (half, size))):
    r = _RADIUS[o["size"]] * size
    along, across = _place(rng, lo, hi, r), _place(rng, 0, size, r)
    o["cy"], o["cx"] = (along, across) if vertical else (across, along)
  return {"objects": [a, b], "relation": "above" if vertical else "to the left of"}


def shapes_caption(rng, scene: dict, template: str) -> str:
  """`template` filled from `scene`; the size is named or not (coin flip);
  a two-object scene is described from either object."""
  objs = scene["objects"]
  if len(objs) == 1:
    return template.format(o=_object_text(objs[0], bool(rng.integers(2))))
  a, b, rel = objs[0], objs[1], scene["relation"]
  if rng.integers(2):
    a, b, rel = b, a, RELATIONS[rel]
  return template.format(a=_object_text(a, bool(rng.integers(2))), r=rel,
                         b=_object_text(b, bool(rng.integers(2))))


def shapes_captions(n: int, *, seed: int = 0, size: int = 32, heldout: bool = False,
                    per_image: int = 3, two_fraction: float = 0.5):
  """(images uint8 [n, size, size, 3], n caption lists, labels int32 [n], scenes).

  Training (`heldout=False`): shapes of `TRAIN_PAIRS` only, a `two_fraction`
  of the images with two shapes; labels are the `SHAPE_CLASSES` index of
  single-shape images and -1 for two-shape ones. Held out: single shapes of
  `HELDOUT_PAIRS`, cycling through pair and size (balanced). Captions are
  `per_image` distinct templates of set A (training) or set B (held out).
  A pure function of the arguments (numpy drawing, no files).
  """
  if size < 16:
    raise ValueError(f"size={size}: shapes_captions needs images of at least 16 px")
  if not 0 <= two_fraction <= 1:
    raise ValueError(f"two_fraction={two_fraction}: must be in [0, 1]")
  single_t = SHAPES_HELDOUT_TEMPLATES if heldout else SHAPES_TRAIN_TEMPLATES
  limit = len(single_t) if heldout or two_fraction == 0 else min(
      len(single_t), len(SHAPES_TRAIN_PAIR_TEMPLATES))
  if not 1 <= per_image <= limit:
    raise ValueError(f"per_image={per_image}: must be in [1, {limit}] (the templates)")
  images = np.zeros((n, size, size, 3), np.uint8)
  labels = np.full(n, -1, np.int32)
  caps, scenes = [], []
  for i in range(n):
    rng = np.random.default_rng([seed, int(heldout), i])
    if heldout:
      pair = HELDOUT_PAIRS[i % len(HELDOUT_PAIRS)]
      scene = shapes_scene(rng, size, (pair,), two=False,
                           sizes=(SIZES[(i // len(HELDOUT_PAIRS)) % len(SIZES)],))
    else:
      scene = shapes_scene(rng, size, TRAIN_PAIRS, two=bool(rng.random() < two_fraction))
    for o in scene["objects"]:
      draw_shape(images[i], o["shape"], o["colour"], o["size"], o["cy"], o["cx"])
    if len(scene["objects"]) == 1:
      o = scene["objects"][0]
      labels[i] = SHAPE_CLASSES.index(f"{o['colour']} {o['shape']}")
      templates = single_t
    else:
      templates = SHAPES_TRAIN_PAIR_TEMPLATES
    chosen = rng.permutation(len(templates))[:per_image]
    caps.append([shapes_caption(rng, scene, templates[j]) for j in chosen])
    scenes.append(scene)
  return images, caps, labels, scenes
