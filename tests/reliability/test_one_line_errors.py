"""Fault: a user error (config typo or bad value, a batch the devices cannot
split, a workdir of another run, a missing export).

Before, `jssl.main` and `jssl.evaluate` caught nothing: a good message under a
14-57-line traceback, exit 1. Now a user error is one `error: <message>` line
on stderr and exit status 2, the traceback only with `--verbose` or
`JSSL_VERBOSE=1`; a bug keeps its traceback and exits 1. Bad config values
fail before any compile (no 'first step' line).
"""
import json
import os
import subprocess
import sys

import pytest

from jssl_testing import REPO

SMOKE = "--config=configs/simclr.py:smoke"


def _run(module, *args, env=None, devices=1):
  base = {k: v for k, v in os.environ.items() if k != "JSSL_VERBOSE"}
  env = dict(base, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **(env or {}))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def _one_error_line(p) -> str:
  """The `error:` line of a user error; checks the exit status and that no
  traceback or training step was printed."""
  assert p.returncode == 2, p.stderr[-3000:]
  assert "Traceback" not in p.stderr, p.stderr[-3000:]
  assert "first step" not in p.stdout
  errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, p.stderr[-3000:]
  return errors[0]


@pytest.mark.parametrize("args,expected", [
    # Two bad values: one line, one clause each.
    (("--config.total_steps=0", "--config.checkpoint.every_steps=0"),
     "error: config.checkpoint.every_steps=0: must be an integer >= 1; "
     "config.total_steps=0: must be -1 (use total_epochs) or an integer >= 1"),
    # A typo in an override, reported while the flags are parsed.
    (("--config.batch_sizee=3",),
     "error: --config.batch_sizee: the config has no field 'batch_sizee' "
     "(did you mean 'batch_size'?)"),
], ids=["bad-values", "typo"])
def test_config_errors_are_one_line_before_any_compile(tmp_path, args, expected):
  p = _run("jssl.main", SMOKE, f"--workdir={tmp_path / 'w'}", *args)
  assert _one_error_line(p) == expected
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_a_batch_the_devices_cannot_split_is_one_line(tmp_path):
  p = _run("jssl.main", SMOKE, f"--workdir={tmp_path}", "--config.batch_size=12", devices=8)
  assert "global batch size 12 is not divisible by the 8 devices" in _one_error_line(p)


def test_a_workdir_of_another_config_lists_the_differences_without_a_traceback(tmp_path):
  from jssl import checkpoint  # pylint: disable=import-outside-toplevel
  from jssl_testing import load_config  # pylint: disable=import-outside-toplevel
  old = load_config("configs/simclr.py:smoke")
  old.batch_size = 16
  checkpoint.write_or_check_config(str(tmp_path), old)
  os.makedirs(tmp_path / "checkpoints" / "3")
  p = _run("jssl.main", SMOKE, f"--workdir={tmp_path}")
  assert "holds a run of a different config" in _one_error_line(p)
  assert "  batch_size: 16 -> 32" in p.stderr  # the diff list follows, no traceback
  assert json.load(open(tmp_path / "config.json"))["batch_size"] == 16


def test_verbose_adds_the_traceback(tmp_path):
  p = _run("jssl.main", SMOKE, f"--workdir={tmp_path}", "--config.checkpoint.keep=0",
           "--verbose")
  assert p.returncode == 2
  assert "Traceback" in p.stderr and "jssl.errors.ConfigError" in p.stderr
  assert p.stderr.rstrip().splitlines()[-1] == (
      "error: config.checkpoint.keep=0: must be an integer >= 1")
  # The env var does the same, also for an error found while parsing flags.
  p = _run("jssl.main", SMOKE, f"--workdir={tmp_path}", "--config.seeed=1",
           env={"JSSL_VERBOSE": "1"})
  assert p.returncode == 2 and "Traceback" in p.stderr
  assert p.stderr.rstrip().splitlines()[-1].startswith("error: --config.seeed:")


def test_an_internal_error_keeps_its_traceback(tmp_path, capsys):
  from jssl import errors  # pylint: disable=import-outside-toplevel

  def fails(error):
    raise error

  # The wrapper the entry points use: a user error is reported, a bug is not.
  assert errors.call(fails, errors.DataError("no such split 'tset'")) == 2
  assert capsys.readouterr().err == "error: no such split 'tset'\n"
  with pytest.raises(RuntimeError, match="an internal bug"):
    errors.call(fails, RuntimeError("an internal bug"))
  # The real entry point, a bug (train.run raising RuntimeError) inside it.
  code = ("import sys\n"
          "from jssl import train\n"
          "def bug(config, workdir):\n"
          "  raise RuntimeError('an internal bug')\n"
          "train.run = bug\n"
          "from jssl import main\n"
          f"sys.argv = ['jssl-train', {SMOKE!r}, '--workdir={tmp_path}']\n"
          "main.cli()\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 1
  assert "Traceback" in p.stderr and "RuntimeError: an internal bug" in p.stderr
  assert "error:" not in p.stderr


def test_evaluate_prints_user_errors_as_one_line(tmp_path):
  p = _run("jssl.evaluate", f"--export={tmp_path}", "--dataset=digits")
  assert _one_error_line(p) == (
      f"error: {tmp_path} is not a jssl export: export.json is missing (exports are "
      "written to <workdir>/export at the end of training)")
  p = _run("jssl.evaluate", f"--export={tmp_path}", "--dataset=digits", "--verbose")
  assert p.returncode == 2 and "ExportNotFoundError" in p.stderr and "Traceback" in p.stderr
