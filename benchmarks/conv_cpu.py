"""ResNet-18 (CIFAR stem) forward+backward speed on CPU: conv_impl 'xla' vs 'matmul'.

Prints images/s of one jitted `jax.value_and_grad` of a simple loss of 'pre_logits'
(BatchNorm in train mode, batch statistics updated) and, with `--sgd`, of the whole
train step with an SGD-momentum update; median over `--steps` timed steps after one
warm-up step, compile time separately. `--layers` also times forward, input gradient
and kernel gradient of every distinct ResNet-18 conv shape.

PyTorch reference (same net: 3x3 stem, no max-pool, basic blocks, SGD step), run with a
Python that has torch (kept out of the jssl venv):

  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
  /tmp/torchvenv/bin/python benchmarks/conv_cpu.py --framework=torch

jssl (the machine is shared and noisy: repeat, compare medians taken back to back):

  /work/venv/bin/python benchmarks/conv_cpu.py --batch=256 --steps=10 --impls=xla,matmul
"""
import argparse
import os
import statistics
import time


def _timeit(fn, steps):
  """Median and best wall time, and median process CPU time (all threads) per call.

  On a shared machine wall time depends on the neighbours; CPU time divided by the
  number of cores estimates the wall time on an idle machine (threads that spin
  while waiting make it an upper bound on the work).
  """
  times, cpu = [], []
  for _ in range(steps):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return statistics.median(times), min(times), statistics.median(cpu)


def _report(label, batch, steps, med, best, cpu, extra=""):
  cores = os.cpu_count() or 1
  print(f"{label}: {batch / med:6.1f} img/s (median {med:.2f}s, best {batch / best:.1f} img/s, "
        f"{steps} steps){extra}; CPU {cpu:.1f}s/step = {batch * cores / cpu:.1f} img/s on "
        f"{cores} idle cores", flush=True)


def bench_jax(args):
  if "auto" in args.impls.split(","):
    # What `python -m jssl.main` runs with: the XLA:CPU flag and conv_impl measured
    # for this CPU (jssl.cpu_tuning), set before JAX starts.
    from jssl import cpu_tuning
    print("jssl " + cpu_tuning.describe(cpu_tuning.apply()), flush=True)
  import jax
  import jax.numpy as jnp
  import optax

  from jssl.models import resnet

  print(f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
  key = jax.random.key(0)
  x = jax.random.normal(key, (args.batch, args.size, args.size, 3), jnp.float32)
  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  for impl in args.impls.split(","):
    model = resnet.resnet("resnet18", stem="cifar", conv_impl=impl, dtype=dtype)
    variables = jax.jit(lambda k: model.init(k, x[:2], train=False))(key)
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = tx.init(params)

    def loss_fn(params, stats, x):
      out, new = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                             mutable=["batch_stats"])
      return jnp.mean(out["pre_logits"] ** 2), new["batch_stats"]

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))

    @jax.jit
    def step(params, stats, opt_state, x):
      (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), stats, opt_state, loss

    fns = {"fwd+bwd": lambda: jax.block_until_ready(grad_fn(params, stats, x))}
    if args.sgd:
      fns["fwd+bwd+sgd"] = lambda: jax.block_until_ready(step(params, stats, opt_state, x))
    for what, fn in fns.items():
      t0 = time.perf_counter()
      fn()  # compile + first run
      first = time.perf_counter() - t0
      fn()  # warm-up
      _report(f"jax conv_impl={impl:6s} {args.dtype} {what:12s} batch {args.batch} {args.size}px",
              args.batch, args.steps, *_timeit(fn, args.steps),
              extra=f"; compile+first step {first:.1f}s")
  if args.layers:
    bench_layers(args)


# Every distinct ResNet-18 CIFAR conv shape: (H, Ci, Co, k, stride, count in the net).
LAYER_SHAPES = [(32, 3, 64, 3, 1, 1), (32, 64, 64, 3, 1, 4), (32, 64, 128, 3, 2, 1),
                (32, 64, 128, 1, 2, 1), (16, 128, 128, 3, 1, 3), (16, 128, 256, 3, 2, 1),
                (16, 128, 256, 1, 2, 1), (8, 256, 256, 3, 1, 3), (8, 256, 512, 3, 2, 1),
                (8, 256, 512, 1, 2, 1), (4, 512, 512, 3, 1, 3)]


def bench_layers(args):
  """Forward / input-grad / kernel-grad time of every ResNet-18 CIFAR conv shape."""
  import jax
  import jax.numpy as jnp

  from jssl.models.conv import conv2d

  b = args.batch
  total = {}
  for h, ci, co, k, s, count in LAYER_SHAPES:
    key = jax.random.key(1)
    x = jax.random.normal(key, (b, h, h, ci))
    w = jax.random.normal(key, (k, k, ci, co)) * 0.05
    pad = ((k // 2, k // 2),) * 2
    dy = jnp.ones((b, h // s, h // s, co))
    row = []
    for impl in args.impls.split(","):
      f = lambda x, w, impl=impl: conv2d(x, w, (s, s), pad, impl)  # noqa: E731
      fwd = jax.jit(f)
      d_in = jax.jit(lambda x, w, dy, f=f: jax.vjp(lambda v: f(v, w), x)[1](dy)[0])
      d_k = jax.jit(lambda x, w, dy, f=f: jax.vjp(lambda v: f(x, v), w)[1](dy)[0])
      for name, fn, a in (("fwd", fwd, (x, w)), ("dx", d_in, (x, w, dy)),
                          ("dk", d_k, (x, w, dy))):
        jax.block_until_ready(fn(*a))
        med, _, _ = _timeit(lambda fn=fn, a=a: jax.block_until_ready(fn(*a)), 3)
        total[(impl, name)] = total.get((impl, name), 0.0) + med * count
        row.append(f"{impl}:{name} {med * 1e3:6.0f}ms")
    print(f"H{h:2d} {ci:3d}->{co:3d} k{k} s{s} x{count}: " + " ".join(row), flush=True)
  print("sum over the net (s): " + " ".join(f"{i}:{n} {t:.2f}" for (i, n), t in total.items()))


def bench_torch_layers(args):
  """The same per-shape table for PyTorch (channels-last, as its fastest step):
  F.conv2d, torch.nn.grad.conv2d_input and conv2d_weight (what autograd calls)."""
  import torch
  import torch.nn.functional as F

  b = args.batch
  total = {}
  for h, ci, co, k, s, count in LAYER_SHAPES:
    x = torch.randn(b, ci, h, h).to(memory_format=torch.channels_last)
    w = (torch.randn(co, ci, k, k) * 0.05).to(memory_format=torch.channels_last)
    y = F.conv2d(x, w, stride=s, padding=k // 2)
    dy = torch.ones_like(y).to(memory_format=torch.channels_last)
    fns = (("fwd", lambda: F.conv2d(x, w, stride=s, padding=k // 2)),
           ("dx", lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=s, padding=k // 2)),
           ("dk", lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=s, padding=k // 2)))
    row = []
    for name, fn in fns:
      fn()
      med, _, _ = _timeit(fn, 3)
      total[name] = total.get(name, 0.0) + med * count
      row.append(f"torch:{name} {med * 1e3:6.0f}ms")
    print(f"H{h:2d} {ci:3d}->{co:3d} k{k} s{s} x{count}: " + " ".join(row), flush=True)
  print("sum over the net (s): " + " ".join(f"torch:{n} {t:.2f}" for n, t in total.items()))


def bench_torch(args):
  try:
    import torch
    from torch import nn
  except ImportError:
    print("torch not importable in this Python; see the module docstring.")
    return

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.b1 = nn.BatchNorm2d(cout)
      self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.b2 = nn.BatchNorm2d(cout)
      self.proj = None
      if stride != 1 or cin != cout:
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                  nn.BatchNorm2d(cout))

    def forward(self, x):
      y = torch.relu(self.b1(self.c1(x)))
      y = self.b2(self.c2(y))
      return torch.relu(y + (x if self.proj is None else self.proj(x)))

  def resnet18_cifar():
    layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for s, cout in enumerate((64, 128, 256, 512)):
      layers += [Block(cin, cout, 1 if s == 0 else 2), Block(cout, cout, 1)]
      cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())

  torch.manual_seed(0)
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
  for channels_last in (False, True):
    net = resnet18_cifar()
    x = torch.randn(args.batch, 3, args.size, args.size)
    if channels_last:
      net = net.to(memory_format=torch.channels_last)
      x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def step():
      opt.zero_grad(set_to_none=True)
      loss = net(x).pow(2).mean()
      loss.backward()
      opt.step()

    if args.dtype == "bfloat16":
      # torch.autocast on CPU: convolutions and matmuls in bfloat16 (oneDNN uses
      # AMX-BF16 / AVX512-BF16 where the CPU has them), BN and the loss in float32.
      plain = step

      def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
          plain()

    step()
    _report(f"torch eager channels_last={channels_last!s:5s} {args.dtype} fwd+bwd+sgd batch "
            f"{args.batch} {args.size}px", args.batch, args.steps, *_timeit(step, args.steps))
  if args.layers:
    bench_torch_layers(args)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--framework", default="jax", choices=["jax", "torch"])
  p.add_argument("--batch", type=int, default=256, help="images per step")
  p.add_argument("--size", type=int, default=32, help="image side, pixels")
  p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
  p.add_argument("--impls", default="xla,matmul",
                 help="conv_impl values to compare; 'auto' applies jssl.cpu_tuning first")
  p.add_argument("--sgd", action="store_true", help="also time the step with an SGD update")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="compute dtype: jssl model.dtype / torch.autocast('cpu', bfloat16)")
  p.add_argument("--layers", action="store_true", help="per-conv-shape fwd / dx / dk times")
  args = p.parse_args()
  bench_torch(args) if args.framework == "torch" else bench_jax(args)


if __name__ == "__main__":
  main()
