"""Logging where researchers look: TensorBoard event files by default, wandb
when asked (a fake `wandb` module records the calls: never the network), and
metrics.jsonl, all carrying the same rows."""
import glob
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from jssl_testing import REPO

# A stand-in `wandb` package: records init/log/finish as JSON lines in
# $FAKE_WANDB_LOG.
FAKE_WANDB = textwrap.dedent("""\
    import json, os

    def _rec(**kw):
      with open(os.environ["FAKE_WANDB_LOG"], "a") as f:
        f.write(json.dumps(kw) + "\\n")

    class _Run:
      def log(self, data, step=None):
        _rec(call="log", data=data, step=step)

      def finish(self):
        _rec(call="finish")

    def init(**kw):
      _rec(call="init", **{k: v for k, v in kw.items() if k != "config"},
           config_method=(kw.get("config") or {}).get("method"))
      return _Run()
    """)

# Runs `jssl.main` with `sys.modules[name] = None` for each name in $HIDE:
# `import name` then fails as if the package were not installed.
HIDING_MAIN = textwrap.dedent("""\
    import os, sys
    for name in filter(None, os.environ.get("HIDE", "").split(",")):
      sys.modules[name] = None
    from jssl import main
    sys.argv = ["jssl.main"] + sys.argv[1:]
    main.cli()
    """)


def _run(args, *, env_extra=None, cwd=REPO, timeout=300):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", **(env_extra or {}))
  env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in env.get("PYTHONPATH", "").split(
      os.pathsep) if p])
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if l.strip()]


def _event_scalars(logdir):
  """{(step, tag): value} of every event file, read with TensorFlow's reader."""
  tf = pytest.importorskip("tensorflow")
  out = {}
  files = sorted(glob.glob(os.path.join(logdir, "*tfevents*")))
  for path in files:
    for e in tf.compat.v1.train.summary_iterator(path):
      for v in e.summary.value:
        key = (int(e.step), v.tag)
        assert key not in out, f"{key} logged twice"
        out[key] = v.simple_value
  return out, files


def _same(jsonl_value, event_value):
  if jsonl_value is None:  # a non-finite value: null in JSON, as-is in events
    return not math.isfinite(event_value)
  return event_value == pytest.approx(jsonl_value, rel=1e-6, abs=1e-30)


@pytest.mark.slow
def test_smoke_run_logs_every_row_to_tensorboard_and_wandb(tmp_path):
  fake = tmp_path / "fake_site"
  fake.mkdir()
  (fake / "wandb.py").write_text(FAKE_WANDB)
  calls_path = tmp_path / "wandb_calls.jsonl"
  wd = str(tmp_path / "run")
  p = _run(["-m", "jssl.main", "--config=configs/simclr.py:smoke", f"--workdir={wd}",
            "--config.export.enabled=False", "--config.eval.plots=",
            "--config.logging.wandb=True", "--config.logging.wandb_project=proj",
            "--config.logging.wandb_name=smoke"],
           env_extra={"PYTHONPATH": str(fake), "FAKE_WANDB_LOG": str(calls_path)})
  assert p.returncode == 0, p.stderr[-3000:]

  rows = _rows(wd)
  assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
  expected = {(r["step"], k): v for r in rows for k, v in r.items()
              if k not in ("step", "time")}
  assert any(k.startswith("final/") for _, k in expected)  # the end-of-run row too

  # TensorBoard: one event file in workdir/tensorboard holding exactly the
  # metrics.jsonl rows, scalar for scalar.
  scalars, files = _event_scalars(os.path.join(wd, "tensorboard"))
  assert len(files) == 1
  assert set(scalars) == set(expected)
  bad = {k: (expected[k], scalars[k]) for k in expected if not _same(expected[k], scalars[k])}
  assert not bad

  # wandb: init with the config's fields, the same rows, finish once.
  calls = [json.loads(l) for l in calls_path.read_text().splitlines()]
  assert calls[0]["call"] == "init" and calls[-1]["call"] == "finish"
  assert sum(c["call"] == "init" for c in calls) == 1
  init = calls[0]
  assert (init["project"], init["name"], init["entity"]) == ("proj", "smoke", None)
  assert init["config_method"] == "simclr" and init["dir"] == wd
  with open(os.path.join(wd, "wandb_run_id")) as f:
    assert init["id"] == f.read().strip() and init["resume"] == "allow"
  logged = {(c["step"], k): v for c in calls if c["call"] == "log"
            for k, v in c["data"].items()}
  assert set(logged) == set(expected)
  assert all(_same(expected[k], logged[k]) for k in expected)


def test_wandb_requested_without_the_package_is_a_config_error(tmp_path):
  wd = tmp_path / "run"
  p = _run(["-c", HIDING_MAIN, "--config=configs/simclr.py:smoke", f"--workdir={wd}",
            "--config.logging.wandb=True"], env_extra={"HIDE": "wandb"})
  assert p.returncode != 0
  out = p.stdout + p.stderr
  assert "ConfigError" in out or "error: " in out
  assert "config.logging.wandb=True needs the wandb package" in out
  assert "pip install wandb" in out
  # Refused before training: no step was taken or saved.
  assert not (wd / "checkpoints").exists() and not (wd / "metrics.jsonl").exists()
  assert "first step" not in out


def test_tensorboard_off_writes_no_event_file(tmp_path):
  from jssl.metrics_log import MetricsLog  # pylint: disable=import-outside-toplevel
  log = MetricsLog(tmp_path, logging={"tensorboard": False})
  log.start(0)
  log.write(1, {"loss": 1.0})
  log.close()
  assert not (tmp_path / "tensorboard").exists()
  assert _rows(tmp_path)[0]["loss"] == 1.0
  with pytest.raises(ValueError, match="unknown field.*tensorbord"):
    MetricsLog(tmp_path, logging={"tensorbord": True})
