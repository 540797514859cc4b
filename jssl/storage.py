"""One path type for the workdir and exports: `etils.epath`, local or remote.

Every workdir read and write (metrics, TensorBoard events, plots, results,
the export, `jssl.load_encoder`, evaluation reports) goes through `path()`, so
local disk and `gs://`, `s3://`, `az://`, `hf://` URLs are the same code
(DESIGN.md rule 16). epath serves URLs with `tf.io.gfile` when TensorFlow is
installed (unless `EPATH_USE_TF=false`), else with fsspec, which needs the
scheme's filesystem package (`gcsfs` for `gs://`): `path()` checks that
package up front, so a missing one is one clear error naming what to install
instead of a traceback deep in a save (or, with `os.path`, a local directory
called `gs:`).

Object stores have no append and no rename (a "rename" is copy + delete), but
a whole-object write is atomic. Hence `AppendFile` keeps a small text file's
content and rewrites the object on flush (throttled), and `write_atomic`
writes remote objects in one go and local files via a temporary + rename.
"""
from __future__ import annotations

import importlib.util
import io
import os
import time
from typing import Union

from etils import epath

from jssl import errors

PathLike = Union[str, os.PathLike]

# URL scheme -> (fsspec package epath needs without TensorFlow, pip extra).
REMOTE_SCHEMES = {
    "gs": ("gcsfs", "pip install 'jssl[gcs]' (or pip install gcsfs)"),
    "s3": ("s3fs", "pip install s3fs"),
    "az": ("adlfs", "pip install adlfs"),
    "hf": ("huggingface_hub", "pip install huggingface_hub"),
}


def scheme(p: PathLike) -> str | None:
  """'gs' for 'gs://b/x', None for a local path."""
  s = os.fspath(p)
  return s.split("://", 1)[0] if "://" in s else None


def is_remote(p: PathLike) -> bool:
  return scheme(p) is not None


def _epath_uses_tf() -> bool:
  """Mirrors etils.epath's backend choice: tf.io.gfile for URLs when
  TensorFlow is importable and EPATH_USE_TF is not false."""
  if os.environ.get("EPATH_USE_TF", "").lower() in ("false", "no", "f", "0"):
    return False
  return importlib.util.find_spec("tensorflow") is not None


def path(p: PathLike, *, what: str = "workdir",
         error: type[errors.JsslError] = errors.WorkdirError) -> epath.Path:
  """`p` as an `epath.Path`, after checking its filesystem can be reached.

  Raises `error` (a jssl user error) naming `what`, the path and the fix when
  the URL scheme is not one epath serves or its fsspec package is missing.
  """
  s = os.fspath(p)
  sch = scheme(s)
  if sch is not None:
    if sch not in REMOTE_SCHEMES:
      raise error(
          f"{what} {s!r}: the {sch}:// scheme is not supported; use a local path "
          f"or one of {', '.join(k + '://' for k in REMOTE_SCHEMES)}")
    package, install = REMOTE_SCHEMES[sch]
    if not _epath_uses_tf() and importlib.util.find_spec(package) is None:
      raise error(
          f"{what} {s!r}: {sch}:// paths need the {package} package, which is "
          f"not installed: {install}")
  return epath.Path(s)


def display(p: PathLike) -> str:
  """A path as recorded in provenance: the URL itself, or an absolute local
  path (`os.path.abspath` of a URL would invent a local 'gs:' directory)."""
  s = os.fspath(p)
  return s if is_remote(s) else os.path.abspath(s)


def write_atomic(p: PathLike, data: Union[str, bytes]) -> None:
  """Writes a whole file so a reader never sees half of it.

  Remote: one object upload (atomic on object stores; a rename would be a
  copy). Local: a sibling temporary file renamed over the target.
  """
  p = epath.Path(p)
  if is_remote(p):
    _write(p, data)
    return
  tmp = p.parent / (p.name + ".tmp")
  _write(tmp, data)
  tmp.replace(p)


def _write(p: epath.Path, data: Union[str, bytes]) -> None:
  if isinstance(data, str):
    p.write_text(data)
  else:
    p.write_bytes(data)


def savefig(fig, p: PathLike, **kwargs) -> str:
  """matplotlib's `fig.savefig` to any epath path (rendered in memory)."""
  p = epath.Path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  fig.savefig(buf, format=p.suffix.lstrip(".") or "png", **kwargs)
  write_atomic(p, buf.getvalue())
  return os.fspath(p)


class AppendFile:
  """A file opened for appending, on any storage.

  Local: an ordinary append-mode file, flushed on every `flush()`. Remote
  (object stores cannot append): the content is kept in memory and the whole
  object rewritten on `flush()`, at most every `remote_flush_secs` seconds
  (and always on `close()`), so a long run does not upload its log at every
  step. Meant for small logs (metrics rows, scalar event files).
  """

  def __init__(self, p: PathLike, *, binary: bool = False,
               remote_flush_secs: float = 10.0):
    self.path = epath.Path(p)
    self._binary = binary
    self._every = remote_flush_secs
    self._last = 0.0
    self._dirty = False
    self._buf = None
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(self.path):
      empty = b"" if binary else ""
      old = ((self.path.read_bytes() if binary else self.path.read_text())
             if self.path.exists() else empty)
      self._buf = [old] if old else []
      self._f = None
    else:
      self._f = self.path.open("ab" if binary else "a")

  def write(self, data: Union[str, bytes]) -> None:
    if self._f is not None:
      self._f.write(data)
    else:
      self._buf.append(data)
      self._dirty = True

  def flush(self, force: bool = False) -> None:
    if self._f is not None:
      self._f.flush()
      return
    now = time.time()
    if self._dirty and (force or now - self._last >= self._every):
      joined = (b"" if self._binary else "").join(self._buf)
      self._buf = [joined]
      _write(self.path, joined)
      self._last, self._dirty = now, False

  def close(self) -> None:
    if self._f is not None:
      self._f.close()
      self._f = None
    elif self._buf is not None:
      self.flush(force=True)
      self._buf = None
