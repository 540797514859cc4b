"""Image-caption data for the dual encoders (CLIP, SigLIP, LiT; issue 15).

`build(config, per_process, eval_per_process, tokenize) -> CaptionData`:

Training batches (this process's rows of the global batch) are
`{'image': uint8 [b, H, W, C], 'text': int32 [b, K, L]}` (+ `'label': int32
[b]` when the data has class labels). Images are whole images; the step makes
the views on device (`jssl.data.device_views`, an `{'image'}` batch).
K = `config.data.captions_per_image` captions of the same image; L is the
tokenizer's context length (the tokenizer truncates long text, not this module).

Sources (`config.data.source`):
  'digits_captions'  scikit-learn's digits (`jssl.data.digits`, `data.kwargs`
                     as for 'digits') with generated captions
                     (`jssl.data.caption_sets`); held out: the digits' test split,
                     captioned and prompted with templates not used in training.
  'shapes_captions'  generated shapes and colours with compositional captions
                     (`jssl.data.caption_sets.shapes_captions`; `data.kwargs`:
                     size=32, num_train=2000, num_test=360, per_image=3,
                     two_fraction=0.5, seed=0); held out: single shapes of
                     (shape, colour) pairs never drawn in training, zero-shot
                     over all 18 'colour shape' names, templates not used in
                     training. Unlabelled in training.
  'folder'           `data.path` = DIR of images (.jpg .jpeg .png, any sizes,
                     any depth) and DIR/captions.jsonl, rows
                     `{"file": "<path relative to DIR>", "caption": "..."}`, one
                     or many rows per image. Unlabelled.
  'npz'              `data.path` = FILE.npz: `images` uint8 [N, H, W, C],
                     `captions` a str array [N] or [N, K] ('' entries of [N, K]
                     are padding: images may have different numbers of captions),
                     optional `labels` int [N] and `class_names` str [C].
                     Loaded with `allow_pickle=False`: captions must be a
                     numpy str array (`np.str_`), not objects.
  'tfds'             a prepared TFDS dataset `data.name` whose text is the
                     feature `data.text_feature` ('caption', or nested
                     'captions/text' as in coco_captions); `label` is used when
                     the dataset has a ClassLabel 'label'.

Image size. In-memory images (digits, npz) train at their stored size, as the
image-only 'digits' and 'npz' sources do. Folder and TFDS images have any size:
they are resized (shorter side) and centre-cropped on host to
`config.views.image_size` (CLIP's own training input, Radford et al. 2021
Sec. 2.5 "a random square crop from resized images"), and the device takes
the random resized crops from that. Held-out images are resized and
centre-cropped on host to `config.eval.image_size` with
`config.eval.crop_fraction` (`jssl.data.host.resize_center_crop`).

Training order, resume and processes: `jssl.data.sources.TrainOrder` (the
image sources' order: epoch e is a permutation seeded by `(seed, e)`, process p
keeps rows `[p * b, (p + 1) * b)` of each global batch), so a batch is a pure
function of `(seed, step, process)` and `train_batches(s)` continues an
uninterrupted run exactly. The K captions of example i at epoch e are a pure
function of `(seed, e, i)` (`caption_picks`): a seeded ranking of the image's
captions, of which the first K are taken; an image with n < K captions gives
all n and then repeats them in the same ranking (with replacement only then).
Folder images are decoded in worker threads (`config.data.workers`;
`jssl.data.loader`); an unreadable file is replaced by the next readable image
and its captions (`jssl.data.folder`), deterministically.
TFDS: the order rule of `jssl.data.tfds_source` (see `tfds_train_batches` here).

Held-out data (`HeldOut`) is held in host memory (images at the eval size):
fine for COCO-5k-sized evaluation sets, not for millions of images. Folder,
npz and TFDS take it from `data.eval_path` / `data.test_split`; without one the
held-out set is empty and `HeldOut.skipped` says why (zero-shot and retrieval
are then skipped).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import posixpath
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from etils import epath
import jax
import numpy as np

from jssl import errors
from jssl.data import folder as folder_lib
from jssl.data import host, loader
from jssl.data.sources import TrainOrder

Tokenize = Callable[[Sequence[str]], np.ndarray]
SOURCES = ("digits_captions", "shapes_captions", "folder", "npz", "tfds")
CAPTIONS_FILE = "captions.jsonl"


@dataclasses.dataclass
class HeldOut:
  """Images not seen in training, for zero-shot and retrieval; held in host memory."""
  images: np.ndarray                   # uint8 [N, s, s, C], s = config.eval.image_size
  labels: Optional[np.ndarray]         # int32 [N], or None (unlabelled)
  class_names: Optional[List[str]]     # zero-shot class names (index = label), or None
  captions: List[List[str]]            # per image (lists may be empty)
  templates: Optional[List[str]]       # zero-shot prompts with '{}'; None: the evaluator's
  skipped: str = ""                    # why there is no held-out set ('' = there is one)

  @property
  def num_examples(self) -> int:
    return int(self.images.shape[0])

  @classmethod
  def empty(cls, why: str, image_shape: Tuple[int, int, int]) -> "HeldOut":
    return cls(np.zeros((0, *image_shape), np.uint8), None, None, [], None, why)


@dataclasses.dataclass
class CaptionData:
  """What the image-text loop needs from the input pipeline."""
  train_batches: Callable[[int], Iterator[dict]]  # start_step -> this process's batches
  num_train: int                   # training images
  num_classes: Optional[int]       # training-label classes; None: unlabelled
  batch_spec: dict                 # global-batch jax.ShapeDtypeStruct pytree
  image_shape: tuple               # (H, W, C) of batch['image'] (training images)
  heldout: HeldOut
  captions_per_image: int = 1      # K of batch['text'] [b, K, L]

  @property
  def probes_skipped(self) -> str:
    """Why the end-of-run zero-shot / retrieval evaluations cannot run ('' =
    they run): the loop reads it as it reads `Datasets.probes_skipped`."""
    return self.heldout.skipped


# ----------------------------------------------------------------------------
# Which captions: a pure function of (seed, epoch, example).

def _splitmix(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser on uint64 (Steele et al. 2014), vectorised."""
  with np.errstate(over="ignore"):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash(*keys) -> np.ndarray:
  h = np.uint64(0x243F6A8885A308D3)
  for k in keys:
    h = _splitmix(h ^ np.asarray(k).astype(np.uint64))
  return h


def caption_picks(counts: np.ndarray, index: np.ndarray, *, seed: int, epoch: int,
                  k: int) -> np.ndarray:
  """int [b, k]: which of its `counts[r]` captions row r (example `index[r]`) uses.

  Example i's captions are ranked by a hash of `(seed, epoch, i, position)`;
  the first k are taken, cycling when it has fewer than k (repeats only then).
  """
  counts = np.asarray(counts, np.int64)
  if (counts < 1).any():
    raise ValueError(f"every example needs a caption; counts {counts.tolist()}")
  starts = np.cumsum(counts) - counts
  rows = np.repeat(np.arange(len(counts)), counts)
  pos = np.arange(int(counts.sum())) - starts[rows]
  keys = _hash(seed, epoch, np.asarray(index, np.int64)[rows], pos)
  ranked = pos[np.lexsort((keys, rows))]  # by row, then by key
  return ranked[starts[:, None] + np.arange(k)[None, :] % counts[:, None]]


def _tokens(tokenize: Tokenize, texts: Sequence[str], shape: Tuple[int, int]) -> np.ndarray:
  tokens = np.asarray(tokenize(list(texts)))
  if tokens.ndim != 2 or tokens.shape[0] != len(texts):
    raise ValueError(f"tokenize(texts) must return int [N, L] with N = {len(texts)} "
                     f"texts, got {tokens.dtype} {tokens.shape}")
  return tokens.astype(np.int32).reshape(*shape, tokens.shape[1])


# ----------------------------------------------------------------------------
# A random-access image-caption source (in memory or a folder).

class CaptionSource:
  """Images with their captions (and labels), by example index.

  `images` is uint8 `[N, H, W, C]` in memory, or a `jssl.data.folder`
  `FolderSource` whose files are decoded, resized and centre-cropped to
  `size` on host when read.
  """

  def __init__(self, images, captions: Sequence[Sequence[str]],
               labels: Optional[np.ndarray] = None, *, size: Optional[int] = None):
    self.images, self.size = images, size
    self.in_memory = isinstance(images, np.ndarray)
    if not self.in_memory and not size:
      raise ValueError("a folder source needs the size its images are cropped to")
    self.captions = [list(c) for c in captions]
    self.counts = np.array([len(c) for c in self.captions], np.int64)
    if len(self.captions) != self.num_examples:
      raise ValueError(f"{len(self.captions)} caption lists for {self.num_examples} images")
    self.labels = None if labels is None else np.asarray(labels, np.int32)

  @property
  def num_examples(self) -> int:
    return int(self.images.shape[0]) if self.in_memory else self.images.num_examples

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return tuple(self.images.shape[1:]) if self.in_memory else (self.size, self.size, 3)

  def _read(self, i: int) -> Tuple[np.ndarray, int]:
    """(uint8 [s, s, 3] image, the example actually read: see jssl.data.folder)."""
    return self.images.read(i, lambda im: host.resize_center_crop(im, self.size))

  def train_batches(self, spec: loader.LoaderSpec, *, k: int, tokenize: Tokenize,
                    start_step: int = 0) -> Iterator[dict]:
    """Infinite `{'image', 'text': int32 [b, k, L]}` (+ 'label'), from `start_step`
    (module docstring: order, captions, resume)."""
    index, count = spec.procs()
    b = spec.batch_size_per_process
    order = TrainOrder(self.num_examples, b, seed=spec.seed, process_index=index,
                       process_count=count)
    for step, image, j in self._images(order, spec, start_step):
      epoch = step // order.steps_per_epoch
      picks = caption_picks(self.counts[j], j, seed=spec.seed, epoch=epoch, k=k)
      texts = [self.captions[e][p] for e, row in zip(j, picks) for p in row]
      out = {"image": image, "text": _tokens(tokenize, texts, (b, k))}
      if self.labels is not None:
        out["label"] = self.labels[j]
      yield out

  def _images(self, order: TrainOrder, spec: loader.LoaderSpec, start_step: int):
    """(step, images [b, ...], example indices [b]) from `start_step` on."""
    if self.in_memory:
      step = start_step
      while True:
        idx = order.indices(step)
        yield step, self.images[idx], idx
        step += 1

    def example(step: int, i: int) -> dict:
      image, j = self._read(i)
      return {"image": image, "index": np.int64(j), "step": np.int64(step)}

    def tasks():
      step = start_step
      while True:
        yield [lambda s=step, i=int(i): example(s, i) for i in order.indices(step)]
        step += 1

    # pylint: disable-next=protected-access
    for batch in loader._threaded(tasks(), spec.workers, spec.ahead):
      yield int(batch["step"][0]), batch["image"], batch["index"]

  def eval_images(self, size: int, crop_fraction: float = 1.0,
                  workers: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, size, size, 3] resized + centre-cropped, the examples read)."""
    def one(i):
      if self.in_memory:
        return host.resize_center_crop(host.array_image(self.images[i]), size,
                                       crop_fraction), i
      return self.images.read(i, lambda im: host.resize_center_crop(im, size, crop_fraction))

    n = self.num_examples
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
      got = list(pool.map(one, range(n)))
    images = np.stack([g[0] for g in got]) if got else np.zeros((0, size, size, 3), np.uint8)
    return images, np.array([g[1] for g in got], np.int64)

  def heldout(self, size: int, crop_fraction: float = 1.0, *, workers: int = 0,
              class_names: Optional[Sequence[str]] = None,
              templates: Optional[Sequence[str]] = None) -> HeldOut:
    images, read = self.eval_images(size, crop_fraction, workers)
    labels = None if self.labels is None else self.labels[read]
    return HeldOut(images, labels, None if class_names is None else list(class_names),
                   [list(self.captions[j]) for j in read],
                   None if templates is None else list(templates))


# ----------------------------------------------------------------------------
# Loading: folder with captions.jsonl, npz.

def _row_error(where: str, line: int, what: str) -> errors.DataError:
  return errors.DataError(f"{where} line {line}: {what}")


def load_folder(path: str, *, field: str = "config.data.path"
                ) -> Tuple[folder_lib.FolderSource, List[List[str]]]:
  """(the images of DIR, their captions from DIR/captions.jsonl); see module doc.

  Errors (one line, naming the file and line): no captions.jsonl, a line that
  is not a JSON object with string 'file' and 'caption', an empty caption, a
  row naming a file that is not an image of DIR, an image without a caption,
  no rows at all.
  """
  root = epath.Path(path)
  if not root.exists():
    raise errors.DataNotFoundError(f"{field}={path!r}: no such directory")
  if not root.is_dir():
    raise errors.DataError(f"{field}={path!r} is a file; data.source='folder' needs a "
                           f"directory of images with a {CAPTIONS_FILE}")
  jsonl = root / CAPTIONS_FILE
  if not jsonl.exists():
    raise errors.DataNotFoundError(
        f"{field}={path!r} has no {CAPTIONS_FILE}; expected one row per caption: "
        '{"file": "<image path relative to the folder>", "caption": "<text>"}')
  # pylint: disable-next=protected-access
  files = folder_lib._images_under(root)
  rel = {posixpath.normpath(str(p.relative_to(root))): k for k, p in enumerate(files)}
  captions: List[List[str]] = [[] for _ in files]
  where, rows = str(jsonl), 0
  with jsonl.open("r") as f:
    for line, text in enumerate(f, start=1):
      if not text.strip():
        continue
      try:
        row = json.loads(text)
      except json.JSONDecodeError as e:
        raise _row_error(where, line, f"not valid JSON ({e.msg} at column {e.colno})") from None
      if (not isinstance(row, dict) or not isinstance(row.get("file"), str)
          or not isinstance(row.get("caption"), str)):
        raise _row_error(where, line, 'expected {"file": str, "caption": str}, got '
                         f"{text.strip()[:80]}")
      name = posixpath.normpath(row["file"].replace("\\", "/"))
      if name not in rel:
        raise _row_error(where, line, f"names {row['file']!r}, which is not a .jpg/.jpeg/"
                         f".png image in {path!r}")
      caption = row["caption"].strip()
      if not caption:
        raise _row_error(where, line, f"empty caption for {row['file']!r}")
      captions[rel[name]].append(caption)
      rows += 1
  if not rows:
    raise errors.DataError(f"{where} has no caption rows")
  missing = [str(files[k].relative_to(root)) for k, c in enumerate(captions) if not c]
  if missing:
    raise errors.DataError(f"{len(missing)} image(s) of {path!r} have no caption in "
                           f"{CAPTIONS_FILE}, e.g. {missing[:3]}; caption them or move them out")
  source = folder_lib.FolderSource(str(root), [str(p) for p in files], None, ())
  return source, captions


def _npz_strings(z, key: str, field: str, path: str) -> Optional[np.ndarray]:
  if key not in z.files:
    return None
  try:
    a = z[key]
  except ValueError:  # object arrays refuse to load without pickle
    raise errors.DataError(f"{field}={path!r}: {key!r} is an object array; save it as a "
                           f"numpy str array (np.asarray(list_of_str, dtype=str)), which "
                           f"loads without pickle") from None
  if a.dtype.kind == "S":
    a = np.char.decode(a, "utf-8")
  if a.dtype.kind != "U":
    raise errors.DataError(f"{field}={path!r}: {key!r} is {a.dtype}; expected a str array")
  return a


def load_npz(path: str, *, field: str = "config.data.path"):
  """(images uint8 [N, H, W, 3], labels or None, captions [N lists], class_names or None)."""
  p, caps, names = epath.Path(path), None, None
  if p.exists() and not p.is_dir():
    # The text arrays first: an object array would fail the image loader's
    # read of every array with a less helpful message.
    with p.open("rb") as f:
      try:
        z = np.load(f, allow_pickle=False)
      except (OSError, ValueError):
        z = None  # not an npz: folder.load_npz says so
      if hasattr(z, "files"):  # an npz (not None, not a bare .npy array)
        caps = _npz_strings(z, "captions", field, path)
        names = _npz_strings(z, "class_names", field, path)
  images, labels = folder_lib.load_npz(path, field=field)
  n = images.shape[0]
  if caps is None:
    raise errors.DataError(f"{field}={path!r} has no array 'captions'; expected a str "
                           f"array [N] or [N, K] with N = {n} (the images)")
  if caps.ndim not in (1, 2) or caps.shape[0] != n:
    raise errors.DataError(f"{field}={path!r}: 'captions' is {list(caps.shape)}; "
                           f"expected [N] or [N, K] with N = {n} (the images)")
  captions = []
  for i, row in enumerate(caps.reshape(n, -1)):
    kept = [c.strip() for c in row.tolist() if c.strip()]
    if not kept:
      what = "an empty caption" if caps.ndim == 1 else "no caption (all '' padding)"
      raise errors.DataError(f"{field}={path!r}: image {i} has {what}")
    captions.append(kept)
  if names is not None:
    names = [str(s) for s in names.reshape(-1)]
    if labels is not None and int(labels.max()) >= len(names):
      raise errors.DataError(f"{field}={path!r}: 'labels' go up to {int(labels.max())} but "
                             f"'class_names' has {len(names)} names")
  return images, labels, captions, names


# ----------------------------------------------------------------------------
# build

def captions_per_image(config) -> int:
  k = config.data.get("captions_per_image", 1)
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise errors.ConfigError(f"config.data.captions_per_image={k!r}: must be an integer >= 1")
  return k


def _spec(config, image_shape, k: int, length: int, labelled: bool) -> dict:
  b = config.batch_size
  spec = {"image": jax.ShapeDtypeStruct((b, *image_shape), np.uint8),
          "text": jax.ShapeDtypeStruct((b, k, length), np.int32)}
  if labelled:
    spec["label"] = jax.ShapeDtypeStruct((b,), np.int32)
  return spec


def build(config, per_process: int, eval_per_process: int, tokenize: Tokenize
          ) -> CaptionData:
  """Dispatches on `config.data.source` (module docstring).

  `eval_per_process` is unused: the held-out set is returned whole (`HeldOut`).
  """
  del eval_per_process
  dc = config.data
  k = captions_per_image(config)
  length = int(np.asarray(tokenize([""])).shape[-1])
  if dc.source == "tfds":
    return _tfds(config, per_process, k, tokenize, length)
  size, frac = int(config.eval.image_size), float(config.eval.get("crop_fraction", 1.0))
  workers = int(dc.get("workers", 0))
  if dc.source == "digits_captions":
    train, heldout, num_classes = _digits(config, size, frac)
  elif dc.source == "shapes_captions":
    train, heldout, num_classes = _shapes(dict(dc.get("kwargs", {})), size, frac)
  elif dc.source in ("folder", "npz"):
    train, heldout, num_classes = _own(config, size, frac, workers)
  else:
    raise errors.ConfigError(f"config.data.source={dc.source!r}: the image-text sources "
                             f"are {', '.join(SOURCES)}")
  if config.batch_size > train.num_examples:
    raise errors.ConfigError(f"config.batch_size={config.batch_size} > the "
                             f"{train.num_examples} training images")
  spec = loader.LoaderSpec(per_process, seed=config.seed, workers=workers)

  def train_batches(start_step):
    return train.train_batches(spec, k=k, tokenize=tokenize, start_step=start_step)

  return CaptionData(train_batches, train.num_examples, num_classes,
                     _spec(config, train.image_shape, k, length, train.labels is not None),
                     train.image_shape, heldout, k)


def digits_heldout(size: int, crop_fraction: float = 1.0) -> HeldOut:
  """The 'digits_captions' held-out set with digits loaded at `size` pixels
  (what `python -m jssl.evaluate --dataset=digits` scores a dual export on)."""
  return _digits_sets({"size": int(size)}, size, crop_fraction)[1]


def _digits(config, size: int, frac: float):
  return _digits_sets(dict(config.data.get("kwargs", {})), size, frac)


def _digits_sets(kwargs: dict, size: int, frac: float):
  from jssl.data import caption_sets, digits  # pylint: disable=import-outside-toplevel
  arrays = digits.load_arrays("digits", **kwargs)
  train = CaptionSource(arrays.train_images,
                        caption_sets.digits_captions(arrays.train_labels, arrays.train_images),
                        arrays.train_labels)
  test = CaptionSource(arrays.test_images,
                       caption_sets.digits_captions(arrays.test_labels, arrays.test_images,
                                                    heldout=True),
                       arrays.test_labels)
  heldout = test.heldout(size, frac, class_names=caption_sets.DIGIT_WORDS,
                         templates=caption_sets.ZERO_SHOT_TEMPLATES)
  return train, heldout, int(arrays.num_classes)


SHAPES_KWARGS = {"size": 32, "num_train": 2000, "num_test": 360, "per_image": 3,
                 "two_fraction": 0.5, "seed": 0}


def _shapes(kwargs: dict, size: int, frac: float):
  """'shapes_captions': unlabelled training images, labelled held-out singles."""
  from jssl.data import caption_sets  # pylint: disable=import-outside-toplevel
  unknown = sorted(set(kwargs) - set(SHAPES_KWARGS))
  if unknown:
    raise errors.ConfigError(f"config.data.kwargs has {unknown} that data.source="
                             f"'shapes_captions' does not take (it takes {sorted(SHAPES_KWARGS)})")
  kw = dict(SHAPES_KWARGS, **kwargs)
  common = dict(seed=kw["seed"], size=kw["size"], per_image=kw["per_image"])
  try:
    images, caps, _, _ = caption_sets.shapes_captions(
        kw["num_train"], two_fraction=kw["two_fraction"], **common)
    test_images, test_caps, test_labels, _ = caption_sets.shapes_captions(
        kw["num_test"], heldout=True, **common)
  except ValueError as e:
    raise errors.ConfigError(f"config.data.kwargs for 'shapes_captions': {e}") from None
  heldout = CaptionSource(test_images, test_caps, test_labels).heldout(
      size, frac, class_names=caption_sets.SHAPE_CLASSES,
      templates=caption_sets.SHAPES_ZERO_SHOT_TEMPLATES)
  return CaptionSource(images, caps), heldout, None


def _own_source(path: str, field: str, kind: str, size: int):
  if kind == "npz":
    images, labels, caps, names = load_npz(path, field=field)
    return CaptionSource(images, caps, labels), names
  images, caps = load_folder(path, field=field)
  return CaptionSource(images, caps, size=size), None


def _own(config, size: int, frac: float, workers: int):
  dc = config.data
  if not dc.get("path"):
    what = (f"a folder of images with a {CAPTIONS_FILE}" if dc.source == "folder" else
            "an .npz with 'images' uint8 [N, H, W, C] and 'captions' str [N] or [N, K]")
    raise errors.ConfigError(f"config.data.path is unset; data.source={dc.source!r} needs "
                             f"{what}")
  train, names = _own_source(dc.path, "config.data.path", dc.source,
                             int(config.views.image_size))
  num_classes = None
  if train.labels is not None:
    num_classes = len(names) if names else int(train.labels.max()) + 1
    if num_classes < 2:
      train.labels, num_classes = None, None  # one class is no label
  eval_path = dc.get("eval_path")
  if not eval_path:
    heldout = HeldOut.empty(
        "no held-out set: set config.data.eval_path to another captioned folder or .npz "
        "(images not used in training) for zero-shot and retrieval", (size, size, 3))
    return train, heldout, num_classes
  kind = "npz" if eval_path.lower().endswith(".npz") or (
      epath.Path(eval_path).exists() and not epath.Path(eval_path).is_dir()) else "folder"
  test, eval_names = _own_source(eval_path, "config.data.eval_path", kind, size)
  names = eval_names or names
  if test.labels is not None and names is None:
    test.labels = None  # labels without names cannot prompt zero-shot; retrieval only
  return train, test.heldout(size, frac, workers=workers, class_names=names), num_classes


# ----------------------------------------------------------------------------
# TFDS

_NO_CAPTION = "jssl: an example without a caption"


def _text_feature(features, path: str, name: str):
  """The TFDS feature at `path` ('caption', 'captions/text'), or a ConfigError."""
  f = features
  for part in path.split("/"):
    inner = getattr(f, "feature", f)  # a Sequence holds its feature
    try:
      f = inner[part]
    except (KeyError, TypeError):
      keys = list(inner.keys()) if hasattr(inner, "keys") else []
      raise errors.ConfigError(f"config.data.text_feature={path!r}: {name} has no "
                               f"feature {part!r} there (it has {keys})") from None
  return f


def _texts(ex, path: str):
  t = ex
  for part in path.split("/"):
    t = t[part]
  return t


def tfds_train_batches(name: str, split: str, *, data_dir: Optional[str], text_feature: str,
                       batch_size_per_process: int, image_size: int, k: int,
                       tokenize: Tokenize, labelled: bool = False, seed: int = 0,
                       start_step: int = 0, shuffle_buffer: int = 10_000,
                       process_index: Optional[int] = None,
                       process_count: Optional[int] = None) -> Iterator[dict]:
  """Infinite `{'image': uint8 [b, s, s, C], 'text': int32 [b, k, L]}` (+ 'label').

  The order is the image TFDS pipeline's: this process's shard
  (`tfds_source.process_shard`) through `tfds_source.resumable_order`, so a
  batch is a pure function of `(seed, step, process)` and resume is exact.
  Images are resized (shorter side) and centre-cropped to `image_size` (no
  random crop on host: the device makes the views). Example j of this
  process's shard picks its k captions at epoch e by a seeded ranking of
  `(seed, process, e, j)`, cycling when it has fewer than k, as
  `caption_picks` does for the other sources.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from jssl.data import tf_ops, tfds_source  # pylint: disable=import-outside-toplevel

  spec = tfds_source.TfdsTrainSpec(
      name=name, split=split, data_dir=data_dir, batch_size_per_process=batch_size_per_process,
      seed=seed, shuffle_buffer=shuffle_buffer, process_index=process_index,
      process_count=process_count)
  index, count = spec.procs()
  shard = tfds_source.process_shard(name, split, data_dir, process_index=index,
                                    process_count=count, skip_decoding=(spec.image_key,))
  decode = shard.builder.info.features[spec.image_key].decode_example
  b = batch_size_per_process
  steps_per_epoch = shard.lockstep_size // b
  if steps_per_epoch == 0:
    raise errors.ConfigError(f"{name}[{split}]: fewer examples per process than the batch "
                             f"of {b} per process")

  def fields(j, ex):  # j: the example's position in this shard
    out = {"image": ex[spec.image_key], "text": _texts(ex, text_feature), "index": j}
    if labelled:
      out["label"] = tf.cast(ex[spec.label_key], tf.int32)
    return out

  ds = tfds_source.resumable_order(
      shard.dataset.enumerate().map(fields), batch_size=b, steps_per_epoch=steps_per_epoch,
      seed=seed, start_step=start_step, shuffle_buffer=shuffle_buffer)
  base = tf.constant([tfds_source.stream_seed(seed, index), 0], tf.int64)
  per_epoch = steps_per_epoch * b

  def prepare(i, ex):  # i: the position in the uninterrupted stream
    texts = tf.reshape(ex["text"], [-1])
    n = tf.size(texts)
    check = tf.debugging.assert_positive(n, message=_NO_CAPTION)
    with tf.control_dependencies([check]):
      key = tf.random.experimental.stateless_fold_in(
          tf.random.experimental.stateless_fold_in(base, i // per_epoch), ex["index"])
      ranked = tf.argsort(tf.random.stateless_uniform([n], key))
    out = {"text": tf.gather(texts, tf.gather(ranked, tf.range(k) % n)),
           "image": tf_ops.to_uint8(tf_ops.resize_and_center_crop(decode(ex["image"]),
                                                                  size=image_size))}
    if labelled:
      out["label"] = ex["label"]
    return out

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(b, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  for batch in _tf_errors(tfds.as_numpy(ds), name, split, text_feature):
    texts = [t.decode("utf-8", "replace") for t in batch.pop("text").reshape(-1)]
    batch["text"] = _tokens(tokenize, texts, (b, k))
    yield batch


def _tf_errors(it, name: str, split: str, text_feature: str):
  """Re-raises tf.data's failed caption check as one DataError line."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    yield from it
  except tf.errors.InvalidArgumentError as e:
    if _NO_CAPTION not in str(e):
      raise
    raise errors.DataError(f"{name}[{split}]: an example has no text in feature "
                           f"{text_feature!r} (config.data.text_feature)") from None


def tfds_heldout(name: str, split: str, *, data_dir: Optional[str], text_feature: str,
                 image_size: int, crop_fraction: float = 1.0, labelled: bool = False,
                 class_names: Optional[Sequence[str]] = None) -> HeldOut:
  """The whole split at the eval size in host memory, with every caption of each
  image (the same on every process)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from jssl.data import tf_ops, tfds_source  # pylint: disable=import-outside-toplevel
  _, ds = tfds_source.read_split(name, split, data_dir)

  def prepare(ex):
    out = {"image": tf_ops.to_uint8(tf_ops.resize_and_center_crop(
        ex["image"], size=image_size, crop_fraction=crop_fraction)),
           "text": tf.reshape(_texts(ex, text_feature), [-1])}
    if labelled:
      out["label"] = tf.cast(ex["label"], tf.int32)
    return out

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
  images, labels, caps = [], [], []
  for ex in ds.as_numpy_iterator():
    images.append(ex["image"])
    caps.append([t.decode("utf-8", "replace") for t in ex["text"] if t.strip()])
    if labelled:
      labels.append(ex["label"])
  channels = images[0].shape[-1] if images else 3
  return HeldOut(np.stack(images) if images else np.zeros((0, image_size, image_size,
                                                           channels), np.uint8),
                 np.asarray(labels, np.int32) if labelled else None,
                 list(class_names) if class_names else None, caps, None)


def _tfds(config, per_process: int, k: int, tokenize: Tokenize, length: int) -> CaptionData:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from jssl.data import tfds_source  # pylint: disable=import-outside-toplevel
  dc = config.data
  text_feature = dc.get("text_feature") or "caption"
  try:
    builder = tfds.builder(dc.name, data_dir=dc.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.ConfigError(f"config.data.name={dc.name!r} is not a TFDS dataset: "
                             f"{str(e).splitlines()[0]}") from None
  # Not prepared: split_size below raises tfds_source's DatasetNotPreparedError.
  features = builder.info.features
  _text_feature(features, text_feature, dc.name)
  label = features["label"] if "label" in features else None
  labelled = isinstance(label, tfds.features.ClassLabel)
  num_classes = label.num_classes if labelled else None
  channels = features["image"].shape[-1] or 3
  train_split = dc.get("train_split") or "train"
  num_train = tfds_source.split_size(dc.name, train_split, dc.data_dir)
  if config.batch_size > num_train:
    raise errors.ConfigError(f"config.batch_size={config.batch_size} > the {num_train} "
                             f"examples of {dc.name}[{train_split}]")
  size = int(config.views.image_size)
  seed = config.seed

  def train_batches(start_step):
    return tfds_train_batches(dc.name, train_split, data_dir=dc.data_dir,
                              text_feature=text_feature, batch_size_per_process=per_process,
                              image_size=size, k=k, tokenize=tokenize, labelled=labelled,
                              seed=seed, start_step=start_step)

  eval_size = int(config.eval.image_size)
  test_split = dc.get("test_split")
  if test_split:
    heldout = tfds_heldout(dc.name, test_split, data_dir=dc.data_dir,
                           text_feature=text_feature, image_size=eval_size,
                           crop_fraction=float(config.eval.get("crop_fraction", 1.0)),
                           labelled=labelled, class_names=label.names if labelled else None)
  else:
    heldout = HeldOut.empty("no held-out set: config.data.test_split is unset",
                            (eval_size, eval_size, channels))
  image_shape = (size, size, channels)
  return CaptionData(train_batches, num_train, num_classes,
                     _spec(config, image_shape, k, length, labelled), image_shape, heldout, k)
