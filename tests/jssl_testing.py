"""Helpers shared by the top-level tests (a unique module name: several
conftest.py files exist under tests/)."""
import os
import re

import numpy as np


REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def load_config(spec: str):
  """`'simclr:smoke'` or `'configs/simclr.py:smoke'` -> the run book's
  ConfigDict, as `--config=` gives it (`jssl.configs.get`) but unlocked:
  tests may add fields a run book does not have."""
  from jssl import configs  # pylint: disable=import-outside-toplevel
  head, _, preset = spec.partition(":")
  name = re.fullmatch(r"(?:configs/)?(\w+?)(?:\.py)?", head).group(1)
  config = configs.get(name, preset or None)
  config.unlock()
  return config


def set_fields(config, **fields):
  """Sets dotted fields (`**{"loss.impl": "global"}`) of `config`; returns it."""
  for key, value in fields.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def export_params(workdir: str) -> dict:
  """The exported encoder variables of a run, by '/'-joined path."""
  with np.load(os.path.join(workdir, "export", "params.npz"), allow_pickle=False) as z:
    return {k: z[k] for k in z.files}
