"""SSL methods: `make(config) -> Method`, selected by import path.

`config.method = 'simclr'` imports `jssl.methods.simclr` and calls its
`make(config)`. Each method is a factory of pure functions (see `base.Method`).
"""
from __future__ import annotations

import importlib
import pkgutil

from jssl.methods.base import Method


def available() -> list[str]:
  import jssl.methods as pkg  # pylint: disable=import-outside-toplevel
  return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                if m.name != "base" and not m.name.startswith("_"))


def make(config) -> Method:
  """Builds the method named by `config.method`."""
  name = config.method
  if name not in available():
    raise ValueError(
        f"unknown method {name!r}; available: {', '.join(available())}")
  return importlib.import_module(f"jssl.methods.{name}").make(config)


__all__ = ["Method", "available", "make"]
