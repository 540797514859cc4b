"""The run books: one file per method, installed with jssl.

Each `jssl/configs/<name>.py` holds a `get_config(preset)` and its `PRESETS`;
its docstring says what every preset trains, on what data, and what it is
expected to reach. From the command line a run book is named
`--config=<name>:<preset>` (from any directory; `jssl.main` resolves the name to
the installed file before ml_collections loads it). In a notebook:

  import jssl
  jssl.configs.names()                      # ('barlow_twins', 'byol', ...)
  jssl.configs.presets("simclr")            # ('quickstart', 'cifar10', ...)
  config = jssl.configs.get("simclr", "quickstart")
  config.total_steps = 100                  # locked: a misspelled field raises
  results = jssl.pretrain(config, "/tmp/run")

`get` returns what `--config=simclr:quickstart` gives `jssl.main`: the same
`get_config` result, locked the same way (ml_collections `lock_config=True`), so
a typo fails loudly in both. `names()` lists the package's files without
importing them: `import jssl.configs` stays cheap; `presets` and `get` import
the run book (and with it jax).
"""
from __future__ import annotations

import importlib
import importlib.resources
import os
import re

from jssl.errors import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The repo spelling `configs/<name>.py`: resolved to the installed run book when
# no such file exists (outside a checkout), so README commands work anywhere.
_REPO_SPELLING = re.compile(r"configs[/\\]([A-Za-z_][A-Za-z0-9_]*)\.py")


def names() -> tuple[str, ...]:
  """The installed run books, sorted (e.g. 'simclr'); imports none of them."""
  files = importlib.resources.files(__name__).iterdir()
  return tuple(sorted(f.name[:-3] for f in files
                      if f.name.endswith(".py") and not f.name.startswith("_")))


def _module(name: str):
  if name not in names():
    raise ConfigError(f"unknown run book {name!r}; run books: {', '.join(names())} "
                      f"(jssl.configs.names())")
  return importlib.import_module(f"{__name__}.{name}")


def presets(name: str) -> tuple[str, ...]:
  """The presets of run book `name` (its `PRESETS`)."""
  return tuple(_module(name).PRESETS)


def path(name: str) -> str:
  """The file of run book `name` (what `--config=<name>:...` loads)."""
  return os.path.abspath(_module(name).__file__)


def _check_preset(name: str, preset: str | None) -> None:
  known = presets(name)
  if preset is not None and preset not in known:
    raise ConfigError(f"unknown preset {preset!r} for run book {name!r}; presets: "
                      f"{', '.join(known)}")


def get(name: str, preset: str | None = None):
  """The locked ConfigDict of run book `name` at `preset` (its default if None),
  equal to what `--config=<name>:<preset>` gives the command line. Also accepts
  `get("simclr:quickstart")`. Fields can be reassigned; adding one raises."""
  if preset is None and ":" in name:
    name, preset = name.split(":", 1)
  _check_preset(name, preset)
  module = _module(name)
  # ml_collections calls get_config(*args after ':'), i.e. with no argument
  # when no preset is named; do the same so defaults cannot diverge.
  config = module.get_config(preset) if preset is not None else module.get_config()
  config.lock()
  return config


def resolve_spec(spec: str) -> str:
  """A `--config` value as ml_collections' file flag takes it (`FILE[:PRESET]`).

  An existing file is returned unchanged (your own config files, and
  `configs/<name>.py:<preset>` in a checkout). `<name>[:<preset>]`, or the repo
  spelling `configs/<name>.py[:<preset>]` where that file is absent, becomes the
  installed run book's path. Anything else raises ConfigError naming the run
  books, so a wrong name is one line instead of a failure at first use.
  """
  head, sep, preset = spec.partition(":")
  if os.path.isfile(head):
    return spec
  match = _REPO_SPELLING.fullmatch(head)
  name = match.group(1) if match else head
  if _NAME.fullmatch(name) and name in names():
    try:
      _check_preset(name, preset if sep else None)
    except ConfigError as e:
      raise ConfigError(f"--config={spec}: {e}") from None
    return path(name) + sep + preset
  if _NAME.fullmatch(name):
    raise ConfigError(f"--config={spec}: unknown run book {name!r}; run books: "
                      f"{', '.join(names())} (each as NAME:PRESET), or a config file "
                      f"PATH.py[:PRESET]")
  raise ConfigError(f"--config={spec}: no config file {head!r} and not a run book "
                    f"name; run books: {', '.join(names())} (each as NAME:PRESET)")


def resolve_argv(argv: list[str], flag: str = "config") -> list[str]:
  """`argv` with its `--<flag>=SPEC` (or `--<flag> SPEC`) passed through
  `resolve_spec`: what an absl program defining `flag` with
  `config_flags.DEFINE_config_file` calls on `sys.argv` before `app.run`, so
  run-book names work there (`jssl.main.cli` does). Flag files are expanded
  first so a run book named in one resolves too; nothing after `--` is a flag.
  """
  if any(a.startswith(("-flagfile", "--flagfile")) for a in argv[1:]):
    from absl import flags  # pylint: disable=import-outside-toplevel
    argv = argv[:1] + flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)
  out = list(argv)
  for i, arg in enumerate(out[1:], start=1):
    if arg == "--":
      break
    name, eq, value = arg.partition("=")
    if name in (f"--{flag}", f"-{flag}"):
      if eq:
        out[i] = f"{name}={resolve_spec(value)}"
      elif i + 1 < len(out):
        out[i + 1] = resolve_spec(out[i + 1])
  return out
