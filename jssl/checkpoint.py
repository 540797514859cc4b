"""Orbax checkpoints in the workdir: save every N steps, keep K, auto-resume.

Layout of a workdir:
  config.json          the config of the run (written once; checked whenever
                       it exists, checkpoints or not)
  jssl.lock            held while a run lives (`jssl.workdir`)
  checkpoints/<step>/  Orbax `StandardSave` of the whole TrainState (no pickle),
                       plus `jssl_manifest.json`: size and SHA-256 of every
                       file of the step, written once Orbax has committed it
  corrupt/<step>/      a checkpoint that is damaged or failed to restore, moved
                       aside (kept, never deleted, so nothing is lost)

What each fault does (the README table "fault -> what jssl does -> test"):
  * Content damaged in place (bytes changed, file truncated or missing): the
    manifest check fails before Orbax reads anything; one WARNING line, the
    step is moved to corrupt/<step> and the previous checkpoint is used.
  * No manifest (the run was killed between Orbax's commit and the manifest
    write, or the checkpoint predates manifests): Orbax lists only committed
    steps, so the step is trusted as Orbax committed it (INFO line); a read
    error still moves it aside.
  * A different train-state layout (code changed: a leaf more or less, another
    shape or dtype): CheckpointError naming the step and the differing leaf
    paths; nothing is moved.
  * `*.orbax-checkpoint-tmp*` left by a killed save: removed at start by
    process 0, one WARNING line.
  * A save fails (disk full, storage unwritable; sync or async): the partial
    save is removed and `raise_if_save_failed()` (call it every step; `save`,
    `wait` and `close` call it too) raises CheckpointError naming the step, the
    directory and the OS error. Older checkpoints are untouched: Orbax rotates
    old steps only after a save commits.

Multi-process: process 0 writes manifests and checks them at restore; its
verdict is broadcast so every process restores the same step.

Cost: the manifest reads each checkpoint back once after it commits (in a
background thread for async saves) and once more before it is restored
(process 0), i.e. one extra read of the checkpoint per save and per resume.
On object stores (gs://) Orbax writes a step in place and marks it committed
with commit_success.txt instead of renaming a tmp directory: an interrupted
save there is ignored by Orbax rather than swept at start.

Resuming refuses a workdir whose config.json differs from the new config in a
field that changes training (the error names the fields); fields that only
affect logging, evaluation cadence or I/O may change between runs.
"""
from __future__ import annotations

import errno
import json
import threading
import time
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from jssl.checkpoint_checks import MANIFEST, check_manifest, install_quiet_hooks
from jssl.checkpoint_checks import layout_differences, os_error, write_manifest
from jssl.checkpoint_checks import quiet_abandoned_coroutines
from jssl.errors import CheckpointError, ConfigError

# Fields that may differ between the run that wrote a checkpoint and the run
# that resumes it (dotted paths, prefix match).
RESUMABLE_FIELDS = (
    "log_every_steps", "eval_every_steps", "checkpoint", "eval", "data.data_dir",
    "prefetch", "export", "mesh", "stop_at_step", "logging", "data.workers",
    "data.eval_path",
)
TMP_MARK = ".orbax-checkpoint-tmp"


def config_to_dict(config: Any) -> dict:
  return json.loads(config.to_json_best_effort()) if hasattr(
      config, "to_json_best_effort") else dict(config)


def _flatten(d: Any, prefix: str = "") -> dict:
  out = {}
  if isinstance(d, dict):
    for k, v in d.items():
      out.update(_flatten(v, f"{prefix}{k}."))
  else:
    out[prefix[:-1]] = d
  return out


def config_differences(old: dict, new: dict) -> list[str]:
  """Dotted names of training-relevant fields that differ."""
  fo, fn = _flatten(old), _flatten(new)
  diffs = []
  for k in sorted(set(fo) | set(fn)):
    if any(k == f or k.startswith(f + ".") for f in RESUMABLE_FIELDS):
      continue
    if fo.get(k, "<absent>") != fn.get(k, "<absent>"):
      diffs.append(f"{k}: {fo.get(k, '<absent>')!r} -> {fn.get(k, '<absent>')!r}")
  return diffs


def write_or_check_config(workdir, config: Any) -> None:
  """Writes config.json, or checks it matches when the workdir has one.

  Checked whenever config.json exists, not only when checkpoints do: a workdir
  whose checkpoints were deleted still holds that run's export, results and
  metrics, which a different config would overwrite or mix.

  Raises:
    ConfigError (a ValueError): the workdir holds a run of a different config.
      Nothing is overwritten; the message lists the differing fields.
  """
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "config.json"
  new = config_to_dict(config)
  if path.exists():
    old = json.loads(path.read_text())
    diffs = config_differences(old, new)
    if diffs:
      raise ConfigError(
          f"workdir {workdir} holds a run of a different config ({path}); "
          "refusing to resume or overwrite it. Differences (saved -> new):\n  "
          + "\n  ".join(diffs)
          + f"\nUse a new --workdir, or restore the saved values (or delete {path} "
          "if nothing of that run is worth keeping: its export, results and "
          "metrics would be overwritten).")
  if jax.process_index() == 0:
    tmp = workdir / "config.json.tmp"
    tmp.write_text(json.dumps(new, indent=2, sort_keys=True))
    tmp.replace(path)


def _process0_value(value: int) -> int:
  """Process 0's `value` on every process (a collective when multi-process)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _all_ok(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


class Checkpointer:
  """`ocp.CheckpointManager` plus integrity manifests, layout checks, stale
  partial-save cleanup and one-line save errors (see module docstring)."""

  def __init__(self, workdir, *, every_steps: int, keep: int = 3,
               use_async: bool = True):
    self.workdir = epath.Path(workdir)
    self.directory = self.workdir / "checkpoints"
    self._use_async = use_async
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=max(int(every_steps), 1),
        enable_async_checkpointing=use_async, create=True)
    install_quiet_hooks()
    if jax.process_index() == 0:
      self._remove_stale_tmp()
    self._mngr = self._new_manager()
    self._thread: threading.Thread | None = None
    self._failure: tuple[int, BaseException] | None = None
    self._dead = False
    self._removed = False

  def _new_manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(self.directory, options=self._options,
                                 item_handlers=ocp.StandardCheckpointHandler())

  def _remove_stale_tmp(self) -> None:
    if not self.directory.exists():
      return
    stale = sorted(p for p in self.directory.iterdir() if TMP_MARK in p.name)
    for p in stale:
      p.rmtree() if p.is_dir() else p.unlink(missing_ok=True)
    if stale:
      logging.warning("removed %d partial checkpoint(s) left by an interrupted "
                      "save in %s: %s", len(stale), self.directory,
                      ", ".join(p.name for p in stale))

  # --- saving -----------------------------------------------------------
  def save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Starts a save of `step` (async unless use_async=False).

    Raises:
      CheckpointError: this or an earlier save failed (see module docstring).
    """
    self.wait()
    try:
      saved = self._mngr.save(step, args=ocp.args.StandardSave(state), force=force)
    except Exception as e:  # pylint: disable=broad-except
      self._failed(step, e)
      saved = False
    if saved:
      if self._use_async:
        self._thread = threading.Thread(target=self._finish, args=(step,),
                                        name="jssl-checkpoint-manifest",
                                        daemon=True)
        self._thread.start()
      else:
        self._finish(step)
    self.raise_if_save_failed()
    return bool(saved)

  def _finish(self, step: int) -> None:
    """Waits for Orbax's commit of `step`, then writes its manifest."""
    try:
      self._mngr.wait_until_finished()
      if jax.process_index() == 0:
        write_manifest(self.directory / str(step))
    except Exception as e:  # pylint: disable=broad-except
      self._failed(step, e)

  def _failed(self, step: int, e: BaseException) -> None:
    self._failure = (step, e)
    quiet_abandoned_coroutines()
    # The partial save must not keep the disk full. Orbax may still be writing
    # into it: raise_if_save_failed removes it again, for good, after closing.
    self._remove_partial(step, quiet=True)

  def _remove_partial(self, step: int, *, quiet: bool = False) -> bool:
    """Removes step's partial save; True when nothing of it is left."""
    if jax.process_index() != 0:
      return True
    for attempt in range(8):
      try:
        for p in self.directory.iterdir():
          if p.name.startswith(f"{step}{TMP_MARK}") or (
              p.name == str(step) and not (p / "commit_success.txt").exists()):
            p.rmtree()
        return True
      except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTEMPTY):
          if not quiet:
            logging.warning("could not remove the partial checkpoint %d: %s", step, e)
          return False
        # An abandoned Orbax writer deleted (a lock) or created (step
        # metadata) a file while we removed the tree: go again over what is
        # left once it has settled.
        time.sleep(0.2 * (attempt + 1))
    if not quiet:
      logging.warning("could not remove the partial checkpoint %d: files kept "
                      "changing under it", step)
    return False

  def raise_if_save_failed(self) -> None:
    """Raises CheckpointError if a save failed; cheap, call it every step."""
    if self._failure is None:
      return
    step, e = self._failure
    if not self._dead:
      # Orbax's background writers (step metadata) may still be writing into
      # the partial save: closing the manager waits for them, then the
      # removal is final. The Checkpointer cannot save after this.
      self._dead = True
      try:
        self._mngr.close()
      except Exception:  # pylint: disable=broad-except
        pass  # the same failure, already recorded
      self._removed = self._remove_partial(step)
    good = sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit())
    good = [s for s in good if s != step] or good
    raise CheckpointError(
        f"checkpoint step {step} could not be written to {self.directory}: "
        f"{os_error(e) or (str(e).splitlines() or [type(e).__name__])[0][:300]}. "
        + ("The partial save was removed; " if self._removed else
           "The partial save could not be removed yet (a restart removes it); ")
        + (f"the last good checkpoint is step {good[-1]}" if good else
           "there is no earlier checkpoint")
        + ". Free space or fix the storage, then re-run the same command to resume.")

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  # --- restoring --------------------------------------------------------
  def restore_latest(self, abstract_state: Any) -> Any | None:
    """Restores the newest sound checkpoint, or returns None if none.

    A damaged or unreadable checkpoint is reported in one WARNING line, moved
    to `workdir/corrupt/<step>` and the previous one is tried; a checkpoint of
    another train-state layout raises CheckpointError (nothing moved).
    """
    for step in sorted(self._mngr.all_steps(), reverse=True):
      step_dir = self.directory / str(step)
      problem, has_manifest = None, True
      if jax.process_index() == 0:
        problem = check_manifest(step_dir)
        has_manifest = (step_dir / MANIFEST).exists()
      if _process0_value(problem is not None):
        self._set_aside(step, problem or "process 0 found it damaged")
        continue
      if not has_manifest:
        logging.info("checkpoint step %d has no %s (the run stopped before it "
                     "was written): trusting Orbax's commit", step, MANIFEST)
      self._check_layout(step, abstract_state)
      try:
        state, err = self._mngr.restore(
            step, args=ocp.args.StandardRestore(abstract_state)), None
      except Exception as e:  # pylint: disable=broad-except
        state, err = None, e
        quiet_abandoned_coroutines()
      if _all_ok(err is None):
        logging.info("Restored checkpoint step %d from %s", step, self.directory)
        return state
      self._set_aside(step, f"unreadable ({type(err).__name__}: "
                      f"{(str(err).splitlines() or [''])[0][:200]})" if err else
                      "unreadable on another process")
    return None

  def _check_layout(self, step: int, abstract_state: Any) -> None:
    try:
      saved = self._mngr.item_metadata(step)
      saved = getattr(saved, "tree", saved)
    except Exception:  # pylint: disable=broad-except
      return  # unreadable metadata: the restore fails and moves it aside
    diffs = layout_differences(saved, abstract_state) if saved is not None else []
    if diffs:
      more = f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} has a different "
          f"train-state layout than this code: {'; '.join(diffs[:5])}{more}. "
          "It is not damaged and was left in place. To start fresh, use a new "
          "--workdir; to continue this run, use the jssl version that wrote it "
          "(or convert the checkpoint to the new layout).")

  def _set_aside(self, step: int, problem: str) -> None:
    src = self.directory / str(step)
    dst = self.workdir / "corrupt" / str(step)
    if jax.process_index() == 0:
      if dst.exists():
        dst = dst.parent / f"{step}.{len(list(dst.parent.iterdir()))}"
      logging.warning("checkpoint step %d at %s is damaged: %s; moved it to %s "
                      "and falling back to the previous checkpoint",
                      step, src, problem, dst)
      if src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      multihost_utils.sync_global_devices(f"jssl_set_aside_{step}")
    # The manager caches the step list; rebuild it after the directory changed.
    self._mngr.close()
    self._mngr = self._new_manager()

  def wait(self) -> None:
    """Waits for the pending save and its manifest; raises if it failed."""
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    self.raise_if_save_failed()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      if not self._dead:
        self._mngr.close()
      elif self._failure is not None:
        # Orbax's abandoned writers can recreate files of the failed save
        # after raise_if_save_failed removed it: remove what is left, last.
        self._remove_partial(self._failure[0], quiet=True)
