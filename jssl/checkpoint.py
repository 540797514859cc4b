"""Orbax checkpoints in the workdir: save every N steps, keep K, auto-resume.

Layout of a workdir:
  config.json          the config of the run (written once; checked on resume)
  checkpoints/<step>/  Orbax `StandardSave` of the whole TrainState (no pickle)
  corrupt/<step>/      a checkpoint that failed to restore, moved aside (kept,
                       never deleted, so nothing is lost)

Resuming refuses a workdir whose config.json differs from the new config in a
field that changes training (the error names the fields); fields that only
affect logging, evaluation cadence or I/O may change between runs.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

from jssl import errors

# Fields that may differ between the run that wrote a checkpoint and the run
# that resumes it (dotted paths, prefix match).
RESUMABLE_FIELDS = (
    "log_every_steps", "eval_every_steps", "checkpoint", "eval", "data.data_dir",
    "prefetch", "export", "mesh", "stop_at_step",
)


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


def write_or_check_config(workdir: str, config: Any) -> None:
  """Writes config.json, or checks it matches when the workdir has a run.

  Raises:
    ValueError: the workdir holds checkpoints of a different config. Nothing
      is overwritten; the message lists the differing fields.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  new = config_to_dict(config)
  if os.path.exists(path) and _has_checkpoints(workdir):
    with open(path) as f:
      old = json.load(f)
    diffs = config_differences(old, new)
    if diffs:
      raise errors.ConfigError(
          f"workdir {workdir} holds checkpoints of a different config; "
          "refusing to resume or overwrite it. Differences (saved -> new):\n  "
          + "\n  ".join(diffs)
          + "\nUse a new --workdir, or restore the saved values.")
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(new, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _has_checkpoints(workdir: str) -> bool:
  d = os.path.join(workdir, "checkpoints")
  return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` with fall-back on corruption."""

  def __init__(self, workdir: str, *, every_steps: int, keep: int = 3,
               use_async: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=max(int(every_steps), 1),
        enable_async_checkpointing=use_async, create=True)
    self._mngr = ocp.CheckpointManager(self.directory, options=self._options)

  def save(self, step: int, state: Any, *, force: bool = False) -> bool:
    return self._mngr.save(step, args=ocp.args.StandardSave(state), force=force)

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def restore_latest(self, abstract_state: Any) -> Any | None:
    """Restores the newest readable checkpoint, or returns None if none.

    A checkpoint that fails to restore is reported by step and path, moved to
    `workdir/corrupt/<step>` (kept for inspection) and the previous one is
    tried.
    """
    for step in sorted(self._mngr.all_steps(), reverse=True):
      try:
        state = self._mngr.restore(
            step, args=ocp.args.StandardRestore(abstract_state))
        logging.info("Restored checkpoint step %d from %s", step, self.directory)
        return state
      except Exception as e:  # pylint: disable=broad-except
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.workdir, "corrupt", str(step))
        msg = (f"checkpoint step {step} at {src} is unreadable "
               f"({type(e).__name__}: {str(e)[:300]}); moving it to {dst} and "
               "falling back to the previous checkpoint")
        logging.warning(msg)
        print("WARNING:", msg, flush=True)
        self._move_aside(src, dst)
    return None

  def _move_aside(self, src: str, dst: str) -> None:
    if jax.process_index() == 0 and os.path.exists(src):
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      if os.path.exists(dst):
        dst = dst + f".{len(os.listdir(os.path.dirname(dst)))}"
      shutil.move(src, dst)
    # The manager caches the step list; rebuild it after the directory changed.
    self._mngr.close()
    self._mngr = ocp.CheckpointManager(self.directory, options=self._options)

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()
