"""Fault: a second run started on a workdir another run is using (the same
command twice, or two configs at once). The second is refused at once with a
WorkdirError naming the holder (host, pid, since); a lock left by a dead run is
taken over (same host and its pid is gone, or its heartbeat is older than
STALE_SECONDS) with a WARNING line."""
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from jssl import train
from jssl import workdir as workdir_lib
from jssl.errors import WorkdirError
from jssl_testing import REPO, load_config

# A run holding the lock (the lock alone: jax-free, so it starts in a second).
HOLD = ("import sys, time; from jssl import workdir as w\n"
        "w.WorkdirLock(sys.argv[1]).acquire(); print('held', flush=True)\n"
        "time.sleep(600)\n")


def test_second_run_is_refused_at_once_naming_the_holder(tmp_path):
  wd = str(tmp_path / "run")
  holder = subprocess.Popen(
      [sys.executable, "-c", HOLD, wd], cwd=REPO, stdout=subprocess.PIPE, text=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO))
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirError) as e:
      train.run(load_config("configs/simclr.py:smoke"), wd)
    msg = str(e.value)
    assert f"pid {holder.pid}" in msg and socket.gethostname() in msg
    assert "in use by another run" in msg and "since" in msg
    # Refused before touching anything of the holder's run.
    assert sorted(os.listdir(wd)) == [workdir_lib.LOCK_NAME]
  finally:
    holder.kill()
    holder.wait()
  # The holder died without releasing (kill -9): its lock is stale and taken.
  with workdir_lib.hold(wd):
    rec = json.loads(open(os.path.join(wd, workdir_lib.LOCK_NAME)).read())
    assert rec["pid"] == os.getpid()
  assert not os.path.exists(os.path.join(wd, workdir_lib.LOCK_NAME))  # released


def _write_lock(wd, **rec):
  os.makedirs(wd, exist_ok=True)
  now = time.time()
  rec = {"host": "other-host", "pid": 1, "started": now, "heartbeat": now,
         "token": "t", **rec}
  with open(os.path.join(wd, workdir_lib.LOCK_NAME), "w") as f:
    json.dump(rec, f)


def test_stale_rule(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  # A live run on another host (fresh heartbeat): refused.
  wd = str(tmp_path / "a")
  _write_lock(wd)
  with pytest.raises(WorkdirError, match="host other-host, pid 1"):
    with workdir_lib.hold(wd):
      pass
  # Another host, heartbeat older than STALE_SECONDS: taken over.
  _write_lock(wd, heartbeat=time.time() - workdir_lib.STALE_SECONDS - 60)
  with workdir_lib.hold(wd):
    pass
  assert "took over a stale lock" in caplog.text and "heartbeat" in caplog.text
  # This host, a pid that does not exist: taken over at once.
  caplog.clear()
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  _write_lock(wd, host=socket.gethostname(), pid=dead.pid)
  with workdir_lib.hold(wd):
    # ...and while held, this process's own second run is refused too.
    with pytest.raises(WorkdirError, match=f"pid {os.getpid()}"):
      with workdir_lib.hold(wd):
        pass
  assert f"pid {dead.pid} no longer runs on this host" in caplog.text
