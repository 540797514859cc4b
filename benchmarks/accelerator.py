r"""The accelerator table: images/s per device, MFU, memory and compile time of
jssl's reference recipes, fp32 and bf16, on the devices present.

  python benchmarks/accelerator.py                  # all models, bf16 then fp32
  python benchmarks/accelerator.py --models=simclr_r18,mae_vitb16 --dtypes=bfloat16
  python benchmarks/accelerator.py --quick          # tiny shapes: a CPU dry run (~2-3 min)
  python benchmarks/accelerator.py --table_from=LOG # the table again from a log's JSON lines

Models (run books from `jssl.configs`, with the overrides below):

  simclr_r18     simclr:cifar10, ResNet-18 CIFAR stem, 32 px, 2 views, global batch 512
  byol_r50       byol:imagenet, ResNet-50, 224 px, 2 views, batch 256 per device
  dino_vits16    dino:imagenet, ViT-S/16, 2 x 224 px + 8 x 96 px (the run book's
                 multi-crop), batch 128 per device
  mae_vitb16     mae:imagenet, ViT-B/16, 224 px, 75% of patches masked, batch 256
                 per device
  siglip_vitb16  siglip:vit_b16 (or siglip:b16), ViT-B/16 + B text tower, 224 px,
                 batch 256 per device; the SentencePiece file is replaced by the
                 byte tokenizer with the vocabulary size kept at 32000 (only
                 the token ids' range matters here). Skipped with a note when
                 the installed jssl has no siglip run book.
  ijepa_vitb16   ijepa:imagenet, ViT-B/16 context and EMA target encoders, the
                 narrow predictor, 1 context + 4 target blocks per image (the
                 multi-block sampler inside the step), 224 px, batch 128 per
                 device (the paper's 2048 over 16 A100s)
  dinov2_vits14  ibot:dinov2, DINOv2's ViT-S/14 recipe: 2 x 224 px + 8 x 98 px
                 crops, block-wise masked global crops, iBOT patch loss, KoLeo,
                 Sinkhorn-Knopp teacher, drop-path 0.3, batch 128 per device

`--quick` shrinks the widths and images; for ijepa_vitb16 and dinov2_vits14 it
takes the run book's `smoke` preset (tiny ViT, token grids the mask samplers
fit) with the same method and loss terms.

Needs jax (with CUDA on a GPU) and jssl; no TensorFlow, torch, dataset or
network: each step is fed a synthetic uint8 batch of the recipe's shapes
(`jssl.benchmark.synthetic_batch`; host-cropping recipes get their host crops
as arrays) straight into the jitted train step, so the input pipeline is not
run. The compute dtype is `model.dtype` (and `text.model.dtype`); parameters
and optimiser state stay as the method makes them.

Each (model, dtype) runs in its own subprocess, bf16 for every model first
(the headline figures), then fp32: a failure (OOM, compile error) or a
`--timeout_s` overrun costs only that row, which shows the error; the device
allocator's peak is then per row; the whole script stops starting rows when
`--budget_s` would be exceeded. Each row is printed as it finishes: a JSON line
on stdout (the `jssl.benchmark` keys plus `bench_model`; `grep '^{'`) and a
progress line on stderr; the markdown table comes at the end. MFU divides
XLA's FLOP count of the compiled step by the device's dense peak for the dtype
(`jssl.perf`: for fp32 on NVIDIA the TF32 tensor-core peak, as XLA runs fp32
dots and convolutions on TF32 at JAX's default matmul precision).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Callable, Optional

# The children's environment, before the parent pins itself to the CPU below.
_CHILD_ENV = dict(os.environ)

MODELS = ("simclr_r18", "byol_r50", "dino_vits16", "mae_vitb16", "siglip_vitb16",
          "ijepa_vitb16", "dinov2_vits14")
DTYPES = ("bfloat16", "float32")


# --- the configs ----------------------------------------------------------------------


def _shrink_resnet(c) -> None:
  # XLA:CPU compile time grows with the block count (ResNet-50 at width 1/8:
  # 60 s on 2 cores), so the dry run uses the smallest variant, same stem.
  c.model.update(name="resnet_tiny", width_multiplier=1.0)


def _shrink_vit(c) -> None:
  c.model.update(name="vit_test", patch_size=8)  # 2 blocks of width 32


def _shrink_heads(c) -> None:
  for name in ("projector", "predictor"):
    if name in c:
      c[name].hidden_dims = (64,)
      c[name].out_dim = 32
  if "head" in c:  # DINO
    c.head.update(hidden_dim=64, bottleneck_dim=32, out_dim=256)


def _siglip_preset() -> Optional[str]:
  from jssl import configs  # pylint: disable=import-outside-toplevel
  if "siglip" not in configs.names():
    return None
  known = configs.presets("siglip")
  return next((p for p in ("vit_b16", "b16") if p in known), None)


def build_config(model: str, dtype: str, *, quick: bool = False,
                 per_device_batch: Optional[int] = None):
  """The locked run-book config of `model` at `dtype`, batch set for the local
  device count; `quick`: tiny widths, 32 px, 8 images (a CPU dry run)."""
  import jax  # pylint: disable=import-outside-toplevel
  from jssl import configs  # pylint: disable=import-outside-toplevel
  n = jax.device_count()
  if model == "simclr_r18":
    c = configs.get("simclr", "cifar10")
    batch = 512
    if quick:
      _shrink_resnet(c)
  elif model == "byol_r50":
    c = configs.get("byol", "imagenet")
    batch = 256 * n
    if quick:
      _shrink_resnet(c)
      c.views.image_size = 32
  elif model == "dino_vits16":
    c = configs.get("dino", "imagenet")
    batch = 128 * n
    if quick:
      _shrink_vit(c)
      c.views.image_size = 32
      c.views.local.update(image_size=16, num=2)
  elif model == "mae_vitb16":
    c = configs.get("mae", "imagenet")
    batch = 256 * n
    if c.loss.mask_ratio != 0.75:
      raise ValueError(f"mae:imagenet masks {c.loss.mask_ratio}, expected 0.75")
    if quick:
      _shrink_vit(c)
      c.views.image_size = 32
      c.decoder.update(width=32, depth=1, num_heads=2)
  elif model == "siglip_vitb16":
    preset = _siglip_preset()
    if preset is None:
      raise LookupError("no siglip run book with a ViT-B/16 preset in this jssl")
    c = configs.get("siglip", preset)
    batch = 256 * n
    # No SentencePiece file here: byte ids in a 32k table (SigLIP's vocabulary).
    c.text.tokenizer.name = "bytes"
    c.text.tokenizer.path = ""
    if "vocab_size" in c.text.model and not c.text.model.vocab_size:
      c.text.model.vocab_size = 32000
    if quick:
      _shrink_vit(c)
      c.views.image_size = 32
      for k, v in (("name", "tiny"), ("width", 32), ("num_heads", 2), ("depth", 1)):
        if k in c.text.model:
          c.text.model[k] = v
      if "embed_dim" in c:
        c.embed_dim = 32
  elif model in ("ijepa_vitb16", "dinov2_vits14"):
    name, preset = {"ijepa_vitb16": ("ijepa", "imagenet"),
                    "dinov2_vits14": ("ibot", "dinov2")}[model]
    c = configs.get(name, "smoke" if quick else preset)
    batch = 128 * n
  else:
    raise ValueError(f"unknown model {model!r}; models: {', '.join(MODELS)}")
  if quick:
    if model not in ("ijepa_vitb16", "dinov2_vits14"):  # their smoke presets: tiny heads
      _shrink_heads(c)
    batch = 8 * n
  if per_device_batch:
    batch = per_device_batch * n
  c.batch_size = batch
  c.model.dtype = dtype
  if "text" in c and "dtype" in c.text.model:
    c.text.model.dtype = dtype
  return c


# --- one row (child process) ------------------------------------------------------------


def run_one(model: str, dtype: str, *, steps: int, warmup: int, quick: bool,
            per_device_batch: Optional[int]) -> dict:
  import sys as _sys  # pylint: disable=import-outside-toplevel,reimported
  from jssl import benchmark  # pylint: disable=import-outside-toplevel
  config = build_config(model, dtype, quick=quick, per_device_batch=per_device_batch)
  out = benchmark.benchmark_step(config, steps=steps, warmup=warmup)
  out["config"] = f"{model} ({'quick' if quick else 'full'})"
  out["tensorflow_imported"] = "tensorflow" in _sys.modules
  out["torch_imported"] = "torch" in _sys.modules
  return out


# --- the table --------------------------------------------------------------------------

_COLUMNS = (("model", "bench_model"), ("dtype", "dtype"), ("batch/dev", "per_device_batch"),
            ("img/s/dev", "images_per_s_per_device"), ("step ms", "step_ms"),
            ("MFU", "mfu"), ("MFU (HLO)", "mfu_hlo"), ("TFLOP/s/dev", "tflops_per_s_per_device"),
            ("peak mem GB", "peak_memory_gb"), ("XLA temp+arg GB", "xla_gb"),
            ("compile s", "compile_s"), ("note", "note"))


def _cell(row: dict, key: str) -> str:
  if key == "step_ms":
    v = row.get("step_s_median")
    return "" if v is None else f"{v * 1e3:.1f}"
  if key in ("mfu", "mfu_hlo"):
    v = row.get(key)
    return "" if v is None else f"{100 * v:.1f}%"
  if key == "peak_memory_gb":
    v = row.get("peak_memory_mb")
    return "" if v is None else f"{v / 1024:.2f}"
  if key == "xla_gb":
    t, a = row.get("compiled_temp_mb"), row.get("compiled_argument_mb")
    return "" if t is None or a is None else f"{(t + a) / 1024:.2f}"
  if key == "note":
    return str(row.get("error") or row.get("note") or "").replace("|", "/")[:160]
  v = row.get(key)
  return "" if v is None else str(v)


def markdown(rows: list[dict]) -> str:
  """The rows as one markdown table, a header line naming the hardware first."""
  ok = [r for r in rows if r.get("devices")]
  head = ""
  if ok:
    r = ok[0]
    head = (f"Hardware: {r['devices']} ({r.get('platform')}), jax {r.get('jax_version')}; "
            f"MFU peak basis (bf16 / fp32): "
            + " / ".join(sorted({str(x.get('peak_basis')).split(' (')[0] for x in ok}))
            + "\n\n")
  lines = ["| " + " | ".join(c for c, _ in _COLUMNS) + " |",
           "|" + "|".join("---" for _ in _COLUMNS) + "|"]
  for r in rows:
    lines.append("| " + " | ".join(_cell(r, k) for _, k in _COLUMNS) + " |")
  return head + "\n".join(lines)


def _error_line(stderr: str) -> str:
  lines = [l.strip() for l in stderr.splitlines() if l.strip()]
  for l in reversed(lines):  # the exception line, not a log or a traceback frame
    if ("Error" in l or "error" in l or "Exception" in l) and not l.startswith("File "):
      return l[:300]
  return lines[-1][:300] if lines else "no output"


def run_all(models, dtypes, *, steps: int, warmup: int, quick: bool, timeout_s: float,
            budget_s: float, per_device_batch: Optional[int],
            emit: Callable[[dict], None]) -> list[dict]:
  """Runs each (model, dtype) in a subprocess, dtype-major; returns the rows."""
  t_start = time.monotonic()
  rows = []
  env = dict(_CHILD_ENV, PYTHONUNBUFFERED="1")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  if quick:
    # A CPU dry run: LLVM's optimisation passes cost more than they save on
    # tiny programs (as in tests/conftest.py); YNN fusions off as there.
    flags = env.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
      flags += " --xla_backend_optimization_level=0"
    if "ynn_fusion_type" not in flags:
      flags += " --xla_cpu_experimental_ynn_fusion_type="
    env["XLA_FLAGS"] = flags.strip()
  script = os.path.abspath(__file__)
  for dtype in dtypes:
    for model in models:
      row = {"bench_model": model, "dtype": dtype}
      left = budget_s - (time.monotonic() - t_start)
      if model == "siglip_vitb16" and _siglip_preset() is None:
        row["error"] = "skipped: no 'siglip' run book with a ViT-B/16 preset installed"
      elif left < 20:
        row["error"] = f"skipped: --budget_s={budget_s:.0f} spent"
      else:
        cmd = [sys.executable, script, f"--_child={model}:{dtype}", f"--steps={steps}",
               f"--warmup={warmup}"] + (["--quick"] if quick else []) + (
                   [f"--per_device_batch={per_device_batch}"] if per_device_batch else [])
        t0 = time.monotonic()
        try:
          proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                timeout=min(timeout_s, left - 5))
          got = [l for l in proc.stdout.splitlines() if l.startswith("{")]
          if proc.returncode == 0 and got:
            row.update(json.loads(got[-1]))
          else:
            row["error"] = f"exit {proc.returncode}: {_error_line(proc.stderr)}"
        except subprocess.TimeoutExpired:
          row["error"] = f"timeout after {time.monotonic() - t0:.0f} s"
        row["wall_s"] = round(time.monotonic() - t0, 1)
      rows.append(row)
      emit(row)
  return rows


def _emit(row: dict) -> None:
  from jssl.benchmark import json_line  # pylint: disable=import-outside-toplevel
  print(json_line(row), flush=True)
  if row.get("error"):
    msg = row["error"]
  else:
    mfu = row.get("mfu")
    msg = (f"{row.get('images_per_s_per_device')} img/s/dev, MFU "
           f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%'}, compile {row.get('compile_s')} s, "
           f"peak {row.get('peak_memory_mb')} MB")
  print(f"[accelerator] {row['bench_model']} {row['dtype']}: {msg} "
        f"({row.get('wall_s', 0)} s)", file=sys.stderr, flush=True)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default=",".join(MODELS),
                 help=f"comma-separated subset of {','.join(MODELS)}")
  p.add_argument("--dtypes", default=",".join(DTYPES), help="model.dtype values, in order")
  p.add_argument("--steps", type=int, default=10, help="timed steps per row (median)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
  p.add_argument("--quick", action="store_true",
                 help="tiny widths, 32 px, 8 images per device: a CPU dry run")
  p.add_argument("--per_device_batch", type=int, default=None,
                 help="override every model's batch per device")
  p.add_argument("--timeout_s", type=float, default=240.0, help="limit per row")
  p.add_argument("--budget_s", type=float, default=540.0,
                 help="no row starts once this much wall time is spent")
  p.add_argument("--table_from", default=None,
                 help="print the markdown table of the JSON lines in this file and exit")
  p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)

  if args.table_from:
    with open(args.table_from, encoding="utf-8") as f:
      rows = [json.loads(l) for l in f if l.startswith("{")]
    print(markdown(rows))
    return 0
  if args._child:  # pylint: disable=protected-access
    model, dtype = args._child.split(":")  # pylint: disable=protected-access
    import jax  # pylint: disable=import-outside-toplevel
    from jssl.benchmark import json_line  # pylint: disable=import-outside-toplevel
    out = run_one(model, dtype, steps=args.steps, warmup=args.warmup, quick=args.quick,
                  per_device_batch=args.per_device_batch)
    out.update(bench_model=model, jax_version=jax.__version__)
    print(json_line(out), flush=True)
    return 0

  # The parent only reads run books and prints: it must not take the
  # accelerator (JAX preallocates most of a GPU's memory) from its children.
  os.environ["JAX_PLATFORMS"] = "cpu"
  models = [m for m in args.models.split(",") if m]
  unknown = sorted(set(models) - set(MODELS))
  if unknown:
    p.error(f"unknown --models {unknown}; models: {', '.join(MODELS)}")
  dtypes = [d for d in args.dtypes.split(",") if d]
  bad = sorted(set(dtypes) - {"float32", "bfloat16", "float16"})
  if bad:
    p.error(f"unknown --dtypes {bad}; use float32, bfloat16 (float16)")
  rows = run_all(models, dtypes, steps=args.steps, warmup=args.warmup, quick=args.quick,
                 timeout_s=args.timeout_s, budget_s=args.budget_s,
                 per_device_batch=args.per_device_batch, emit=_emit)
  print()
  print(markdown(rows), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
