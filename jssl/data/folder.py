"""Your own images as sources: a folder of JPEG/PNG files, or an `.npz` file.

Both are random-access example sources (DESIGN.md rule 15): `open(i)` gives
example i's image as a PIL image (decoded lazily), `labels` its label or None.
They know no method and no view recipe.

Folder layouts (`config.data.path=DIR`; suffixes .jpg .jpeg .png, any case):
  DIR/<class>/**/*.jpg   labelled; labels are the sorted class-folder names'
                         positions (folders without images are ignored).
  DIR/*.jpg              unlabelled (also DIR/<one folder>/..., since one
                         class is no label).
Images may have any size and any channel count: grey, palette, CMYK and RGBA
are converted to RGB (alpha dropped), so mixed folders train.

Unreadable or truncated files are skipped, not fatal: such a file is found
when it is first decoded (scanning a million files up front would cost
minutes), logged once with the running count, and replaced by the next
readable example in index order. The replacement is deterministic, so resume
stays exact; training never stops mid-epoch for a bad file. A folder with no
readable image fails on its first batch.

npz (`config.data.path=FILE.npz`): `images` uint8 `[N, H, W, C]` (C = 1 or 3;
grey is repeated to RGB) and optional `labels` integer `[N]`.
"""
from __future__ import annotations

import dataclasses
import io
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
from etils import epath
import numpy as np
from PIL import Image

from jssl import errors
from jssl.data import host

SUFFIXES = (".jpg", ".jpeg", ".png")
# What PIL raises on a damaged, truncated or foreign file.
_BAD_IMAGE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _is_image(p: epath.Path) -> bool:
  return p.suffix.lower() in SUFFIXES and not p.name.startswith(".")


def _images_under(d: epath.Path) -> List[epath.Path]:
  # walk(), not rglob("**"): epath refuses recursive globs (RPC storms on GCS).
  return sorted((epath.Path(top) / f for top, _, files in d.walk() for f in files
                 if _is_image(epath.Path(f))), key=str)


@dataclasses.dataclass
class FolderSource:
  """The image files of a folder, by index; see the module docstring."""
  root: str
  files: List[str]
  labels: Optional[np.ndarray]          # int32 [N], or None (unlabelled)
  class_names: Tuple[str, ...]          # () when unlabelled
  _bad: Dict[int, str] = dataclasses.field(default_factory=dict, repr=False)
  _lock: Any = dataclasses.field(default_factory=threading.Lock, repr=False)

  @property
  def num_examples(self) -> int:
    return len(self.files)

  @property
  def skipped(self) -> int:
    """Files found unreadable so far (each replaced; see module docstring)."""
    return len(self._bad)

  def _open(self, i: int) -> Image.Image:
    name = self.files[i]
    if "://" in name:  # remote (gs://...): read the bytes through epath
      return Image.open(io.BytesIO(epath.Path(name).read_bytes()))
    return Image.open(name)

  def read(self, i: int, fn: Callable[[Image.Image], Any]) -> Tuple[Any, int]:
    """`(fn(image of example j), j)` for the first readable j >= i (cyclic)."""
    n = self.num_examples
    for k in range(n):
      j = (i + k) % n
      if j in self._bad:
        continue
      try:
        with self._open(j) as image:
          return fn(image), j
      except _BAD_IMAGE as e:
        self._mark_bad(j, e)
    raise errors.DataError(f"no readable image in {self.root!r}: all {n} files failed to "
                           f"decode (e.g. {self.files[i]!r}: {self._bad.get(i)})")

  def _mark_bad(self, j: int, e: BaseException) -> None:
    with self._lock:
      if j in self._bad:
        return
      self._bad[j] = f"{type(e).__name__}: {e}"
      count = len(self._bad)
    logging.warning("skipped unreadable image %r (%s); %d skipped so far, each replaced "
                    "by the next readable image", self.files[j], self._bad[j], count)

  def label(self, j: int) -> Optional[int]:
    return None if self.labels is None else int(self.labels[j])


def scan_folder(path: str, *, field: str = "config.data.path",
                class_names: Optional[Sequence[str]] = None) -> FolderSource:
  """Lists a folder's images (see module docstring) or raises a `jssl.errors` type.

  `class_names` maps class folders to labels by name (an eval folder uses the
  training folder's classes); a folder with a class not among them is an error.
  """
  root = epath.Path(path)
  if not root.exists():
    raise errors.DataNotFoundError(f"{field}={path!r}: no such directory")
  if not root.is_dir():
    raise errors.DataError(f"{field}={path!r} is a file; expected a directory of "
                           f"images (DIR/<class>/*.jpg or DIR/*.jpg), or an .npz with "
                           f"data.source='npz'")
  entries = sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=str)
  if not entries:
    raise errors.DataError(f"{field}={path!r} is empty; expected DIR/<class>/*.jpg "
                           f"(labelled) or DIR/*.jpg (unlabelled), .jpg .jpeg .png")
  loose = [p for p in entries if _is_image(p) and p.is_file()]
  classes = [(p.name, imgs) for p in entries if p.is_dir()
             for imgs in [_images_under(p)] if imgs]
  if loose and classes:
    raise errors.DataError(
        f"{field}={path!r} mixes images at its top level (e.g. {loose[0].name!r}) with "
        f"class folders (e.g. {classes[0][0]!r}); use one layout: DIR/<class>/*.jpg "
        f"(labelled) or DIR/*.jpg (unlabelled)")
  if not loose and not classes:
    others = [p.name for p in entries][:3]
    raise errors.DataError(f"{field}={path!r} holds no .jpg/.jpeg/.png images (found "
                           f"{others}, ...); expected DIR/<class>/*.jpg or DIR/*.jpg")
  if loose or len(classes) == 1 and class_names is None:
    files = loose or classes[0][1]
    return FolderSource(str(root), [str(p) for p in files], None, ())
  names = tuple(class_names) if class_names is not None else tuple(c for c, _ in classes)
  index = {c: k for k, c in enumerate(names)}
  unknown = [c for c, _ in classes if c not in index]
  if unknown:
    raise errors.DataError(f"{field}={path!r} has class folders {unknown[:5]} that the "
                           f"training data does not have (it has {list(names)[:10]})")
  files = [str(p) for _, imgs in classes for p in imgs]
  labels = np.concatenate([np.full(len(imgs), index[c], np.int32) for c, imgs in classes])
  return FolderSource(str(root), files, labels, names)


@dataclasses.dataclass
class ArrayImages:
  """In-memory uint8 `[N, H, W, 3]` images (and labels) with the same `read`."""
  images: np.ndarray
  labels: Optional[np.ndarray]
  skipped: int = 0

  @property
  def num_examples(self) -> int:
    return int(self.images.shape[0])

  def read(self, i: int, fn: Callable[[Image.Image], Any]) -> Tuple[Any, int]:
    return fn(host.array_image(self.images[i])), i

  def label(self, j: int) -> Optional[int]:
    return None if self.labels is None else int(self.labels[j])


def load_npz(path: str, *, field: str = "config.data.path"
             ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """`(images uint8 [N, H, W, 3], labels int32 [N] or None)` of an npz file."""
  p = epath.Path(path)
  if not p.exists():
    raise errors.DataNotFoundError(f"{field}={path!r}: no such file")
  if p.is_dir():
    raise errors.DataError(f"{field}={path!r} is a directory; data.source='npz' needs an "
                           f".npz file (use data.source='folder' for a folder)")
  try:
    with p.open("rb") as f:
      z = np.load(io.BytesIO(f.read()), allow_pickle=False)
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise errors.DataError(f"{field}={path!r} is not a readable .npz file "
                           f"({type(e).__name__}: {e})") from None
  if "images" not in arrays:
    raise errors.DataError(f"{field}={path!r} has no array 'images' (it has "
                           f"{sorted(arrays)}); expected images uint8 [N, H, W, C] and "
                           f"optional labels [N]")
  images = arrays["images"]
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise errors.DataError(f"{field}={path!r}: 'images' is {images.dtype} "
                           f"{list(images.shape)}; expected uint8 [N, H, W, C] with C = 1 "
                           f"or 3")
  if images.shape[0] == 0:
    raise errors.DataError(f"{field}={path!r}: 'images' holds no examples")
  if images.shape[-1] == 1:  # grey -> RGB, so RGB view recipes apply unchanged
    images = np.repeat(images, 3, axis=-1)
  labels = arrays.get("labels")
  if labels is not None:
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
      raise errors.DataError(f"{field}={path!r}: 'labels' is {labels.dtype} "
                             f"{list(labels.shape)}; expected integers [N] with N = "
                             f"{images.shape[0]} (the number of images)")
    if labels.min() < 0:
      raise errors.DataError(f"{field}={path!r}: 'labels' has negative values "
                             f"(min {labels.min()}); expected 0..num_classes-1")
    labels = labels.astype(np.int32)
  return images, labels
