"""The installed run books (`jssl.configs`): what `--config=NAME:PRESET` resolves
to, that `jssl.configs.get` gives the same config, and that every `--config.`
example in the run books and the READMEs names a real field.

All in-process and cheap: run books are pure Python and `--config` is parsed
by the same ml_collections flag `jssl.main` defines, on a fresh FlagValues.
"""
import functools
import glob
import os
import re

import pytest
from absl import flags
from ml_collections import config_dict
from ml_collections import config_flags

from jssl import configs
from jssl.errors import ConfigError
from jssl_testing import REPO

NAMES = configs.names()


def _cli_config(spec, *overrides):
  """The config `jssl.main --config=SPEC OVERRIDES...` parses (without training)."""
  argv = ["jssl-train", f"--config={configs.resolve_spec(spec)}", *overrides]
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                           lock_config=True, sys_argv=argv)
  fv(argv)
  return holder.value


@functools.lru_cache(maxsize=None)
def _get(name, preset):
  """`configs.get`, built once per test session (the digits presets load the
  data for its statistics); callers only read it (it is locked)."""
  return configs.get(name, preset)


def _has_field(config, field):
  node = config
  for part in field.split("."):
    if not isinstance(node, config_dict.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def test_installed_run_books_match_the_repo_reexports():
  # A run book added to the package needs its configs/<name>.py re-export (the
  # checkout spelling), and the other way round.
  repo = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py")))
  assert list(NAMES) == repo and "simclr" in NAMES
  for name in NAMES:
    assert configs.path(name) == os.path.join(REPO, "jssl", "configs", f"{name}.py")


@pytest.mark.parametrize("name", NAMES)
def test_get_equals_the_command_line_config(name):
  """`jssl.configs.get(name, preset)` == what `--config=name:preset` gives
  (each preset, and none: the run book's default), locked alike; and the
  checkout spelling `configs/name.py:preset` loads the same run book."""
  for preset in (*configs.presets(name), None):
    got = configs.get(name, preset) if preset is None else _get(name, preset)
    cli = _cli_config(name if preset is None else f"{name}:{preset}")
    assert got.to_dict() == cli.to_dict(), (name, preset)
    assert got.is_locked and cli.is_locked
  repo_file = os.path.join(REPO, "configs", f"{name}.py")
  assert _get(name, "smoke").to_dict() == _cli_config(f"{repo_file}:smoke").to_dict()


def test_overrides_apply_and_typos_fail():
  c = _cli_config("simclr:smoke", "--config.total_steps=3",
                  "--config.views.color_jitter.brightness=0.8")
  assert c.total_steps == 3 and c.views.color_jitter.brightness == 0.8
  with pytest.raises(Exception, match="total_step"):
    _cli_config("simclr:smoke", "--config.total_step=3")
  # The notebook side: the config is locked, so a misspelled field raises too.
  c = configs.get("simclr", "smoke")
  c.total_steps = 3
  with pytest.raises(AttributeError):
    c.total_step = 3


def test_unknown_run_book_or_preset_is_one_line_naming_the_choices(tmp_path, monkeypatch):
  with pytest.raises(ConfigError) as e:
    configs.resolve_spec("simclrr:quickstart")
  assert "'simclrr'" in str(e.value) and "\n" not in str(e.value)
  assert all(n in str(e.value) for n in NAMES)
  with pytest.raises(ConfigError, match=r"unknown preset 'cifar100'.*quickstart"):
    configs.resolve_spec("simclr:cifar100")
  with pytest.raises(ConfigError, match=r"unknown preset 'cifar100'.*quickstart"):
    configs.get("simclr", "cifar100")
  with pytest.raises(ConfigError, match="no config file 'my/cfg.py'"):
    configs.resolve_spec("my/cfg.py:x")
  # Outside a checkout, the README's `configs/<name>.py:<preset>` spelling
  # resolves to the installed run book; an existing file always wins.
  monkeypatch.chdir(tmp_path)
  assert configs.resolve_spec("configs/simclr.py:smoke") == configs.path("simclr") + ":smoke"
  (tmp_path / "simclr").write_text("")
  assert configs.resolve_spec("simclr:smoke") == "simclr:smoke"


# `--config.<field>` mentions; `=<value>` when given. A trailing '.' ends a sentence.
_MENTION = re.compile(r"--config\.([A-Za-z0-9_.]*[A-Za-z0-9_])(?:=([^\s`)]+))?")


def _commands(text):
  """Logical command lines (backslash continuations joined) that run jssl.main."""
  joined = re.sub(r"\\\n\s*", " ", text)
  return [line for line in joined.splitlines()
          if re.search(r"jssl\.main|jssl-train", line) and "--config=" in line]


@pytest.mark.parametrize("name", NAMES)
def test_run_book_docstring_examples_work(name):
  """Every command in a run book's docstring parses as `jssl.main` would
  parse it, and every other `--config.FIELD=VALUE` it advises applies to one
  of its presets (the advice `--config.views.brightness=0.8` did not)."""
  import importlib  # pylint: disable=import-outside-toplevel
  doc = importlib.import_module(f"jssl.configs.{name}").__doc__
  for line in _commands(doc):
    tokens = line.split()
    spec = next(t.split("=", 1)[1] for t in tokens if t.startswith("--config="))
    overrides = [t for t in tokens if t.startswith("--config.")]
    _cli_config(spec, *overrides)  # raises on an unknown field or a bad value
  presets = {p: _get(name, p) for p in configs.presets(name)}
  for field, value in _MENTION.findall(doc):
    owners = [p for p, c in presets.items() if _has_field(c, field)]
    assert owners, f"{name} docstring: --config.{field} is in no preset"
    if value and not value.isupper() and not value.startswith("$"):  # DIR, $HOME: placeholders
      _cli_config(f"{name}:{owners[0]}", f"--config.{field}={value}")


@pytest.mark.parametrize("doc", ["README.md", "launch/README.md"])
def test_readme_config_fields_exist(doc):
  with open(os.path.join(REPO, doc), encoding="utf-8") as f:
    text = f.read()
  every = [_get(n, p) for n in NAMES for p in configs.presets(n)]
  fields = {field for field, _ in _MENTION.findall(text)}
  assert fields or doc != "README.md"
  for field in fields:
    assert any(_has_field(c, field) for c in every), f"{doc}: --config.{field} is in no run book"
  # The Python API example: `config.FIELD = ...` on the run book it loads.
  for name, preset in re.findall(r'jssl\.configs\.get\("(\w+)", "(\w+)"\)', text):
    for field in re.findall(r"^config\.([\w.]+) = ", text, re.M):
      assert _has_field(_get(name, preset), field), f"{doc}: config.{field} not in {name}:{preset}"


def test_resolve_argv_rewrites_the_config_flag_wherever_it_is_given(tmp_path):
  path = configs.path("simclr")
  flagfile = tmp_path / "flags.txt"
  flagfile.write_text("--config=simclr:smoke\n--config.total_steps=3\n")
  assert configs.resolve_argv(["p", "--config=simclr:smoke", "--config.seed=1"]) == [
      "p", f"--config={path}:smoke", "--config.seed=1"]
  assert configs.resolve_argv(["p", "--config", "simclr"]) == ["p", "--config", path]
  assert configs.resolve_argv(["p", f"--flagfile={flagfile}"]) == [
      "p", f"--config={path}:smoke", "--config.total_steps=3"]
  assert configs.resolve_argv(["p", "--", "--config=simclr"]) == ["p", "--", "--config=simclr"]
  assert configs.resolve_argv(["p", "--configx=simclr"]) == ["p", "--configx=simclr"]
