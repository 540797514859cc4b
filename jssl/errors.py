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

import os
import re
import sys
import traceback
from typing import Optional


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


class ExportNotFoundError(ExportError, FileNotFoundError):
  """An export directory does not exist or lacks its files."""


class OutputExistsError(JsslError, FileExistsError):
  """An output would overwrite earlier results (pass --overwrite, or another path)."""


# --------------------------------------------------------------------------
# The entry points: a user error is one line on stderr and exit status 2;
# anything else (a bug) keeps its traceback and exits 1 as Python does.

USER_ERROR_EXIT = 2
VERBOSE_ENV = "JSSL_VERBOSE"


def verbose_requested(flag: bool = False) -> bool:
  """`--verbose`, or `JSSL_VERBOSE` set to 1 / true / yes."""
  env = os.environ.get(VERBOSE_ENV, "").strip().lower()
  return bool(flag) or env in ("1", "true", "yes", "on")


def report(error: BaseException, *, verbose: bool = False) -> int:
  """Prints `error: <message>` (after the traceback when `verbose`) to stderr;
  returns the exit status of a user error."""
  sys.stdout.flush()  # progress lines first, so the error is the last line
  if verbose:
    traceback.print_exception(error, file=sys.stderr)
  message = str(error)
  if isinstance(error, KeyError) and len(error.args) == 1:
    message = str(error.args[0])  # KeyError's str() quotes its message
  print(f"error: {message}", file=sys.stderr, flush=True)
  return USER_ERROR_EXIT


def _user_error_types() -> tuple[type, ...]:
  types: tuple[type, ...] = (JsslError,)
  try:
    from absl import app  # pylint: disable=import-outside-toplevel
    types += (app.UsageError,)
  except ImportError:
    pass
  return types


def call(fn, *args, verbose: bool = False, **kwargs):
  """`fn(*args, **kwargs)`; a user error (`JsslError`, absl `UsageError`) is
  printed by `report` and `USER_ERROR_EXIT` returned instead. Other
  exceptions propagate with their traceback."""
  try:
    return fn(*args, **kwargs)
  except _user_error_types() as e:
    return report(e, verbose=verbose_requested(verbose))


def absl_main(main, verbose_flag=None):
  """Wraps an `absl.app.run` main: user errors become `error: ...` and exit 2.
  `verbose_flag`: the `--verbose` FlagHolder (read after flag parsing)."""
  def wrapped(argv):
    verbose = bool(verbose_flag.value) if verbose_flag is not None else False
    if verbose:  # library code reads the env var (jssl.checkpoint_checks' log filters)
      os.environ[VERBOSE_ENV] = "1"
    return call(main, argv, verbose=verbose)
  return wrapped


def _verbose_in(argv) -> bool:
  """`--verbose` among raw absl arguments (flag parsing failed, so no value)."""
  on = ("--verbose", "-verbose", "--verbose=true", "--verbose=1", "--verbose=True")
  return any(a in on for a in argv[1:])


def _config_override_error(e: BaseException, argv) -> Optional[str]:
  """The one-line message of an unknown `--config.<field>` override, or None.

  ml_collections' config_flags looks the field up while parsing the flags and
  raises a KeyError / AttributeError with a 'Did you mean' hint; absl lets
  that through as a traceback. Only errors raised from config_flags' path
  lookup are recognised, so a bug elsewhere keeps its traceback."""
  tb, in_lookup = e.__traceback__, False
  while tb is not None:
    if "ml_collections/config_flags/config_path" in tb.tb_frame.f_code.co_filename:
      in_lookup = True
    tb = tb.tb_next
  if not in_lookup:
    return None
  key, hint, cause = None, None, e
  while cause is not None:  # KeyError('batch_sizee') -> KeyError('...Did you mean') -> ...
    arg = cause.args[0] if cause.args else None
    if isinstance(arg, str) and "\n" not in arg and key is None:
      key = arg
    found = re.search(r'Did you mean "([^"]+)"', str(arg))
    hint = hint or (found.group(1) if found else None)
    cause = cause.__context__
  names = [a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
  field = next((n for n in names if key and key in n.split(".")), None)
  where = f"--{field}" if field else "a --config override"
  what = f"the config has no field {key!r}" if key else "no such config field"
  return where + ": " + what + (f" (did you mean {hint!r}?)" if hint else "")


def _flag_error_message(e: BaseException) -> Optional[str]:
  """One line for an absl flag error; None when it wraps a bug (a config
  file that raised something other than a `JsslError`)."""
  cause, user = e.__context__, None
  while cause is not None:  # the innermost: config_flags re-raises it with a traceback
    user = cause if isinstance(cause, JsslError) else user
    cause = cause.__context__
  if user is not None:  # e.g. an unknown preset: a user error in get_config
    flag = str(e).split(": ", 1)[0]
    return f"{flag.removeprefix('flag ')}: {user}"
  text = str(e)
  return None if "Traceback (most recent call last)" in text else text


def _unloadable_config(flag_values) -> Optional[str]:
  """config_flags defers a missing config file to the first access of the
  config; this makes it a flag error, named after the flag."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  for name in list(flag_values):
    flag = flag_values[name]
    try:
      config_flags.get_config_filename(flag)  # TypeError: not a config flag
    except TypeError:
      continue
    if not flag.present:
      continue
    try:
      flag.value.get("method", None)
    except OSError as e:
      cause = e.__cause__ or e
      detail = " ".join(str(cause).split())
      return f"--{name}: cannot load the config file ({detail})"
  return None


def parse_absl_flags(argv):
  """`flags_parser` for `absl.app.run`: a flag error (unknown flag, bad value,
  unknown config field or preset, missing config file) is one `error:` line
  and exit 2, with the traceback under --verbose / JSSL_VERBOSE=1."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  message, error = None, None
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    message, error = _flag_error_message(e), e
    if message is None:
      raise
  except (KeyError, AttributeError) as e:
    message, error = _config_override_error(e, argv), e
    if message is None:
      raise
  else:
    message = _unloadable_config(flags.FLAGS)
    if message is None:
      return rest
  if error is not None and verbose_requested(_verbose_in(argv)):
    traceback.print_exception(error, file=sys.stderr)
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_EXIT)
