"""Divergence: a non-finite loss or gradient norm stops training with a message
naming the step and the last good checkpoint; no non-finite checkpoint or
export is written and the good checkpoints are never rotated away."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jssl_testing import REPO, load_config
from jssl import errors
from jssl import methods
from jssl import train


def _nan_from(monkeypatch, bad_step):
  """Makes the method's loss NaN from step index `bad_step` on (the step that
  makes `bad_step + 1` steps done), finite before: a mid-run divergence."""
  make = methods.make

  def make_diverging(config, length, mesh=None):
    m = make(config, length, mesh=mesh)

    def loss(params, method_state, views, batch, key, step):
      value, aux = m.loss(params, method_state, views, batch, key, step)
      return value + jnp.where(step >= bad_step, jnp.nan, 0.0), aux

    return m._replace(loss=loss)

  monkeypatch.setattr(methods, "make", make_diverging)


def _config(steps):
  c = load_config("configs/simclr.py:smoke")
  c.total_steps, c.log_every_steps = steps, 2
  c.checkpoint.update(every_steps=3, keep=2)
  c.eval.plots = ""
  return c


@pytest.mark.parametrize("bad_step,last_good", [
    (6, 6),   # step 7 is NaN: seen at log step 8, before the save at 9
    (8, 6),   # step 9 is NaN: not a log step; seen by the save at 9, refused
])
def test_nonfinite_step_stops_the_run_and_saves_nothing_after_it(
    tmp_path, monkeypatch, bad_step, last_good):
  _nan_from(monkeypatch, bad_step)
  wd = str(tmp_path)
  with pytest.raises(errors.DivergenceError) as e:
    train.run(_config(12), wd)
  msg = str(e.value)
  assert f"at step {bad_step + 1}" in msg
  assert f"the last good checkpoint is step {last_good}" in msg
  # keep=2: the two newest GOOD checkpoints, none after the bad step.
  assert sorted(os.listdir(os.path.join(wd, "checkpoints")), key=int) == [
      str(last_good - 3), str(last_good)]
  assert not os.path.exists(os.path.join(wd, "export"))
  assert not os.path.exists(os.path.join(wd, "results.json"))
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert rows and all(r["step"] <= bad_step for r in rows)
  assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)


@pytest.mark.slow
def test_divergent_config_exits_nonzero_naming_the_step(tmp_path):
  # A real divergence, no test double: a temperature so small the logits overflow.
  wd = str(tmp_path)
  out = subprocess.run(
      [sys.executable, "-m", "jssl.main", "--config=configs/simclr.py:smoke",
       f"--workdir={wd}", "--config.loss.temperature=1e-30"],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert out.returncode == 2, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]  # one line, no traceback
  assert last.startswith("error: training diverged: non-finite loss or gradient "
                         "norm at step 1"), out.stderr[-3000:]
  assert "no checkpoint was written" in last
  assert "Traceback" not in out.stderr
  assert not os.listdir(os.path.join(wd, "checkpoints"))
  assert not os.path.exists(os.path.join(wd, "export"))
