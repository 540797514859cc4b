"""Accelerator readiness of the ViT recipes, checked on CPU (issue 16, part 4).

The ImageNet presets' train steps (DINO ViT-S/16 multi-crop, MAE ViT-B/16,
MoCo v3 ViT-S/16) are traced and compiled here for ONE device's share of the
global batch, from abstract shapes only (`jax.eval_shape` of the state, a
`jax.ShapeDtypeStruct` batch; nothing runs), in bfloat16 with the presets'
`remat`, so the first accelerator run is not the first time they compile. The
full-size figures behind the presets' per-device batch are in their run books
(`per_device_memory` below printed them; XLA:CPU's compile-time memory analysis).

What remat changes is tested as what jax keeps between the forward and the
backward pass (the residuals of `jax.vjp`): XLA:CPU's `memory_analysis()` does
NOT show the saving -- measured on a ViT-S/16 forward+backward (float32,
jax 0.10.2), temp_size_in_bytes:
  224 px, batch 4:  none 526,536,144   block 584,627,664   dots 584,627,664
  128 px, batch 8:  none 274,957,632   block 313,285,984   dots 313,296,352
(XLA:CPU's scheduler does not place the recomputation next to its use, so its
buffers overlap the forward's; GPU/TPU schedulers are memory-aware).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import models


def _residual_bytes(cfg, x):
  """Bytes jax keeps from the forward for the backward pass (vjp residuals),
  parameters included; abstract (eval_shape), nothing runs."""
  model = models.make_encoder(cfg)
  v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  f = lambda v, x: jnp.sum(model.apply(v, x, train=True)["tokens"].astype(jnp.float32))  # noqa: E731
  res = jax.eval_shape(lambda v, x: jax.vjp(f, v, x)[1], v, x)
  return sum(int(np.prod(r.shape)) * r.dtype.itemsize for r in jax.tree.leaves(res))


def test_remat_keeps_less_for_the_backward_pass():
  # ViT-S/16 at 128 px (8 x 8 + 1 tokens), batch 8, float32.
  x = jax.ShapeDtypeStruct((8, 128, 128, 3), jnp.float32)
  cfg = {"name": "vit_small", "patch_size": 16}
  params = 21_660_672 - 196 * 384   # ViT-S/16 (test_vit); the sin-cos table is no parameter
  got = {r: _residual_bytes(dict(cfg, remat=r), x) for r in ("none", "block", "dots")}
  assert got["block"] < got["dots"] < got["none"]
  # 'block' keeps each block's input ([8, 65, 384] float32 each) and the
  # weights (+ the patch-embedding input); 'none' keeps every activation:
  # ~3.4 x the activations of 'dots'.
  blocks_in = 12 * 8 * 65 * 384 * 4
  assert got["block"] - 4 * params < 1.5 * blocks_in
  assert got["none"] - 4 * params > 20 * blocks_in
  # The CPU compile of a remat step works (the memory analysis is reported).
  model = models.make_encoder(dict(cfg, remat="block", depth=2))
  v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  g = jax.jit(jax.grad(lambda v, x: jnp.sum(model.apply(v, x, train=True)["tokens"])))
  assert g.lower(v, x).compile().memory_analysis().temp_size_in_bytes > 0


def per_device_step(config, per_device_batch: int, num_devices: int = 1):
  """Lowers and compiles `config`'s train step for ONE device's share: a 1-device
  mesh and a global batch of `per_device_batch`, abstract state and batch
  (`num_devices` > 1: a data-parallel mesh of that many devices, global batch
  `num_devices * per_device_batch`). Returns `(compiled, seconds to lower +
  compile)`."""
  from jssl import benchmark, methods, schedules, sharding as shd, step as step_lib  # pylint: disable=import-outside-toplevel
  from jssl.data import device_views  # pylint: disable=import-outside-toplevel
  config = config.copy_and_resolve_references()
  mesh = shd.make_mesh(config.mesh, devices=jax.devices()[:num_devices])
  per_device_batch *= num_devices   # the global batch from here on
  # The batch's shapes from the benchmark's synthetic batch at batch 1.
  with config.unlocked():
    config.batch_size = 1
  one = benchmark.synthetic_batch(config, np.random.default_rng(0))
  with config.unlocked():
    config.batch_size = int(per_device_batch)
  batch = {k: jax.ShapeDtypeStruct((per_device_batch,) + a.shape[1:], a.dtype)
           for k, a in one.items()}
  total = 1000
  method = methods.make(config, methods.TrainLength(total, 100.0), mesh=mesh)
  tx, schedule = schedules.make_optimizer(config.optimizer, global_batch=per_device_batch,
                                          total_steps=total, steps_per_epoch=100,
                                          frozen=method.frozen)
  view_fn = device_views.make_view_fn(config.views, config.views.num_views)
  init_fn, state_sh = step_lib.make_init(method, tx, view_fn, mesh, batch, seed=0)
  train_step = step_lib.make_train_step(method, tx, view_fn, schedule, mesh, state_sh)
  state = jax.eval_shape(init_fn)
  t0 = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  return compiled, time.perf_counter() - t0


def _preset(module, preset, **model):
  from jssl import configs  # pylint: disable=import-outside-toplevel
  del configs
  import importlib  # pylint: disable=import-outside-toplevel
  c = importlib.import_module(f"jssl.configs.{module}").get_config(preset)
  with c.unlocked():
    c.model.update(model)
  return c


def _reduced(module, preset):
  """The preset at a reduced, same-structure shape: the same method, views
  (count, multi-crop), heads and optimiser, bf16 and its remat, but 32 px
  crops (2 x 2 patches of 16; DINO's local crops 16 px) and 2 blocks."""
  c = _preset(module, preset, dtype="bfloat16", depth=2)
  with c.unlocked():
    c.views.image_size = 32
    if c.views.get("local") is not None and c.views.local.num:
      c.views.local.image_size = 16
    if "decoder" in c:
      c.decoder.depth = 1
  return c


# Slow: each train step takes ~60 s to compile on 2 shared CPU cores, even at
# 32 px and 2 blocks -- the compile time is in the on-device views, heads and
# optimiser, not the ViT (the full 224 px DINO step took 98 s).
@pytest.mark.slow
@pytest.mark.parametrize("module,preset,remat", [("dino", "imagenet", None),
                                                 ("mae", "imagenet", "block"),
                                                 ("mocov3", "imagenet_vit", None)])
def test_imagenet_vit_presets_compile_per_device_and_sharded(module, preset, remat):
  c = _reduced(module, preset)
  # The presets' choices (run books): remat 'none', attention 'auto'; the
  # global batch splits evenly over 8 devices.
  assert c.model.remat == "none" and c.model.attention_impl == "auto"
  assert c.batch_size % 8 == 0
  if remat is not None:
    with c.unlocked():
      c.model.remat = remat
  compiled, secs = per_device_step(c, 4)
  ma = compiled.memory_analysis()
  assert ma.temp_size_in_bytes > 0 and ma.argument_size_in_bytes > 0
  assert secs < 600, f"compile took {secs:.0f} s"
  # The same step over the 8 CPU devices (data parallel): shardings propagate.
  compiled8, _ = per_device_step(c, 2, num_devices=8)
  batch_sharding = jax.tree.leaves(compiled8.input_shardings[0][1])[0]
  assert len(batch_sharding.device_set) == 8 and not batch_sharding.is_fully_replicated


if __name__ == "__main__":
  # The full-size figures of the run books (by hand; minutes on 2 CPU cores):
  #   python tests/models/test_vit_accelerator.py dino imagenet 64 block
  import sys
  mod, preset, b, remat = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
  cfg = _preset(mod, preset, dtype="bfloat16", remat=remat)
  compiled, secs = per_device_step(cfg, b)
  ma = compiled.memory_analysis()
  print(f"{mod}:{preset} per-device batch {b} remat {remat} bf16: compile {secs:.0f} s, "
        f"temp {ma.temp_size_in_bytes:,} argument {ma.argument_size_in_bytes:,} "
        f"output {ma.output_size_in_bytes:,} alias {ma.alias_size_in_bytes:,} bytes")
