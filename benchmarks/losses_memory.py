"""Peak memory and time of plain vs chunked NT-Xent and SigLIP (value + gradient), on CPU.

    python benchmarks/losses_memory.py [--batches 4096 16384] [--dim 128] [--chunk 1024]
                                       [--max-run-gib 6]

Peak memory is XLA's compiled buffer assignment for the jitted value_and_grad
(`compiled.memory_analysis()`: temporaries + arguments + outputs), which is what the
device allocator must hold at once. Time is the median wall time of 3 runs after
compilation. A plain variant whose predicted peak exceeds --max-run-gib is compiled
(memory reported) but not run, so the script fits in a laptop's RAM.
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jssl import losses


def measure(fn, args, max_run_gib):
  vg = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(args)))))
  t0 = time.perf_counter()
  compiled = vg.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  ma = compiled.memory_analysis()
  peak = (ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes)
  peak_gib = peak / 2**30
  if peak_gib > max_run_gib:
    return peak_gib, compile_s, None
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(3):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return peak_gib, compile_s, statistics.median(times)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batches", type=int, nargs="+", default=[4096, 16384])
  p.add_argument("--dim", type=int, default=128)
  p.add_argument("--chunk", type=int, default=1024)
  p.add_argument("--max-run-gib", type=float, default=6.0)
  a = p.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, D={a.dim}, "
        f"chunk={a.chunk}, float32, value_and_grad")
  print(f"{'loss':<16}{'B':>7}  {'peak GiB':>9}  {'time s':>8}  {'compile s':>9}")
  for b in a.batches:
    rng = np.random.default_rng(0)
    za = jnp.asarray(rng.standard_normal((b, a.dim)), jnp.float32)
    zb = jnp.asarray(rng.standard_normal((b, a.dim)), jnp.float32)
    t, bias = jnp.asarray(np.log(10.0), jnp.float32), jnp.asarray(-10.0, jnp.float32)
    cases = [
        ("ntxent", lambda x, y: losses.ntxent(x, y, temperature=0.1), (za, zb)),
        ("ntxent_chunked", lambda x, y: losses.ntxent_chunked(
            x, y, temperature=0.1, chunk_size=a.chunk), (za, zb)),
        ("siglip", losses.siglip, (za, zb, t, bias)),
        ("siglip_chunked", lambda x, y, t, c: losses.siglip_chunked(
            x, y, t, c, chunk_size=a.chunk), (za, zb, t, bias)),
    ]
    for name, fn, args in cases:
      peak, comp, secs = measure(fn, args, a.max_run_gib)
      ts = f"{secs:8.2f}" if secs is not None else "  (skip)"
      print(f"{name:<16}{b:>7}  {peak:9.3f}  {ts}  {comp:9.1f}", flush=True)


if __name__ == "__main__":
  main()
