"""Fault: the code changed and its train state no longer has the layout of the
checkpoints in the workdir (a leaf more or less, another shape). The
checkpoints are not damaged: jssl refuses with a CheckpointError naming the
step, the differing leaves and how to proceed, and moves nothing."""
import os

import jax.numpy as jnp
import pytest

from jssl import checkpoint as ckpt_lib
from jssl.errors import CheckpointError
from reliability_testing import abstract, saved_workdir, state


def _more(s):
  return {**s, "params": {**s["params"], "extra": jnp.zeros((4,))}}


def _fewer(s):
  return {**s, "params": {"w": s["params"]["w"]}}


def _reshaped(s):
  return {**s, "params": {**s["params"], "b": jnp.zeros((9,))}}


@pytest.mark.parametrize("change,expected", [
    (_more, "params/extra is missing from the checkpoint"),
    (_fewer, "params/b is not in this code's train state"),
    (_reshaped, "params/b has shape (8,) in the checkpoint, (9,) here"),
])
def test_other_layout_is_refused_and_nothing_moves(tmp_path, change, expected):
  wd = saved_workdir(tmp_path)
  before = sorted(os.listdir(os.path.join(wd, "checkpoints")))
  c = ckpt_lib.Checkpointer(wd, every_steps=1, keep=5)
  with pytest.raises(CheckpointError) as e:
    c.restore_latest(abstract(change(state(0))))
  c.close()
  msg = str(e.value)
  assert "checkpoint step 2" in msg and "different train-state layout" in msg
  assert expected in msg
  assert "--workdir" in msg  # how to start fresh
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == before
  assert not os.path.exists(os.path.join(wd, "corrupt"))
