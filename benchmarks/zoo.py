"""Zoo validation: every method's `:quickstart` preset, one after the other.

Runs `python -m jssl.main --config=configs/<method>.py:quickstart` for each
method in a fresh workdir and prints one table: steps, wall time, training
images/s, final loss, the online probe's last train-batch top-1, and linear /
kNN top-1 of the pretrained encoder next to the same encoder at its random
initialisation (same seed). "CPU" is the run's CPU time (user + system, all
threads); on a shared machine, CPU / cores estimates the idle wall time. A method
passes when its linear probe beats the random-init encoder by at least
`--min-linear-gain` points and its kNN does not lose.

A benchmark, not a test: it takes minutes per method on a 2-core CPU.

Usage:
  python benchmarks/zoo.py                          # every configs/*.py
  python benchmarks/zoo.py --methods simclr byol    # a subset
  python benchmarks/zoo.py --markdown zoo.md --json zoo.json
Exit status 1 when a method fails to run or does not beat random init.
"""
import argparse
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

COLUMNS = ("method", "steps", "wall", "CPU", "img/s", "final loss", "online probe",
           "linear", "linear (random)", "kNN", "kNN (random)", "verdict")


def available() -> list[str]:
  return sorted(os.path.basename(p)[:-3]
                for p in glob.glob(os.path.join(REPO, "configs", "*.py")))


def last_logged(workdir: str, key: str):
  """The last value of `key` in the run's metrics.jsonl (None if never)."""
  value = None
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if row.get(key) is not None:
        value = row[key]
  return value


def run_one(method: str, root: str, preset: str, extra: list[str],
            min_gain: float) -> dict:
  workdir = os.path.join(root, method)
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, "-m", "jssl.main",
         f"--config=configs/{method}.py:{preset}", f"--workdir={workdir}",
         *extra]
  t0 = time.time()
  r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  wall = time.time() - t0
  r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
  row = {"method": method, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
         "command": " ".join(cmd)}
  if proc.returncode != 0:
    row.update(ok=False, error=(proc.stderr or proc.stdout)[-2000:])
    return row
  with open(os.path.join(workdir, "results.json")) as f:
    res = json.load(f)
  pre, rnd = res["pretrained"], res["random_init"]
  gain = 100 * (pre["linear_top1"] - rnd["linear_top1"])
  knn_gain = 100 * (pre["knn_top1"] - rnd["knn_top1"])
  row.update(steps=res["steps"], images_per_sec=res["images_per_sec"],
             final_loss=last_logged(workdir, "loss"),
             online_probe=last_logged(workdir, "online_probe/top1"),
             pretrained=pre, random_init=rnd,
             linear_gain=round(gain, 1), knn_gain=round(knn_gain, 1),
             # Rounded: accuracies are float32 ratios of counts, so +9 of 450
             # test images (2.0 points) came out as 1.99999.
             ok=round(gain, 3) >= min_gain and round(knn_gain, 3) >= 0.0)
  return row


def _pct(x):
  return f"{100 * x:.1f}%"


def table(rows: list[dict]) -> str:
  lines = ["| " + " | ".join(COLUMNS) + " |",
           "|" + "---|" * len(COLUMNS)]
  for r in rows:
    if "pretrained" not in r:
      cells = [r["method"], "-", f"{r['wall_s']:.0f}s", f"{r['cpu_s']:.0f}s"] + ["-"] * 7 + [
          "FAILED to run"]
    else:
      p, q = r["pretrained"], r["random_init"]
      loss = r["final_loss"]
      cells = [r["method"], str(r["steps"]), f"{r['wall_s']:.0f}s", f"{r['cpu_s']:.0f}s",
               f"{r['images_per_sec']:.0f}" if r["images_per_sec"] else "-",
               f"{loss:.4g}" if loss is not None else "-",
               _pct(r["online_probe"]) if r.get("online_probe") is not None else "-",
               _pct(p["linear_top1"]), _pct(q["linear_top1"]),
               _pct(p["knn_top1"]), _pct(q["knn_top1"]),
               "learns" if r["ok"] else "does NOT beat random init"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--methods", nargs="*", default=None,
                  help=f"default: all of {available()}")
  ap.add_argument("--preset", default="quickstart")
  ap.add_argument("--workdir", default="/tmp/jssl_zoo")
  ap.add_argument("--min-linear-gain", type=float, default=2.0,
                  help="points of linear top-1 over random init to pass")
  ap.add_argument("--markdown", default=None)
  ap.add_argument("--json", default=None)
  ap.add_argument("extra", nargs="*",
                  help="extra flags for every run, after --, e.g. "
                       "-- --config.total_steps=50")
  args = ap.parse_args()
  names = args.methods or available()
  unknown = sorted(set(names) - set(available()))
  if unknown:
    ap.error(f"no config for {unknown}; available: {available()}")
  rows = []
  for name in names:
    print(f"[zoo] {name} ...", flush=True)
    row = run_one(name, args.workdir, args.preset, args.extra,
                  args.min_linear_gain)
    rows.append(row)
    if "error" in row:
      print(f"[zoo] {name} FAILED:\n{row['error']}", flush=True)
    else:
      print(f"[zoo] {name}: linear {_pct(row['pretrained']['linear_top1'])} "
            f"(random {_pct(row['random_init']['linear_top1'])}), kNN "
            f"{_pct(row['pretrained']['knn_top1'])} (random "
            f"{_pct(row['random_init']['knn_top1'])}), {row['wall_s']:.0f}s "
            f"(CPU {row['cpu_s']:.0f}s)",
            flush=True)
  md = table(rows)
  print(md)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(md + "\n")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)
  sys.exit(0 if all(r.get("ok") for r in rows) else 1)


if __name__ == "__main__":
  main()
