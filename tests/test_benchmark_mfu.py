"""MFU in `jssl.benchmark` / `jssl.perf` and the accelerator script.

The FLOP count is XLA's cost analysis (checked against 2*M*N*K by hand, per
device under sharding), the peak comes from a table keyed by device_kind
substrings (checked for the strings jax reports) or, on CPU, a cached matmul
timing; the JSON line carries the documented keys; `benchmarks/accelerator.py`
builds every recipe it names and runs a quick row end to end (slow).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jssl import benchmark, perf
from jssl_testing import REPO


def _accelerator():
  spec = importlib.util.spec_from_file_location(
      "accelerator_bench", os.path.join(REPO, "benchmarks", "accelerator.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


# --- FLOPs --------------------------------------------------------------------------------


def test_matmul_flops_are_2mnk():
  m, k, n = 24, 40, 56
  f = jax.jit(lambda a, b: a @ b)
  compiled = f.lower(jnp.ones((m, k)), jnp.ones((k, n))).compile()
  assert perf.step_flops(compiled) == 2 * m * n * k  # 107520, by hand


def test_valid_conv_flops_are_2_out_taps_cin():
  x = jnp.ones((2, 9, 9, 3))
  w = jnp.ones((3, 3, 3, 8))
  f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  # out 2 x 7 x 7 x 8 = 784 elements, each 3*3*3 = 27 multiply-adds
  assert perf.step_flops(f.lower(x, w).compile()) == 2 * 784 * 27


def test_sharded_flops_are_per_device():
  devices = jax.devices()
  nd = len(devices)
  assert nd == 8  # conftest's simulated devices
  mesh = Mesh(np.array(devices), ("data",))
  m, k, n = 64, 32, 16
  a = jax.device_put(jnp.ones((m, k)), NamedSharding(mesh, P("data")))
  b = jax.device_put(jnp.ones((k, n)), NamedSharding(mesh, P()))
  lowered = jax.jit(lambda a, b: a @ b).lower(a, b)
  assert perf.step_flops(lowered.compile()) == 2 * m * n * k / nd
  assert perf.hlo_flops(lowered, nd) == 2 * m * n * k / nd


def test_step_flops_takes_dict_or_list_and_survives_missing():
  class Fake:
    def __init__(self, ca):
      self.ca = ca

    def cost_analysis(self):
      if isinstance(self.ca, Exception):
        raise self.ca
      return self.ca

  assert perf.step_flops(Fake({"flops": 5.0, "bytes accessed": 1.0})) == 5.0
  assert perf.step_flops(Fake([{"flops": 3.0}, {"flops": 4.0}])) == 7.0  # older jax
  assert perf.step_flops(Fake(None)) is None
  assert perf.step_flops(Fake([{}])) is None
  assert perf.step_flops(Fake(NotImplementedError("no cost analysis"))) is None


def test_mfu_arithmetic():
  # 4 TFLOP per step in 0.5 s = 8 TFLOP/s on a 10 TFLOP/s device: 80%.
  assert perf.mfu(4e12, 0.5, 10e12) == pytest.approx(0.8)
  m, k, n = 24, 40, 56
  compiled = jax.jit(lambda a, b: a @ b).lower(jnp.ones((m, k)), jnp.ones((k, n))).compile()
  assert perf.mfu(perf.step_flops(compiled), 1e-3, 1e9) == pytest.approx(2 * m * n * k / 1e6)
  assert perf.mfu(None, 0.5, 1e12) is None
  assert perf.mfu(1e12, 0.5, None) is None


def test_memory_fields_of_a_matmul():
  f = jax.jit(lambda a, b: a @ b)
  compiled = f.lower(jnp.ones((512, 512)), jnp.ones((512, 512))).compile()
  mem = perf.memory_fields(compiled)
  assert mem["compiled_argument_mb"] == 2.0  # two 1 MiB float32 operands
  assert mem["compiled_output_mb"] == 1.0
  assert "compiled_temp_mb" in mem


# --- peaks --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,name,bf16", [
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM", 989e12),
    ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200", "NVIDIA H200 SXM", 989e12),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100", 312e12),
    ("NVIDIA A100-PCIE-40GB", "NVIDIA A100", 312e12),
    ("TPU v4", "TPU v4", 275e12),
    ("TPU v5 lite", "TPU v5e", 197e12),
    ("TPU v5", "TPU v5p", 459e12),
    ("TPU v5p", "TPU v5p", 459e12),
    ("TPU v6 lite", "TPU v6e", 918e12),
])
def test_peak_lookup_by_device_kind(kind, name, bf16):
  entry = perf.lookup(kind)
  assert entry.name == name
  assert entry.flops["bfloat16"] == bf16
  assert entry.source
  assert perf.peak_for(kind, "gpu" if "NVIDIA" in kind else "tpu", "bfloat16").flops == bf16


def test_unknown_devices_have_no_peak():
  assert perf.lookup("cpu") is None
  assert perf.lookup("NVIDIA GeForce RTX 3090") is None
  p = perf.peak_for("NVIDIA GeForce RTX 3090", "gpu", "bfloat16")
  assert p.flops is None and "unknown device" in p.basis


def test_fp32_peak_follows_matmul_precision():
  h200 = "NVIDIA H200"
  # Default precision: XLA runs float32 dots/convs on TF32 tensor cores.
  default = perf.peak_for(h200, "gpu", "float32", matmul_precision=None)
  assert default.flops == 494e12 and "tf32" in default.basis
  assert perf.peak_for(h200, "gpu", "float32", "highest").flops == 67e12
  assert perf.peak_for(h200, "gpu", "float32", "bfloat16").flops == 989e12
  # TPU: one bf16 pass by default, 6 at 'highest'.
  assert perf.peak_for("TPU v4", "tpu", "float32", "default").flops == 275e12
  assert perf.peak_for("TPU v4", "tpu", "float32", "highest").flops == pytest.approx(275e12 / 6)
  with pytest.raises(ValueError, match="dtype"):
    perf.peak_for(h200, "gpu", "int8")


def test_cpu_peak_is_measured_once_per_key_and_split_over_devices(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  calls = []

  def fake_measure(dtype, size):
    calls.append((dtype, size))
    return 80e9 if dtype == "float32" else 40e9

  monkeypatch.setattr(perf, "measure_matmul_flops", fake_measure)
  assert perf.cpu_matmul_peak("float32") == 80e9
  assert perf.cpu_matmul_peak("float32") == 80e9  # from the cache file
  assert perf.cpu_matmul_peak("bfloat16") == 40e9
  assert calls == [("float32", 2048), ("bfloat16", 2048)]
  table = json.loads((tmp_path / "jssl" / "cpu_peak.json").read_text())
  assert sorted(v["dtype"] for v in table.values()) == ["bfloat16", "float32"]
  assert all(v["cpu"] == perf.cpu_model() for v in table.values())
  # 8 simulated devices share the machine's cores.
  peak = perf.peak_flops(jax.devices()[0], "float32")
  assert peak.flops == pytest.approx(80e9 / 8) and "/ 8 device(s)" in peak.basis
  # bf16 compute on a CPU whose bf16 matmul is the slower one: the float32 peak
  # (else a bf16 step running at float32 speed reads as MFU > 1).
  peak = perf.peak_flops(jax.devices()[0], "bfloat16")
  assert peak.flops == pytest.approx(80e9 / 8) and "float32 (above its bfloat16)" in peak.basis
  monkeypatch.setattr(perf, "cpu_matmul_peak", lambda d: 160e9 if d == "bfloat16" else 80e9)
  peak = perf.peak_flops(jax.devices()[0], "bfloat16")
  assert peak.flops == pytest.approx(160e9 / 8) and "measured bfloat16 matmul" in peak.basis


def test_measured_cpu_matmul_is_plausible():
  # A real (small) timing: positive and below a generous bound for 2 cores.
  f = perf.measure_matmul_flops("float32", 256, min_seconds=0.0, max_reps=2)
  assert 1e7 < f < 1e13


# --- the JSON line ------------------------------------------------------------------------


def test_json_line_has_every_documented_key_first():
  line = benchmark.json_line({"mfu": 0.5, "extra": 1, "benchmark": "jssl.benchmark"})
  assert "\n" not in line and line.startswith("{")
  row = json.loads(line)
  assert list(row)[:len(benchmark.JSON_KEYS)] == list(benchmark.JSON_KEYS)
  assert row["mfu"] == 0.5 and row["extra"] == 1 and row["compile_s"] is None
  for key in benchmark.JSON_KEYS:  # each key is documented in the module docstring
    assert key in benchmark.__doc__, key


def test_input_headroom_ratio():
  step = {"global_batch": 100, "images_per_s": 50.0, "cpu_s_per_step": 4.0}
  cpu = benchmark.input_headroom(dict(step, platform="cpu", pipeline_images_per_s_per_host=1.0,
                                      pipeline_images_per_cpu_s=75.0))
  assert cpu["input_headroom_x"] == 3.0  # 75 / (100 / 4)
  gpu = benchmark.input_headroom(dict(step, platform="gpu", pipeline_images_per_s_per_host=200.0))
  assert gpu["input_headroom_x"] == 4.0  # 200 / 50
  assert "wall" in gpu["input_headroom_basis"]
  folder = benchmark.input_headroom(dict(step, platform="gpu", host_feeds_step_x=1.5))
  assert folder["input_headroom_x"] == 1.5 and "folder" in folder["input_headroom_basis"]
  assert benchmark.input_headroom(dict(step, platform="gpu"))["input_headroom_x"] is None


@pytest.mark.slow
def test_benchmark_step_reports_the_documented_figures():
  import jssl.configs  # pylint: disable=import-outside-toplevel
  config = jssl.configs.get("simclr", "smoke")
  config.batch_size = 16
  out = benchmark.benchmark_step(config, steps=1, warmup=0, measure_cpu_peak=False)
  row = json.loads(benchmark.json_line(out))
  missing = [k for k in benchmark.JSON_KEYS if k not in out and not k.startswith(
      ("pipeline", "input_headroom", "config", "cpu_tuning"))]
  assert not missing, missing
  assert row["num_devices"] == 8 and row["per_device_batch"] == 2
  assert row["flops_per_step_per_device"] > 0
  # The optimised and the unoptimised programs count within 20% of each other.
  assert row["flops_per_step_per_device_hlo"] == pytest.approx(
      row["flops_per_step_per_device"], rel=0.2)
  assert row["mfu"] is None and row["peak_basis"] == "cpu: not measured"
  assert row["compiled_temp_mb"] > 0


# --- benchmarks/accelerator.py ------------------------------------------------------------


def test_accelerator_builds_every_recipe():
  acc = _accelerator()
  n = jax.device_count()
  for model in acc.MODELS:
    if model == "siglip_vitb16" and acc._siglip_preset() is None:  # pylint: disable=protected-access
      continue
    for dtype in ("float32", "bfloat16"):
      c = acc.build_config(model, dtype)
      assert c.model.dtype == dtype
      assert c.batch_size == (512 if model == "simclr_r18" else
                              128 * n if model in ("dino_vits16", "ijepa_vitb16",
                                                   "dinov2_vits14") else 256 * n), model
  dino = acc.build_config("dino_vits16", "bfloat16")
  assert (dino.views.image_size, dino.views.num_views) == (224, 2)
  assert (dino.views.local.image_size, dino.views.local.num) == (96, 8)
  mae = acc.build_config("mae_vitb16", "float32")
  assert (mae.model.name, mae.model.patch_size, mae.loss.mask_ratio) == ("vit_base", 16, 0.75)
  byol = acc.build_config("byol_r50", "float32")
  assert (byol.model.name, byol.views.image_size) == ("resnet50", 224)
  quick = acc.build_config("byol_r50", "float32", quick=True)
  assert quick.batch_size == 8 * n and quick.views.image_size == 32
  # Issue 17's accelerator runs: I-JEPA and the DINOv2 recipe, as the run books give them.
  ijepa = acc.build_config("ijepa_vitb16", "bfloat16")
  assert (ijepa.method, ijepa.model.name, ijepa.model.patch_size,
          ijepa.views.image_size) == ("ijepa", "vit_base", 16, 224)
  dinov2 = acc.build_config("dinov2_vits14", "bfloat16")
  assert (dinov2.method, dinov2.model.name, dinov2.model.patch_size) == ("ibot", "vit_small", 14)
  assert (dinov2.views.local.image_size, dinov2.views.local.num) == (98, 8)
  assert dinov2.loss.centering == "sinkhorn_knopp" and dinov2.loss.koleo_weight > 0
  quick = acc.build_config("dinov2_vits14", "float32", quick=True)
  assert quick.batch_size == 8 * n and quick.method == "ibot"
  with pytest.raises(ValueError, match="unknown model"):
    acc.build_config("nope", "float32")


def test_accelerator_table_shows_errors_in_their_row():
  acc = _accelerator()
  rows = [{"bench_model": "simclr_r18", "dtype": "bfloat16", "devices": "1 x NVIDIA H200",
           "platform": "gpu", "jax_version": "0.10.2", "per_device_batch": 512,
           "images_per_s_per_device": 30000.0, "step_s_median": 0.01707, "mfu": 0.4123,
           "peak_memory_mb": 2048.0, "compiled_temp_mb": 512.0, "compiled_argument_mb": 512.0,
           "compile_s": 12.3, "peak_basis": "NVIDIA H200 SXM bf16 dense (...)"},
          {"bench_model": "byol_r50", "dtype": "bfloat16",
           "error": "exit 1: RESOURCE_EXHAUSTED: Out of memory | allocating"}]
  table = acc.markdown(rows)
  assert "1 x NVIDIA H200" in table and "jax 0.10.2" in table
  lines = [l for l in table.splitlines() if l.startswith("|")]
  assert len(lines) == 4
  assert "| simclr_r18 | bfloat16 | 512 | 30000.0 | 17.1 | 41.2% |" in lines[2]
  assert "| 1.00 |" in lines[2]  # XLA temp + argument: 1024 MiB
  assert "RESOURCE_EXHAUSTED: Out of memory / allocating" in lines[3]


@pytest.mark.slow
def test_accelerator_quick_runs_end_to_end(tmp_path):
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if "device_count" not in f)  # one CPU device, as on one GPU
  env = dict(os.environ, XLA_FLAGS=flags, XDG_CACHE_HOME=str(tmp_path), JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
  p = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "accelerator.py"),
                      "--quick", "--models=simclr_r18", "--dtypes=float32", "--steps=1"],
                     cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
  assert len(rows) == 1, p.stdout
  row = rows[0]
  assert not row.get("error"), row
  assert row["bench_model"] == "simclr_r18" and row["dtype"] == "float32"
  assert row["images_per_s_per_device"] > 0 and 0 < row["mfu"] < 1
  assert row["tensorflow_imported"] is False and row["torch_imported"] is False
  assert "| simclr_r18 | float32 | 8 |" in p.stdout
