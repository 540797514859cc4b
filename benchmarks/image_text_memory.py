"""Per-device peak memory of SigLIP and CLIP value_and_grad: global vs all-gather vs ring.

    python benchmarks/image_text_memory.py [--quick] [--batches 4096 16384 32768]
        [--devices 8] [--per-device 2048] [--dim 768] [--chunk 1024]
        [--ring-chunks 1024 256]

Compile only (no accelerator needed, nothing is run): the number is XLA's buffer
assignment of the compiled per-device SPMD program, `compiled.memory_analysis()`
temp + argument + output bytes, i.e. what each device's allocator must hold at once.
Devices are simulated CPU devices (--xla_force_host_platform_device_count, set below
before jax is imported). Implementations, all float32, embedding dim 768:

  global    the plain loss jitted on global [B, D] arrays sharded over the data axis;
            XLA's sharding propagation partitions it.
  gathered  under shard_map: SigLIP `siglip_chunked` (all-gathers the texts, scans
            --chunk image rows under jax.checkpoint); CLIP `clip(..., axis_name)`
            (all-gathers both modalities, [b, B] logits per direction).
  ring      under shard_map: `siglip_ring` / `clip_ring` with chunk_size=None (texts
            rotate with ppermute, custom VJP, one [b, b] block per ring step),
            O(b * D + b^2) per device.
  ring/c    the same with chunk_size=c (--ring-chunks): each ring step walks the local
            images in row chunks of c, [c, b] blocks, O(b * D + c * b) per device.

Two sweeps: the global batch at a fixed device count (--batches, --devices), and the
device count 2, 4, 8 at a fixed per-device batch (--per-device). Prints a markdown table
and one JSON line per row (prefix `json: `).

Caveat: on CPU the buffer assignment is XLA:CPU's (its own fusion decisions and a
sequential schedule); a GPU/TPU compile of the same program assigns buffers differently
(other fusions, async collectives double-buffered), so read the numbers as the scaling
of each implementation, not as an accelerator's exact footprint.
"""
import argparse
import json
import os
import sys
import time

_N_SIM = 8
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={_N_SIM}").strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jssl import losses  # noqa: E402

D_, R_ = P("data"), P()


def _cases(chunk, ring_chunks):
  """name -> (loss, impl, fn(axis_name or None), n scalars)."""
  ring_c = [(f"ring/{c}", c) for c in ring_chunks]
  cases = [
      ("siglip", "global", lambda ax: losses.siglip, 2),
      ("siglip", "gathered", lambda ax: lambda a, c, t, b: losses.siglip_chunked(
          a, c, t, b, chunk_size=chunk, axis_name=ax), 2),
      ("siglip", "ring", lambda ax: lambda a, c, t, b: losses.siglip_ring(
          a, c, t, b, axis_name=ax, chunk_size=None), 2),
  ] + [
      ("siglip", impl, lambda ax, rc=rc: lambda a, c, t, b: losses.siglip_ring(
          a, c, t, b, axis_name=ax, chunk_size=rc), 2) for impl, rc in ring_c
  ] + [
      ("clip", "global", lambda ax: losses.clip, 1),
      ("clip", "gathered", lambda ax: lambda a, c, s: losses.clip(a, c, s, axis_name=ax), 1),
      ("clip", "ring", lambda ax: lambda a, c, s: losses.clip_ring(
          a, c, s, axis_name=ax, chunk_size=None), 1),
  ] + [
      ("clip", impl, lambda ax, rc=rc: lambda a, c, s: losses.clip_ring(
          a, c, s, axis_name=ax, chunk_size=rc), 1) for impl, rc in ring_c
  ]
  return cases


def measure(impl, make_fn, n_scalars, n_dev, batch, dim):
  mesh = Mesh(np.array(jax.devices()[:n_dev]), ("data",))
  emb = jax.ShapeDtypeStruct((batch, dim), np.float32, sharding=NamedSharding(mesh, D_))
  sc = jax.ShapeDtypeStruct((), np.float32, sharding=NamedSharding(mesh, R_))
  args = (emb, emb) + (sc,) * n_scalars
  if impl == "global":
    fn = make_fn(None)
  else:
    fn = jax.shard_map(make_fn("data"), mesh=mesh, in_specs=(D_, D_) + (R_,) * n_scalars,
                       out_specs=R_)
  vg = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(args)))))
  t0 = time.perf_counter()
  compiled = vg.lower(*args).compile()
  secs = time.perf_counter() - t0
  ma = compiled.memory_analysis()
  text = compiled.as_text()
  return {
      "temp": ma.temp_size_in_bytes, "arguments": ma.argument_size_in_bytes,
      "outputs": ma.output_size_in_bytes,
      "peak": ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes,
      "compile_s": round(secs, 1),
      "all_gather": "all-gather" in text, "collective_permute": "collective-permute" in text,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true",
                 help="small run: global batches 1024 4096, per-device 256, D 256")
  p.add_argument("--batches", type=int, nargs="+", default=[4096, 16384, 32768])
  p.add_argument("--devices", type=int, default=8, choices=[1, 2, 4, 8])
  p.add_argument("--per-device", type=int, default=2048,
                 help="per-device batch of the device-count sweep (2, 4, 8 devices)")
  p.add_argument("--dim", type=int, default=768)
  p.add_argument("--chunk", type=int, default=1024, help="siglip_chunked chunk_size")
  p.add_argument("--ring-chunks", type=int, nargs="*", default=[1024, 256],
                 help="chunk_size values of the chunked ring rows (ring/c)")
  p.add_argument("--only", choices=["siglip", "clip"], default=None)
  a = p.parse_args(argv)
  if a.quick:
    a.batches, a.per_device, a.dim = [1024, 4096], 256, 256
  runs = [(a.devices, b) for b in a.batches]
  runs += [(n, n * a.per_device) for n in (2, 4, 8) if (n, n * a.per_device) not in runs]
  print(f"jax {jax.__version__}, {_N_SIM} simulated {jax.devices()[0].platform} devices, "
        f"D={a.dim}, float32, value_and_grad, siglip_chunked chunk={a.chunk}, "
        f"ring chunks {a.ring_chunks}")
  rows = []
  for n_dev, batch in runs:
    if batch % n_dev:
      sys.exit(f"global batch {batch} is not divisible by {n_dev} devices")
    for loss, impl, make_fn, n_sc in _cases(a.chunk, a.ring_chunks):
      if a.only and loss != a.only:
        continue
      r = measure(impl, make_fn, n_sc, n_dev, batch, a.dim)
      row = {"loss": loss, "impl": impl, "devices": n_dev, "global_batch": batch,
             "per_device_batch": batch // n_dev, "dim": a.dim, **r}
      rows.append(row)
      print("json: " + json.dumps(row), flush=True)
  mib = lambda x: f"{x / 2**20:,.1f}"
  print()
  print("| loss | impl | devices | B global | b/device | peak MiB/device | temp MiB | "
        "args MiB | out MiB | all-gather | compile s |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['loss']} | {r['impl']} | {r['devices']} | {r['global_batch']} | "
          f"{r['per_device_batch']} | {mib(r['peak'])} | {mib(r['temp'])} | "
          f"{mib(r['arguments'])} | {mib(r['outputs'])} | "
          f"{'yes' if r['all_gather'] else 'no'} | {r['compile_s']} |")


if __name__ == "__main__":
  main()
