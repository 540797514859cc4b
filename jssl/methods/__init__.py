"""SSL methods: `make(config) -> Method`, selected by import path.

`config.method = 'simclr'` imports `jssl.methods.simclr` and calls its
`make(config)`. Each method is a factory of pure functions (see `base.Method`).
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

from jssl import errors
from jssl.methods.base import DualEncoder, Method, TrainLength

# Modules of this package that are shared pieces, not methods.
_NOT_METHODS = ("base", "common", "dual")


def available() -> list[str]:
  import jssl.methods as pkg  # pylint: disable=import-outside-toplevel
  return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                if m.name not in _NOT_METHODS and not m.name.startswith("_"))


def make(config, length: TrainLength | None = None, mesh=None) -> Method:
  """Builds the method named by `config.method`.

  Args:
    config: the run config.
    length: total steps and steps per epoch of the run; methods with
      step-dependent schedules (EMA momentum, temperature warm-up, frozen
      prototypes) require it.
    mesh: the run's `jax.sharding.Mesh`, for methods whose loss runs under
      `shard_map` (SigLIP's chunked loss); passed to a method's `make` only
      when it takes a `mesh` argument. Without one such methods compute the
      same loss on the global arrays.
  """
  name = config.method
  if name not in available():
    raise errors.ConfigError(
        f"unknown method {name!r}; available: {', '.join(available())}")
  factory = importlib.import_module(f"jssl.methods.{name}").make
  if mesh is not None and "mesh" in inspect.signature(factory).parameters:
    return factory(config, length, mesh=mesh)
  return factory(config, length)


__all__ = ["DualEncoder", "Method", "TrainLength", "available", "make"]
