"""Helpers for the fault tests: a tiny train-state pytree checkpointed with
`jssl.checkpoint.Checkpointer` (cheaper than a training run and the same code
path), and a subprocess runner for faults that touch the whole process."""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp

from jssl import checkpoint as ckpt_lib
from jssl_testing import REPO


def state(v: int) -> dict:
  """A state whose data file is incompressible (random bits, 240 KB): zstd
  stores it raw, so bytes changed inside it decode to other numbers instead of
  failing to decompress (what a bad disk does to real float weights)."""
  return {"step": jnp.asarray(v, jnp.int32),
          "params": {"w": jax.random.bits(jax.random.key(v), (300, 200), jnp.uint32),
                     "b": jnp.full((8,), float(v))}}


def abstract(tree=None):
  return jax.eval_shape(lambda: tree if tree is not None else state(0))


def saved_workdir(tmp_path, steps=(1, 2), *, use_async=True) -> str:
  wd = str(tmp_path / "run")
  c = ckpt_lib.Checkpointer(wd, every_steps=1, keep=5, use_async=use_async)
  for s in steps:
    c.save(s, state(s))
  c.close()
  return wd


def largest_data_file(wd: str, step: int) -> str:
  files = [os.path.join(root, n)
           for root, _, names in os.walk(os.path.join(wd, "checkpoints", str(step)))
           for n in names]
  return max(files, key=os.path.getsize)


def run_python(code: str, *, timeout: int = 300) -> subprocess.CompletedProcess:
  """Runs `code` in a fresh CPU-only interpreter with this checkout's jssl."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)
