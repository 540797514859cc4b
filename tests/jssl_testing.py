"""Helpers shared by the top-level tests (a unique module name: several
conftest.py files exist under tests/)."""
import os

import numpy as np


REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def load_config(spec: str):
  """`'configs/simclr.py:smoke'` -> the ConfigDict, as `--config=` would give."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  path, _, arg = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location(
      "cfg_" + os.path.basename(path)[:-3], os.path.join(REPO, path))
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


def export_params(workdir: str) -> dict:
  """The exported encoder variables of a run, by '/'-joined path."""
  with np.load(os.path.join(workdir, "export", "params.npz"), allow_pickle=False) as z:
    return {k: z[k] for k in z.files}
