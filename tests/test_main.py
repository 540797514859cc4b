"""The command line: presets, overrides, typos."""
import os
import subprocess
import sys

from jssl_testing import REPO


def _main(*args, tmp_path):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "jssl.main", f"--workdir={tmp_path}", *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_misspelled_override_fails_naming_the_field(tmp_path):
  p = _main("--config=configs/simclr.py:smoke", "--config.loss.temprature=0.1",
            tmp_path=tmp_path)
  assert p.returncode != 0
  assert "temprature" in p.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_unknown_preset_lists_presets(tmp_path):
  p = _main("--config=configs/simclr.py:cifar100", tmp_path=tmp_path)
  assert p.returncode != 0
  assert "unknown preset 'cifar100'" in p.stderr and "quickstart" in p.stderr
