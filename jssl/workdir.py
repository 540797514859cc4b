"""One run per workdir: a lock file held while a run lives.

Two runs writing one workdir interleave checkpoints, `config.json` and the
export, and each can end with exit code 0 (issue 14). So `train.run` holds
`workdir/jssl.lock` for its whole life:

  {"host": ..., "pid": ..., "started": <unix time>, "heartbeat": <unix time>,
   "token": <random>}

A daemon thread rewrites `heartbeat` every `HEARTBEAT_SECONDS` (30 s). A second
run finding the lock is refused at once with a `WorkdirError` naming the holder
(host, pid, since when), unless the lock is **stale**:

  * the holder is on this host and its pid no longer exists (a run killed
    with `kill -9` or by the OOM killer): taken over at once, or
  * its heartbeat is older than `STALE_SECONDS` (10 minutes; a holder on
    another host that died without releasing, e.g. a preempted VM).

A stale lock is taken over with a WARNING line naming the old holder. To take
over a lock of a dead run on another host sooner, delete `workdir/jssl.lock`
(only when you are sure that run is gone).

Multi-process jobs: only process 0 takes the lock; the outcome is broadcast so
that every process raises the same `WorkdirError` instead of waiting forever in
the first collective.

Paths go through `etils.epath`, so `gs://` workdirs work. Local disks create the
lock atomically (`O_EXCL`); object stores have no exclusive create, so there
the lock is written, then read back to check this run's token won: two runs
started within the same second on a `gs://` workdir can both pass (a race
window of one write + read), which is still far narrower than no lock.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from typing import Iterator

from absl import logging
from etils import epath

from jssl.errors import WorkdirError

LOCK_NAME = "jssl.lock"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 600.0


def _is_local(path: epath.Path) -> bool:
  return "://" not in str(path)


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


def _fmt_time(t: float) -> str:
  return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def describe(holder: dict) -> str:
  """'host h, pid 12, since 2026-... UTC (heartbeat 5 s ago)'."""
  age = time.time() - float(holder.get("heartbeat", 0))
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since "
          f"{_fmt_time(float(holder.get('started', 0)))} (heartbeat {age:.0f} s ago)")


def stale_reason(holder: dict, *, now: float | None = None) -> str | None:
  """Why a lock is stale (see module docstring), or None if it is live."""
  now = time.time() if now is None else now
  if holder.get("host") == socket.gethostname():
    try:
      pid = int(holder.get("pid"))
    except (TypeError, ValueError):
      return "its pid is unreadable"
    if pid != os.getpid() and not _pid_alive(pid):
      return f"pid {pid} no longer runs on this host"
  try:
    age = now - float(holder.get("heartbeat"))
  except (TypeError, ValueError):
    return "its heartbeat is unreadable"
  if age > STALE_SECONDS:
    return f"its heartbeat is {age / 60:.0f} min old (> {STALE_SECONDS / 60:.0f} min)"
  return None


class WorkdirLock:
  """The lock file of one workdir (single process; see `hold` for jobs)."""

  def __init__(self, workdir):
    self.workdir = epath.Path(workdir)
    self.path = self.workdir / LOCK_NAME
    self._me = {"host": socket.gethostname(), "pid": os.getpid(),
                "started": time.time(), "token": secrets.token_hex(8)}
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _record(self) -> str:
    return json.dumps({**self._me, "heartbeat": time.time()})

  def read(self) -> dict | None:
    """The holder's record; None if there is no lock. A torn record (a run
    killed mid-write) reads as {} and is stale."""
    try:
      text = self.path.read_text()
    except FileNotFoundError:
      return None
    try:
      holder = json.loads(text)
      return holder if isinstance(holder, dict) else {}
    except ValueError:
      return {}

  def _create(self) -> bool:
    """Creates the lock if absent; True if this run now holds it."""
    text = self._record()
    if _is_local(self.path):
      try:
        fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, "w") as f:
        f.write(text)
      return True
    if self.path.exists():  # object store: no exclusive create (see docstring)
      return False
    self.path.write_text(text)
    return (self.read() or {}).get("token") == self._me["token"]

  def acquire(self) -> None:
    """Takes the lock or raises WorkdirError naming the live holder."""
    self.workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a stale lock taken over by another run meanwhile
      if self._create():
        self._start_heartbeat()
        return
      holder = self.read()
      if holder is None:  # released between our create and read: retry
        continue
      reason = stale_reason(holder)
      if reason is None:
        raise WorkdirError(
            f"workdir {self.workdir} is in use by another run ({describe(holder)}); "
            f"lock file {self.path}. Wait for it to finish, stop it, or use "
            "another --workdir. If that run is gone (it died on another host), "
            f"delete {self.path}.")
      # Re-read right before removing: narrows the window in which two runs
      # that both saw the stale lock remove each other's fresh one.
      if self.read() == holder:
        self.path.unlink(missing_ok=True)
        logging.warning("workdir %s: took over a stale lock (%s: %s)",
                        self.workdir, describe(holder), reason)
    raise WorkdirError(f"workdir {self.workdir}: could not take the lock {self.path} "
                       "(other runs keep taking it); use another --workdir")

  def _start_heartbeat(self) -> None:
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, name="jssl-workdir-lock",
                                    daemon=True)
    self._thread.start()

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        holder = self.read()
        if (holder or {}).get("token") != self._me["token"]:
          logging.warning("workdir %s: the lock %s is no longer this run's (%s)",
                          self.workdir, self.path,
                          describe(holder) if holder else "deleted")
          return
        tmp = self.path.parent / f"{LOCK_NAME}.{self._me['token']}.tmp"
        tmp.write_text(self._record())
        tmp.replace(self.path)  # atomic on local disks: never a torn record
      except OSError as e:  # storage hiccup: the next beat retries
        logging.warning("workdir %s: lock heartbeat failed: %s", self.workdir, e)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    holder = self.read()
    if holder and holder.get("token") == self._me["token"]:
      self.path.unlink(missing_ok=True)


def _all_agree(ok: bool) -> bool:
  """Process 0's `ok`, on every process (a collective when multi-process)."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() == 1:
    return ok
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def hold(workdir) -> Iterator[None]:
  """Holds the workdir lock for the body (process 0 takes it; see module doc).

  Raises:
    WorkdirError: another live run holds the workdir (on every process).
  """
  import jax  # pylint: disable=import-outside-toplevel  # lazy: the lock is jax-free
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
  error = None
  if lock is not None:
    try:
      lock.acquire()
    except WorkdirError as e:
      error = e
  if not _all_agree(error is None):
    if error is not None:
      raise error
    holder = WorkdirLock(workdir).read()
    raise WorkdirError(
        f"workdir {epath.Path(workdir)} is in use by another run"
        + (f" ({describe(holder)})" if holder else "")
        + "; process 0 could not take its lock (see its log)")
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
