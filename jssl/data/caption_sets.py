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
