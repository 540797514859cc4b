"""jssl's user-error types: what the entry points print as one line.

A user error is something the person running jssl can fix: a config value, a
dataset or path, a workdir held by another run, a checkpoint or export that
does not fit. Each is raised as a subclass of `JsslError` whose message names
the field (or path), the value and what is allowed. `jssl.main`,
`jssl.evaluate` and `jssl-train` print `error: <message>` and exit non-zero,
with the traceback only under `--verbose` (or `JSSL_VERBOSE=1`). Anything else
is a bug and keeps its traceback.

The types also derive from the built-in exception a caller would expect
(`ValueError` for bad values, `FileNotFoundError` for missing paths), so code
that catches those keeps working.
"""
from __future__ import annotations


class JsslError(Exception):
  """Base of every user error jssl raises on purpose (see module docstring)."""


class ConfigError(JsslError, ValueError):
  """A config field has a value jssl cannot run with."""


class DataError(JsslError, ValueError):
  """A dataset, data path or its contents cannot be used."""


class DataNotFoundError(JsslError, FileNotFoundError):
  """A dataset or data path does not exist (or is not prepared)."""


class WorkdirError(JsslError):
  """The workdir cannot be used: held by another run, or holds another run."""


class CheckpointError(JsslError):
  """A checkpoint cannot be restored or written (layout differs, disk full)."""


class ExportError(JsslError, ValueError):
  """An export directory is missing, damaged or of another model."""


class DivergenceError(JsslError):
  """Training produced a non-finite loss or gradient; nothing bad was saved."""
