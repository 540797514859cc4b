"""Integrity checks of jssl checkpoints (used by `jssl.checkpoint`).

* A manifest per committed step: size and SHA-256 of every file, written by
  process 0 once Orbax has committed the step, checked before restore. Orbax
  and TensorStore checksum only the zarr3 shard index (crc32c), not the array
  bytes, and zstd frames are written without content checksums, so bytes
  changed in place decode to other numbers: only a manifest catches that.
* The train-state layout of a checkpoint (Orbax's saved tree metadata) against
  the code's abstract state, leaf by leaf.
* Quiet failure reports: Orbax's ERROR tracebacks and asyncio's "Event loop is
  closed" unraisables around one failed read or write (hundreds to thousands
  of lines) are dropped; the Checkpointer reports the failure in one line.
  `JSSL_VERBOSE=1` keeps them.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging as py_logging
import os
import re
import sys
from typing import Any
import warnings

from etils import epath
import jax
import numpy as np

MANIFEST = "jssl_manifest.json"


def _key_name(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _leaves_by_path(tree) -> dict[str, Any]:
  return {"/".join(_key_name(k) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def layout_differences(saved, wanted) -> list[str]:
  """Leaf paths whose presence, shape or dtype differ (saved vs wanted)."""
  a, b = _leaves_by_path(saved), _leaves_by_path(wanted)
  out = [f"{p} is not in this code's train state" for p in sorted(set(a) - set(b))]
  out += [f"{p} is missing from the checkpoint" for p in sorted(set(b) - set(a))]
  for p in sorted(set(a) & set(b)):
    sa, sb = getattr(a[p], "shape", None), getattr(b[p], "shape", None)
    da, db = getattr(a[p], "dtype", None), getattr(b[p], "dtype", None)
    if sa is not None and sb is not None and tuple(sa) != tuple(sb):
      out.append(f"{p} has shape {tuple(sa)} in the checkpoint, {tuple(sb)} here")
    elif da is not None and db is not None and np.dtype(da) != np.dtype(db):
      out.append(f"{p} has dtype {np.dtype(da)} in the checkpoint, {np.dtype(db)} here")
  return out


def _digest(path: epath.Path) -> list:
  h, n = hashlib.sha256(), 0
  with path.open("rb") as f:
    while chunk := f.read(1 << 20):
      h.update(chunk)
      n += len(chunk)
  return [n, h.hexdigest()]


def _files_under(d: epath.Path, prefix: str = ""):
  """(relative name, path) of every file under `d`, recursively. A walk by
  `iterdir`, not `epath.Path.walk`: with the fsspec backend (gs:// without
  TensorFlow) walk() yields roots without their 'gs://' scheme, which then
  read as local paths."""
  for p in d.iterdir():
    if p.is_dir():
      yield from _files_under(p, f"{prefix}{p.name}/")
    else:
      yield f"{prefix}{p.name}", p


def _step_files(step_dir: epath.Path) -> dict[str, list]:
  """{relative path: [size, sha256]} of every file of a step but the manifest."""
  return dict(sorted((name, _digest(p)) for name, p in _files_under(step_dir)
                     if name != MANIFEST))


def write_manifest(step_dir: epath.Path) -> None:
  """Atomically (tmp + rename) writes the manifest of a committed step."""
  text = json.dumps({"format": 1, "algorithm": "sha256",
                     "files": _step_files(step_dir)}, indent=1, sort_keys=True)
  tmp = step_dir / (MANIFEST + ".tmp")
  tmp.write_text(text)
  tmp.replace(step_dir / MANIFEST)


def check_manifest(step_dir: epath.Path) -> str | None:
  """None if the step matches its manifest (or has none), else what differs."""
  path = step_dir / MANIFEST
  if not path.exists():
    return None
  try:
    files = json.loads(path.read_text())["files"]
  except (ValueError, KeyError, TypeError) as e:
    return f"its manifest is unreadable ({type(e).__name__})"
  for rel, (size, sha) in sorted(files.items()):
    p = step_dir / rel
    if not p.exists():
      return f"{rel} is missing"
    got_size, got_sha = _digest(p)
    if got_size != size:
      return f"{rel} has {got_size} bytes, {size} when saved"
    if got_sha != sha:
      return f"{rel} has a different SHA-256 than when saved"
  return None


def os_error(e: BaseException) -> str:
  """The OS error inside an Orbax/TensorStore exception, in one line."""
  while e is not None:
    if isinstance(e, OSError) and e.errno:
      return f"[Errno {e.errno} {errno.errorcode.get(e.errno, '?')}] {e.strerror}"
    m = re.search(r"([^:\"]+) \[os_error_code='(\d+)'\]", str(e))
    if m:
      code = int(m.group(2))
      return f"[Errno {code} {errno.errorcode.get(code, '?')}] {m.group(1).strip()}"
    e = e.__cause__ or e.__context__
  return ""


class _QuietOrbaxErrors(py_logging.Filter):
  """Drops Orbax's ERROR tracebacks of a failed save/restore (hundreds of
  lines): the Checkpointer reports each failure as one line. JSSL_VERBOSE=1
  keeps them."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return not (record.levelno >= py_logging.ERROR
                and f"{os.sep}orbax{os.sep}" in record.pathname
                and not os.environ.get("JSSL_VERBOSE"))


_QUIET = _QuietOrbaxErrors()


def _is_orbax_leftover(unraisable) -> bool:
  """An unraisable from the aftermath of a failed Orbax read or write."""
  if (isinstance(unraisable.exc_value, RuntimeError)
      and str(unraisable.exc_value) == "Event loop is closed"):
    return True
  code = getattr(unraisable.object, "cr_code", None)  # an abandoned coroutine
  return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


def _quiet_leftovers_hook(previous, verbose: bool):
  """A `sys.unraisablehook` that drops the leftovers of a failed save/restore.

  When one read or write fails, Orbax abandons its sibling coroutines and
  closes their event loop: TensorStore futures still in flight complete into
  the closed loop ("Event loop is closed", 2,754 lines around one truncated
  checkpoint, issue 14), and the abandoned coroutines, collected later (often
  at interpreter exit), fail in their cleanup. Each prints an unraisable
  traceback. Nothing awaits those results; the failure itself is reported once
  by the Checkpointer. Every other unraisable goes to `previous`.
  """
  def hook(unraisable):
    try:
      if not verbose and _is_orbax_leftover(unraisable):
        return
    except Exception:  # pylint: disable=broad-except  (interpreter shutdown)
      pass
    previous(unraisable)
  hook.jssl_quiet_leftovers = True
  return hook


def install_quiet_hooks() -> None:
  py_logging.getLogger("absl").addFilter(_QUIET)
  if not getattr(sys.unraisablehook, "jssl_quiet_leftovers", False):
    sys.unraisablehook = _quiet_leftovers_hook(
        sys.unraisablehook, verbose=bool(os.environ.get("JSSL_VERBOSE")))


class _QuietAsyncioLeftovers(py_logging.Filter):
  """asyncio's reports of futures and tasks a failed Orbax save abandoned."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    # "<Future class> exception was never retrieved": Future, Task, and
    # asyncio.gather's _GatheringFuture.
    msg = str(record.msg)
    return not ("exception was never retrieved" in msg
                or msg.startswith("Task was destroyed but it is pending"))


_QUIET_ASYNCIO = _QuietAsyncioLeftovers()


def quiet_abandoned_coroutines() -> None:
  """After a failed save/restore (only then), silences its aftermath: Orbax
  abandoned sibling coroutines and futures of the failed read/write, and
  asyncio reports each when collected ("Future exception was never
  retrieved", "coroutine ... was never awaited"), dozens of lines that say
  nothing the one CheckpointError line did not. JSSL_VERBOSE=1 keeps them."""
  if os.environ.get("JSSL_VERBOSE"):
    return
  py_logging.getLogger("asyncio").addFilter(_QUIET_ASYNCIO)
  warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited",
                          category=RuntimeWarning)
