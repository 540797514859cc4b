"""Fault: `kill -9` after a log step past the last checkpoint. The resumed run
logs those steps again; metrics.jsonl must still hold each step once (the
rows of the run that produced the final state)."""
import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest

from jssl_testing import REPO

# jssl.main, killed with SIGKILL by its own process right after the row of
# step $KILL_AT_STEP is written (smoke config: log every 2 steps, synchronous
# checkpoints every 3, so step 4 is logged and only step 3 is saved).
KILLED_MAIN = textwrap.dedent("""\
    import os, signal
    from jssl import metrics_log
    write = metrics_log.MetricsLog.write
    def write_then_die(self, step, metrics):
      write(self, step, metrics)
      if step == int(os.environ["KILL_AT_STEP"]) and "loss" in metrics:
        os.kill(os.getpid(), signal.SIGKILL)
    metrics_log.MetricsLog.write = write_then_die
    from jssl import main
    main.cli()
    """)


def _main(wd, *, kill_at=None):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  args = ["--config=configs/simclr.py:smoke", f"--workdir={wd}",
          "--config.eval.at_end=False", "--config.export.enabled=False",
          "--config.eval.plots="]
  if kill_at is not None:
    env["KILL_AT_STEP"] = str(kill_at)
    cmd = [sys.executable, "-c", KILLED_MAIN, *args]
  else:
    cmd = [sys.executable, "-m", "jssl.main", *args]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)


def _loss_rows(wd):
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, filter(str.strip, f)) if "loss" in r]


@pytest.mark.slow
def test_metrics_rows_are_not_repeated_after_kill_past_the_last_checkpoint(tmp_path):
  wd = str(tmp_path / "run")
  p = _main(wd, kill_at=4)
  assert p.returncode == -9, p.stderr[-2000:]
  killed = _loss_rows(wd)
  assert [r["step"] for r in killed] == [2, 4]  # step 4 logged, then killed
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["3"]

  p = _main(wd)
  assert p.returncode == 0, p.stderr[-2000:]
  assert "resuming from step 3" in p.stdout
  rows = _loss_rows(wd)
  assert [r["step"] for r in rows] == [2, 4, 6]  # was [2, 4, 4, 6]
  # The kept rows: step 2 from the first run (before the checkpoint), step 4
  # from the resumed one (exact resume: the same loss as the lost row).
  assert rows[0] == killed[0]
  assert rows[1]["time"] > killed[1]["time"]
  assert rows[1]["loss"] == killed[1]["loss"]

  # TensorBoard: the resumed run's event file starts with a SessionLog.START
  # at step 4, TensorBoard's rule for discarding the earlier file's events of
  # steps >= 4; applied, each loss step is there once, equal to metrics.jsonl.
  tf = pytest.importorskip("tensorflow")
  files = sorted(glob.glob(os.path.join(wd, "tensorboard", "*tfevents*")))
  assert len(files) == 2
  losses = {}
  for path in files:
    for e in tf.compat.v1.train.summary_iterator(path):
      if e.HasField("session_log"):
        assert (e.session_log.status, e.step) == (e.session_log.START, 4)
        losses = {k: v for k, v in losses.items() if k < e.step}
      for v in e.summary.value:
        if v.tag == "loss":
          losses[e.step] = v.simple_value
  assert sorted(losses) == [2, 4, 6]
  assert losses == pytest.approx({r["step"]: r["loss"] for r in rows})
