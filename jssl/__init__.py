"""jssl: self-supervised representation learning in JAX/Flax.

  from jssl import losses              # pure, jitted SSL objectives
  encoder = jssl.load_encoder(path)    # an exported encoder, on CPU

Submodules are imported lazily so `import jssl` is cheap and never imports
TensorFlow.
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = ("losses", "models", "methods", "data", "evals", "train",
               "step", "sharding", "checkpoint", "export", "schedules")


def load_encoder(path, **kwargs):
  """Loads an exported encoder; see `jssl.export.load_encoder`."""
  from jssl.export import load_encoder as _load  # pylint: disable=import-outside-toplevel
  return _load(path, **kwargs)


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"jssl.{name}")
  raise AttributeError(f"module 'jssl' has no attribute {name!r}")
