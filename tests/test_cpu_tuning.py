"""XLA:CPU settings measured per CPU (jssl.cpu_tuning): the choice, the cache,
the switch, the user's own flag, and conv_impl='auto' following the
measurement. The suite itself runs with JSSL_CPU_TUNING=off (conftest)."""
import json
import os

import jax
import pytest

from jssl import cpu_tuning
from jssl.models import conv


@pytest.fixture
def fresh(tmp_path, monkeypatch):
  monkeypatch.setenv("JSSL_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("JSSL_CPU_TUNING", "auto")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  monkeypatch.delenv("JSSL_CPU_TUNING_FLAG", raising=False)
  monkeypatch.setattr(cpu_tuning, "_APPLIED", None)
  monkeypatch.setattr(cpu_tuning, "_backend_started", lambda: False)
  monkeypatch.setattr(cpu_tuning, "_busy", lambda: False)
  calls = []

  def fake_worker(flag, timeout, batch=32):
    calls.append(flag)
    return {"ynn_default_flag": {"xla": 4.0, "matmul": 15.0},
            cpu_tuning.CANDIDATES["ynn_no_conv"]: {"error": "exit status -6: Aborted"},
            cpu_tuning.CANDIDATES["ynn_off"]: {"xla": 20.0, "matmul": 8.0},
            }.get(flag or "ynn_default_flag", {"xla": 1.0, "matmul": 2.0})
  monkeypatch.setattr(cpu_tuning, "_run_worker", fake_worker)
  yield calls
  cpu_tuning._APPLIED = None


def test_choose_takes_the_fastest_pair_and_skips_failures():
  res = {"a": {"xla": 3.0, "matmul": 9.0}, "b": {"error": "crashed"},
         "c": {"xla": 11.0, "matmul": 2.0}}
  assert cpu_tuning.choose(res) == ("c", "xla")
  # Within 3% of the fastest, the earlier candidate (closer to jaxlib's defaults) wins.
  res["c"]["xla"] = 9.2
  assert cpu_tuning.choose(res) == ("a", "matmul")
  assert cpu_tuning.choose(res, tolerance=0.0) == ("c", "xla")
  with pytest.raises(RuntimeError, match="every XLA:CPU candidate failed: a: boom"):
    cpu_tuning.choose({"a": {"error": "boom"}})


def test_first_run_measures_caches_and_applies_then_reads_the_cache(fresh):
  t = cpu_tuning.apply()
  # ynn_off with 'xla' (20 img/s) beats the rest; the crashing candidate is dropped.
  assert (t.source, t.candidate, t.conv_impl) == ("measured", "ynn_off", "xla")
  assert os.environ["XLA_FLAGS"].endswith(cpu_tuning.CANDIDATES["ynn_off"])
  assert len(fresh) == 6  # 3 candidates, 2 rounds
  with open(cpu_tuning.cache_path()) as f:
    entry = json.load(f)[cpu_tuning.cpu_key()]
  assert entry["images_per_s"]["ynn_no_conv"] == {"error": "exit status -6: Aborted"}
  # conv_impl='auto' on the CPU backend now means the measured one.
  assert conv.resolve_conv_impl("auto") == "xla"
  assert conv.resolve_conv_impl("matmul") == "matmul"
  # A second process (simulated) reads the cache: no measurement, flag once.
  cpu_tuning._APPLIED = None
  t2 = cpu_tuning.apply()
  assert t2.source == "cache" and t2.conv_impl == "xla" and len(fresh) == 6
  assert os.environ["XLA_FLAGS"].count("ynn_fusion_type") == 1


def test_switch_off_measures_nothing_and_keeps_the_old_default(fresh, monkeypatch):
  monkeypatch.setenv("JSSL_CPU_TUNING", "off")
  t = cpu_tuning.apply()
  assert t.source == "off" and t.conv_impl == "matmul" and not fresh
  assert "ynn" not in os.environ["XLA_FLAGS"]
  assert conv.resolve_conv_impl("auto") == "matmul"
  monkeypatch.setenv("JSSL_CPU_TUNING", "fast")
  with pytest.raises(ValueError, match="JSSL_CPU_TUNING must be 'auto' or 'off'"):
    cpu_tuning.apply()


def test_a_users_own_ynn_flag_is_kept_and_only_conv_impl_is_measured(fresh, monkeypatch):
  mine = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
  monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {mine}")
  t = cpu_tuning.apply()
  assert fresh == ["", ""]  # one worker per round, under the user's XLA_FLAGS as they are
  assert t.conv_impl == "matmul" and t.xla_flag == ""
  assert os.environ["XLA_FLAGS"].endswith(mine)
  assert os.environ["XLA_FLAGS"].count("ynn_fusion_type") == 1


def test_late_apply_does_not_claim_a_flag_it_cannot_set(fresh, monkeypatch, capsys):
  monkeypatch.setattr(cpu_tuning, "_backend_started", lambda: True)
  t = cpu_tuning.apply()
  assert t.xla_flag == "" and "ynn" not in os.environ["XLA_FLAGS"]
  assert "already started" in capsys.readouterr().err


def test_damaged_cache_is_measured_again(fresh):
  os.makedirs(os.path.dirname(cpu_tuning.cache_path()), exist_ok=True)
  with open(cpu_tuning.cache_path(), "w") as f:
    f.write("{not json")
  assert cpu_tuning.apply().source == "measured"


def test_cpu_only_reads_jax_platforms(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert cpu_tuning.cpu_only()
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert not cpu_tuning.cpu_only()


@pytest.mark.slow
def test_real_worker_measures_both_impls_in_a_subprocess():
  res = cpu_tuning._run_worker(cpu_tuning.CANDIDATES["ynn_off"], timeout=300, batch=2)
  assert set(res) == {"xla", "matmul"}, res
  assert all(v > 0 for v in res.values())
  bad = cpu_tuning._run_worker("--xla_cpu_experimental_ynn_fusion_type=-bogus", timeout=300,
                               batch=2)
  assert "error" in bad


def test_rounds_take_the_best_and_a_busy_machine_is_not_cached(fresh, monkeypatch):
  speeds = iter([{"xla": 5.0, "matmul": 9.0}, {"error": "crashed"},
                 {"xla": 7.0, "matmul": 3.0}, {"error": "crashed"}])
  monkeypatch.setattr(cpu_tuning, "CANDIDATES", {"a": "", "b": "--x"})
  monkeypatch.setattr(cpu_tuning, "_run_worker", lambda *a, **k: next(speeds))
  monkeypatch.setattr(cpu_tuning, "_busy", lambda: True)
  entry = cpu_tuning.tune(verbose=False)
  assert entry["images_per_s"] == {"a": {"xla": 7.0, "matmul": 9.0}, "b": {"error": "crashed"}}
  assert (entry["candidate"], entry["conv_impl"], entry["busy"]) == ("a", "matmul", True)
  assert not os.path.exists(cpu_tuning.cache_path())


def test_apply_for_run_prints_what_the_run_uses_and_skips_accelerator_hosts(
    fresh, monkeypatch, capsys):
  monkeypatch.setattr(cpu_tuning, "cpu_only", lambda: False)
  assert cpu_tuning.apply_for_run() is None and not fresh  # nothing measured
  monkeypatch.setattr(cpu_tuning, "cpu_only", lambda: True)
  t = cpu_tuning.apply_for_run()
  assert t.conv_impl == "xla" and "jssl: XLA:CPU tuning (measured, ynn_off)" in (
      capsys.readouterr().out)
  # A failed measurement: jaxlib's defaults, not a crash.
  cpu_tuning._APPLIED = None
  monkeypatch.setattr(cpu_tuning, "apply", lambda: (_ for _ in ()).throw(
      RuntimeError("every XLA:CPU candidate failed")))
  assert cpu_tuning.apply_for_run() is None


@pytest.mark.slow
def test_benchmark_measures_with_the_settings_a_training_run_gets(tmp_path):
  """`python -m jssl.benchmark` applies the cached tuning as `jssl.main` does and
  names it in its JSON line (before: it ran with jaxlib's defaults and
  conv_impl 'matmul', so its figures were not what training gets)."""
  import subprocess
  import sys
  env = dict(os.environ, JSSL_CACHE_DIR=str(tmp_path), JSSL_CPU_TUNING="auto",
             JAX_PLATFORMS="cpu", XLA_FLAGS="")
  env.pop("JSSL_CPU_TUNING_FLAG", None)
  key = subprocess.run([sys.executable, "-c", "from jssl import cpu_tuning; "
                        "print(cpu_tuning.cpu_key())"], env=env, capture_output=True,
                       text=True, check=True).stdout.strip()
  (tmp_path / "cpu_tuning.json").write_text(json.dumps({key: {
      "candidate": "ynn_off", "xla_flag": cpu_tuning.CANDIDATES["ynn_off"],
      "conv_impl": "xla", "busy": False}}))
  r = subprocess.run([sys.executable, "-m", "jssl.benchmark",
                      "--config=configs/simclr.py:smoke", "--config.batch_size=8",
                      "--steps=1", "--warmup=0", "--pipeline_batches=0", "--nohost_folder"],
                     env=env, capture_output=True, text=True, timeout=600,
                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert r.returncode == 0, r.stderr[-2000:]
  row = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("{")))
  assert row["cpu_tuning"].startswith("XLA:CPU tuning (cache, ynn_off): conv_impl auto = xla")
