"""The installed entry points: `jssl-train` from any directory, its --help, and
the notebook API (`jssl.configs.get` + `jssl.pretrain`) running the same loop.

`jssl-train` is the console script `jssl.main:cli`; it is run here as pip's
generated wrapper runs it (a `__main__` without docstring or flags, argv[0]
the script's name), so the test needs no install. The cwd is a fresh tmp dir:
nothing there is named `configs/`, so the run book must come from the package.
"""
import json
import os
import subprocess
import sys

import numpy as np

import jssl
from jssl_testing import REPO, export_params

_WRAPPER = ("import sys; from jssl.main import cli; sys.argv[0] = 'jssl-train'; "
            "sys.exit(cli())")


def _jssl_train(*args, cwd):
  # PYTHONPATH: this checkout's jssl, whatever is installed (CI: the same, editable).
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
  return subprocess.run([sys.executable, "-c", _WRAPPER, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def test_import_jssl_stays_light():
  code = ("import sys, jssl; jssl.configs.names(); jssl.pretrain; "
          "print(sorted(m for m in ('jax', 'tensorflow', 'ml_collections', 'flax') "
          "if m in sys.modules))")
  p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                     text=True, timeout=120, check=True)
  assert p.stdout.strip() == "[]"


def test_help_lists_every_flag(tmp_path):
  p = _jssl_train("--help", cwd=tmp_path)  # absl exits 1 after --help
  for flag in ("--config", "--workdir", "--distributed", "--coordinator_address",
               "--num_processes", "--process_id", "--cpu_collectives", "--[no]verbose"):
    assert flag + ":" in p.stdout, flag
  # ... and the data fields for your own images (issue 13: documented in --help).
  text = " ".join(p.stdout.split())
  for field in ("data.source=folder", "data.path=DIR", "data.source=npz",
                "data.eval_path"):
    assert field in text, field
  # --config says how to name a run book and lists them.
  assert "NAME:PRESET" in p.stdout and "simclr:quickstart" in p.stdout
  assert all(n in p.stdout.replace("\n", " ") for n in jssl.configs.names())


def test_unknown_run_book_is_one_line(tmp_path):
  p = _jssl_train("--config=simclrr:smoke", f"--workdir={tmp_path / 'w'}", cwd=tmp_path)
  assert p.returncode == 2
  assert p.stderr.startswith("error: --config=simclrr:smoke: unknown run book 'simclrr'")
  assert p.stderr.count("\n") == 1 and "barlow_twins" in p.stderr
  assert not os.path.exists(tmp_path / "w")


def test_cli_from_any_directory_equals_the_notebook_api(tmp_path):
  """`jssl-train --config=simclr:smoke` in an empty directory trains; the
  notebook API on the same config, overridden in Python, gives the same
  export bit for bit and returns the results it writes."""
  steps = ["--config.total_steps=2", "--config.eval.at_end=False", "--config.eval.plots="]
  cli_dir = tmp_path / "cli"
  p = _jssl_train("--config=simclr:smoke", f"--workdir={cli_dir}", *steps, cwd=tmp_path)
  assert p.returncode == 0, p.stderr[:2000] + " ... " + p.stderr[-1000:]  # a crash: its cause is first

  config = jssl.configs.get("simclr", "smoke")
  config.total_steps = 2
  config.eval.at_end = False
  config.eval.plots = ""
  api_dir = tmp_path / "api"
  results = jssl.pretrain(config, api_dir)
  with open(api_dir / "results.json", encoding="utf-8") as f:
    assert json.load(f) == results
  with open(cli_dir / "results.json", encoding="utf-8") as f:
    cli_results = json.load(f)
  assert results["steps"] == cli_results["steps"] == 2
  cli_params, api_params = export_params(str(cli_dir)), export_params(str(api_dir))
  assert cli_params.keys() == api_params.keys() and cli_params
  for k in cli_params:
    np.testing.assert_array_equal(cli_params[k], api_params[k], err_msg=k)
