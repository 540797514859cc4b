"""The CPU table of README "Performance": jssl's ResNet-18 train step under every
XLA:CPU setting next to PyTorch eager, fp32 and bf16, on the machine in hand.

Each row is a fresh process of `benchmarks/conv_cpu.py` (XLA reads its flags when
the backend starts, so every flag set needs its own process), run one after the
other: ResNet-18 CIFAR stem, `--batch` images at 32 px, forward + backward + SGD
momentum, median of `--steps` timed steps after a warm-up step.

  python benchmarks/cpu_vs_torch.py --torch_python=/path/to/venv-with-torch/bin/python

PyTorch is kept out of jssl's environment: give a Python that has it
(`pip install torch==2.13.0 numpy` in a separate venv); without one its rows are
skipped. Prints a markdown table (images/s and the ratio to PyTorch eager
channels-last in the same dtype) and the CPU model (`lscpu`).
"""
import argparse
import os
import re
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
YNN = "--xla_cpu_experimental_ynn_fusion_type"
JAX_ROWS = [  # (label, conv impls, extra XLA flag)
    ("jssl, tuned (what jssl.main runs)", "auto", None),
    ("jssl, jaxlib default flags", "matmul,xla", ""),
    ("jssl, YNNPACK convolutions off", "matmul,xla", f"{YNN}=-individual_convolution"),
    ("jssl, YNNPACK fusions off", "matmul,xla", f"{YNN}="),
]


def cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    m = re.search(r"Model name:\s*(.*)", out)
    flags = re.search(r"Flags:\s*(.*)", out)
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
           if flags and f in flags.group(1).split()]
    return f"{m.group(1).strip() if m else '?'} ({', '.join(isa)}), {os.cpu_count()} cores"
  except OSError:
    return "?"


def run(python, args, env_flag):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  if env_flag is not None:  # a fixed flag set: no tuning
    env["XLA_FLAGS"] = env_flag
    env["JSSL_CPU_TUNING"] = "off"
  r = subprocess.run([python, os.path.join(REPO, "benchmarks", "conv_cpu.py"), *args],
                     env=env, capture_output=True, text=True)
  rows = []
  for line in r.stdout.splitlines():
    m = re.match(r"(.*?): +([\d.]+) img/s", line)
    if m and "fwd+bwd+sgd" in m.group(1):
      rows.append((m.group(1), float(m.group(2))))
    elif line.startswith("jssl XLA:CPU"):
      rows.append((line, None))
  if r.returncode != 0:
    rows.append((f"failed: {(r.stderr.strip().splitlines() or ['?'])[-1][:200]}", None))
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--torch_python", default="", help="a Python with torch installed")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--skip_flags", action="store_true",
                 help="only the tuned jssl row (no per-flag rows)")
  a = p.parse_args()
  common = [f"--batch={a.batch}", f"--steps={a.steps}", "--sgd"]
  table = []  # (dtype, label, img/s)
  for dtype in a.dtypes.split(","):
    if a.torch_python:
      for label, v in run(a.torch_python, ["--framework=torch", f"--dtype={dtype}", *common],
                          None):
        table.append((dtype, label, v))
        print(dtype, label, v, flush=True)
    rows = JAX_ROWS[:1] if (a.skip_flags or dtype == "bfloat16") else JAX_ROWS
    for label, impls, flag in rows:
      for what, v in run(sys.executable, ["--framework=jax", f"--dtype={dtype}",
                                          f"--impls={impls}", *common], flag):
        impl = re.search(r"conv_impl=(\w+)", what)
        table.append((dtype, f"{label}" + (f", conv_impl={impl.group(1)}" if impl else
                                           f": {what}"), v))
        print(dtype, table[-1][1], v, flush=True)
  print(f"\nCPU: {cpu_model()}; batch {a.batch}, {a.steps} timed steps, ResNet-18 CIFAR, "
        "forward + backward + SGD\n")
  print("| dtype | implementation | images/s | vs PyTorch channels-last |\n|---|---|---|---|")
  for dtype, label, v in table:
    ref = [x for d, l, x in table if d == dtype and "channels_last=True" in l and x]
    ratio = f"{v / ref[0]:.2f}" if (v and ref) else ""
    print(f"| {dtype} | {label} | {'' if v is None else f'{v:.1f}'} | {ratio} |")


if __name__ == "__main__":
  main()
