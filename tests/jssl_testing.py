"""Helpers shared by the top-level tests (a unique module name: several
conftest.py files exist under tests/)."""
import os


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
