"""Process-0 metrics log: `metrics.jsonl`, TensorBoard, wandb, progress lines.

Every row goes to
  workdir/metrics.jsonl   one JSON object per line (`{"step": ..., name:
                          value, ...}`), so plots can be drawn from it alone
  workdir/tensorboard/    TensorBoard event files, one scalar per metric
                          (`config.logging.tensorboard`, on by default);
                          written with tensorboardX's protobufs, no TensorFlow
  wandb                   when `config.logging.wandb` (`pip install wandb`;
                          imported only then)
All through `jssl.storage`, so a `gs://` workdir works (there the files are
re-uploaded at most every 10 s and at `close()`: object stores cannot
append); other processes write nothing.

Resume: a run killed after logging step 7 but checkpointed at step 5 resumes
at 5 and logs 6 and 7 again. `start(5)` therefore first drops the rows with
step > 5 from metrics.jsonl (rewritten atomically), so each step appears
once and the rows are those of the steps the final state really went
through; the TensorBoard file gets a `SessionLog.START` event at step 6,
TensorBoard's own rule for discarding the older events of steps >= 6.
"""
from __future__ import annotations

import json
import math
import os
import socket
import struct
import sys
import time
import uuid
from typing import Any, Mapping, Optional

from absl import logging
import jax

from jssl import errors
from jssl import storage

DEFAULTS = {"tensorboard": True, "wandb": False, "wandb_project": "jssl",
            "wandb_entity": "", "wandb_name": "", "wandb_mode": ""}


class MetricsLog:
  """See the module docstring.

  Args:
    workdir: local path or URL (`jssl.storage.path`).
    logging: `config.logging` (fields as `DEFAULTS`; None: the defaults).
    run_config: the run's config as a dict, sent to wandb.

  Call `start(step)` once the step the run starts from is known (after
  restoring a checkpoint); `write` before `start` appends without dropping
  anything.
  """

  def __init__(self, workdir, *, logging: Optional[Mapping[str, Any]] = None,
               run_config: Optional[dict] = None):
    self._primary = jax.process_index() == 0
    self.workdir = storage.path(workdir)
    lc = dict(DEFAULTS)
    lc.update(_to_dict(logging))
    unknown = sorted(set(lc) - set(DEFAULTS))
    if unknown:
      raise errors.ConfigError(
          f"config.logging has unknown field(s) {unknown}; known: {sorted(DEFAULTS)}")
    self._lc, self._run_config = lc, run_config
    # Checked up front (before any compile): a missing package is a config error.
    self._wandb = _import_wandb() if lc["wandb"] and self._primary else None
    self._f = self._tb = self._run = None
    self._started = False

  def start(self, step: Optional[int]) -> None:
    """Opens the sinks for a run starting at `step` (0: fresh; None: keep
    every existing row). Rows with step > `step` are dropped first (see the
    module docstring for why)."""
    self._started = True
    if not self._primary:
      return
    path = self.workdir / "metrics.jsonl"
    if step is not None:
      drop_rows_after(path, step)
    self._f = storage.AppendFile(path)
    if self._lc["tensorboard"]:
      self._tb = _EventWriter(self.workdir / "tensorboard", start_step=step)
    if self._wandb is not None:
      self._run = _wandb_init(self._wandb, self.workdir, self._lc, self._run_config)

  def write(self, step: int, metrics: dict) -> None:
    if not self._started:
      self.start(None)
    if not self._f:
      return
    row = {"step": int(step), "time": round(time.time(), 3)}
    scalars = {}
    for k, v in metrics.items():
      v = float(v) if not isinstance(v, (str, bool)) and v is not None else v
      if isinstance(v, float):
        scalars[k] = v
      row[k] = None if isinstance(v, float) and not math.isfinite(v) else v
    self._f.write(json.dumps(row) + "\n")
    self._f.flush()
    if self._tb:
      self._tb.scalars(int(step), scalars, row["time"])
    if self._run is not None:
      self._run.log(scalars, step=int(step))

  def info(self, msg: str) -> None:
    """A progress line: printed by process 0 (stdout) and sent to absl."""
    logging.info(msg)
    if self._primary:
      print(msg, file=sys.stdout, flush=True)

  def flush(self) -> None:
    """Makes every row written so far readable (remote files upload lazily)."""
    if self._f:
      self._f.flush(force=True)
    if self._tb:
      self._tb.flush()

  def close(self) -> None:
    if self._f:
      self._f.close()
      self._f = None
    if self._tb:
      self._tb.close()
      self._tb = None
    if self._run is not None:
      self._run.finish()
      self._run = None


def drop_rows_after(path, step: int) -> int:
  """Rewrites `path` (atomically) without rows of step > `step`, and
  without a torn last line; returns how many rows were dropped."""
  path = storage.path(path)
  if not path.exists():
    return 0
  lines = path.read_text().splitlines()
  keep = []
  for line in lines:
    try:
      if int(json.loads(line)["step"]) <= step:
        keep.append(line)
    except (ValueError, KeyError, TypeError):  # torn by a kill mid-write
      pass
  dropped = len([l for l in lines if l.strip()]) - len(keep)
  if dropped:
    storage.write_atomic(path, "".join(l + "\n" for l in keep))
  return dropped


def _to_dict(c) -> dict:
  if c is None:
    return {}
  return c.to_dict() if hasattr(c, "to_dict") else dict(c)


def _import_wandb():
  try:
    import wandb  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise errors.ConfigError(
        "config.logging.wandb=True needs the wandb package, which is not "
        "installed: pip install wandb (or pip install 'jssl[wandb]')") from None
  return wandb


def _wandb_init(wandb, workdir, lc: dict, run_config: Optional[dict]):
  """One wandb run per workdir: its id is kept in `workdir/wandb_run_id`, so
  a resumed job continues the same wandb run (wandb ignores the steps it
  already has)."""
  id_file = workdir / "wandb_run_id"
  if id_file.exists():
    run_id = id_file.read_text().strip()
  else:
    run_id = uuid.uuid4().hex[:12]
    storage.write_atomic(id_file, run_id + "\n")
  kwargs = dict(project=lc["wandb_project"] or None, entity=lc["wandb_entity"] or None,
                name=lc["wandb_name"] or None, id=run_id, resume="allow",
                config=run_config)
  if lc["wandb_mode"]:
    kwargs["mode"] = lc["wandb_mode"]
  if not storage.is_remote(workdir):  # wandb's own files: beside the run
    kwargs["dir"] = os.fspath(workdir)
  return wandb.init(**kwargs)


class _EventWriter:
  """TensorBoard scalars in one event file (TFRecord framing of `Event`
  protos from tensorboardX; no TensorFlow), through `storage.AppendFile`.

  tensorboardX's own `SummaryWriter` opens local files with `open()` and
  gs:// with google-cloud-storage only, so the file is written here instead.
  """

  def __init__(self, logdir, *, start_step: Optional[int]):
    from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
    from tensorboardX.proto import summary_pb2  # pylint: disable=import-outside-toplevel
    from tensorboardX import record_writer  # pylint: disable=import-outside-toplevel
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    self._crc = record_writer.masked_crc32c
    now = time.time()
    # TensorBoard reads every *tfevents* file of a directory, in name order:
    # time first, then host, pid and microseconds to keep names unique.
    name = (f"events.out.tfevents.{int(now)}.{socket.gethostname()}."
            f"{os.getpid()}.{int(now * 1e6) % 1000000:06d}")
    self._f = storage.AppendFile(logdir / name, binary=True)
    self._event(event_pb2.Event(wall_time=now, file_version="brain.Event:2"))
    if start_step:
      # TensorBoard drops earlier events of steps >= a START event's step.
      self._event(event_pb2.Event(
          wall_time=now, step=start_step + 1,
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._f.flush()

  def _event(self, event) -> None:
    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    self._f.write(header + struct.pack("<I", self._crc(header)) + data
                  + struct.pack("<I", self._crc(data)))

  def scalars(self, step: int, values: dict, wall_time: float) -> None:
    s = self._summary_pb2.Summary(value=[
        self._summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
    self._event(self._event_pb2.Event(wall_time=wall_time, step=step, summary=s))
    self._f.flush()

  def flush(self) -> None:
    self._f.flush(force=True)

  def close(self) -> None:
    self._f.close()
