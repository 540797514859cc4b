"""jssl: self-supervised representation learning in JAX/Flax.

  config = jssl.configs.get("simclr", "quickstart")  # a run book, as --config=simclr:quickstart
  results = jssl.pretrain(config, workdir)           # the loop `jssl-train` runs
  from jssl import losses              # pure, jitted SSL objectives
  encoder = jssl.load_encoder(path)    # an exported encoder, on CPU
  model = jssl.load_clip(path)         # an exported CLIP / SigLIP / LiT model

Submodules are imported lazily so `import jssl` is cheap and never imports
TensorFlow.
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = ("losses", "models", "methods", "data", "evals", "train",
               "step", "sharding", "checkpoint", "export", "schedules", "configs")


def pretrain(config, workdir) -> dict:
  """Pretrains, evaluates and exports as `jssl-train --config=... --workdir=...`
  does (`jssl.train.run`, the same loop); returns the results dict also written
  to `workdir/results.json`. `config` is a ConfigDict, e.g. from
  `jssl.configs.get`; re-running on the same workdir resumes from its latest
  checkpoint. A single-process run: multi-host jobs go through the CLI, which
  initialises `jax.distributed` first (see launch/README.md).
  """
  import os  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  if "tensorflow" in sys.modules or config.data.get("source") == "tfds":
    # As jssl.main: TF reads the input pipeline only and must not reserve the
    # GPU memory JAX needs (TF takes it all when it first sees a GPU).
    try:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      tf.config.set_visible_devices([], "GPU")
    except (ImportError, RuntimeError):  # no TF, or TF already holds its devices
      pass
  from jssl import train  # pylint: disable=import-outside-toplevel
  return train.run(config, os.fspath(workdir))


def load_encoder(path, **kwargs):
  """Loads an exported encoder; see `jssl.export.load_encoder`."""
  from jssl.export import load_encoder as _load  # pylint: disable=import-outside-toplevel
  return _load(path, **kwargs)


def load_clip(path, **kwargs):
  """Loads an exported image-text model (CLIP, SigLIP, LiT): `encode_image`
  (uint8 images) and `encode_text` (strings); see `jssl.export.load_clip`."""
  from jssl.export import load_clip as _load  # pylint: disable=import-outside-toplevel
  return _load(path, **kwargs)


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"jssl.{name}")
  raise AttributeError(f"module 'jssl' has no attribute {name!r}")
