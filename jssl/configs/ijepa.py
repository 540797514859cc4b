r"""I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture") run book.

One view per image: random resized crop only (ijepa `configs/in1k_vith14_ep300.yaml`:
crop_scale (0.3, 1.0), no flip, no colour distortion, no blur). Multi-block
masking (4 target blocks, scale 0.15-0.2, aspect 0.75-1.5; 1 context block,
scale 0.85-1.0, square, targets removed; `jssl.masks.multiblock`); context
encoder on the context tokens, a narrow ViT predictor, EMA target encoder on
the full image; smooth-L1 on layer-normed target tokens. AdamW (betas 0.9,
0.999: torch defaults) lr 1e-3 at batch 2048 with 40 warm-up epochs and a
cosine to 1e-6, weight decay cosine 0.04 -> 0.4 (on >= 2-D parameters:
ijepa excludes biases and 1-D parameters), target momentum linear 0.996 ->
1.0. The evaluated / exported encoder is the TARGET encoder, its
average-pooled last-layer patch tokens (`model.pool='gap'`), as the paper's
linear probe.

Presets (`--config=ijepa:<preset>`):

quickstart  scikit-learn's digits at 16 px (offline), ViT of width 128, depth 4,
            patch 4 (4 x 4 = 16 patches), predictor 64 wide x 2 blocks, 800
            steps of 64 images, AdamW lr 1e-3 (5 warm-up epochs), the paper's
            weight-decay and momentum schedules. Masks adapted to the 4 x 4
            grid: ONE 2 x 2 target block (target_scale 0.25-0.3) instead of
            the paper's 4 blocks of 15-20% (1-2 tokens here), so the context
            (a 3 x 3 block minus the target, min_keep 0) keeps ~5 tokens.
              python -m jssl.main --config=ijepa:quickstart \
                  --workdir=/tmp/jssl_ijepa_quickstart
            Measured (benchmarks/zoo.py, 2 CPU cores SHARED with other runs,
            load ~10, so the wall time is not the idle figure): 783 s, 100
            img/s, final loss 0.049, linear top-1 94.9% (random-init ViT
            92.4%), kNN 53.6% (random 52.9%): passed the old 2-point rule; the kNN margin is
            small (I-JEPA's pooled features stay low-rank here: vendi ~2).
            Three seeds, idle (benchmarks/zoo.py --methods ijepa --seeds 0 1
            2, 188-229 CPU s each): linear +2.4 / -0.4 / -0.9, kNN +0.7 /
            +7.3 / +1.1; per test image 22 / 12 / 12 wins against 11 / 14 /
            16 losses, pooled 46 vs 41, p = 0.33: by the zoo's paired test
            this quickstart does NOT beat its random-init ViT on the linear
            probe (seed 0's +2.4 passed the old 2-point rule).
            A step costs ~0.7 of the paper-mask step (one target: fewer
            predictor tokens; 100 vs 70 img/s run side by side), so it stays
            under the 5-minute budget on 2 idle cores.
            Tried on the same machine (one run each, 800 x 64 unless said):
            paper masks (4 targets of 1-2 tokens): linear 95.3%, kNN 52.7%
            (fails by 0.2); same with ema.base_momentum 0.99: linear 95.1%,
            kNN 46.2%; with 0.999: linear 93.3% (under the zoo's 2-point
            gain), kNN 53.8%; 24 px (6 x 6 grid, targets 2 x 2 / 2 x 3,
            context ~9.5 tokens), 320 steps (same cost), momentum 0.98, 2
            warm-up epochs, min_keep 3: collapsed (vendi 1.03, online probe
            at chance by step 200; stopped).

cifar10     ViT-Small/4 (32 px -> 8 x 8 = 64 patches) on TFDS `cifar10`,
            predictor 192 wide x 6 blocks x 6 heads, batch 256, 300 epochs,
            AdamW lr 1e-3 (not batch-scaled), 15 warm-up epochs, the paper's
            masks and weight-decay / momentum schedules.
            No published CIFAR-10 I-JEPA recipe: these are the ImageNet
            settings scaled to the small grid (min_keep 4 instead of 10 on
            a 64-token grid); treat the first run as the reference.
            CPU smoke check only:
              python -m jssl.main --config=ijepa:cifar10 \
                  --workdir=/tmp/ijepa_c10 --config.total_steps=20 \
                  --config.batch_size=64

imagenet    ViT-B/16 on TFDS `imagenet2012` (manual download): the paper's
            ViT-H/14 recipe (ijepa `configs/in1k_vith14_ep300.yaml`) on the
            largest jssl ViT: batch 2048, AdamW lr 1e-3 (no batch scaling,
            the paper's absolute value at 2048), 40 warm-up epochs, cosine to
            1e-6, weight decay 0.04 -> 0.4, momentum 0.996 -> 1.0, 300 epochs;
            predictor depth 12, width 384, 12 heads (the encoder's, as ijepa);
            masks as above with min_keep 10; crop scale (0.3, 1.0).
            Expected: the paper reports 72.9% linear top-1 for ViT-B/16 at 600
            epochs (Table 1) and 77.3% for ViT-H/14 at 300 epochs; ViT-B/16 at
            300 epochs is not reported (set --config.total_epochs=600 to
            compare). TPU pod slice / multi-host GPU: launch/README.md.

smoke       Test-only ViT (width 32, 2 blocks, patch 4: a 4 x 4 grid, 2
            target blocks of 1-2 tokens), batch 32, 6 steps: seconds.

Every field can be overridden with --config.<field>=<value>; the config is
locked, so a misspelled field fails with an error naming it.
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "smoke")


def ijepa_recipe(image_size: int, *, mean, std) -> ml_collections.ConfigDict:
  """I-JEPA's one view: random resized crop, scale (0.3, 1.0), nothing else."""
  r = recipes.simclr_recipe(image_size, mean=mean, std=std, blur=False)
  r.crop.scale = (0.3, 1.0)       # ijepa configs: crop_scale [0.3, 1.0]
  r.flip.p = 0.0                  # use_horizontal_flip: false
  r.color_jitter.p = 0.0          # use_color_distortion: false
  r.grayscale.p = 0.0
  r.blur.p = 0.0                  # use_gaussian_blur: false
  return r


def _vit(name: str, patch_size: int, **overrides) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name=name, patch_size=patch_size, dtype="float32", pos_embed="sincos",
      pool="gap",                 # average-pooled patch tokens (paper's linear probe)
      **overrides))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "ijepa")
  c = runbook.base_config("ijepa")
  # ijepa configs/in1k_vith14_ep300.yaml `mask` block.
  c.masks = ml_collections.ConfigDict(dict(
      num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
      num_context=1, context_scale=(0.85, 1.0), context_aspect=(1.0, 1.0),
      min_keep=10))
  # Predictor: width, depth (blocks), heads (ijepa: the encoder's heads).
  c.predictor = ml_collections.ConfigDict(dict(width=384, depth=12, num_heads=12,
                                               mlp_ratio=4.0))
  c.ema = ml_collections.ConfigDict(dict(base_momentum=0.996, final_momentum=1.0))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_lr=1e-3, lr_scaling="none", weight_decay=0.04,
      weight_decay_end=0.4, b1=0.9, b2=0.999, warmup_epochs=40.0, min_lr=1e-6,
      grad_clip_norm=0.0))
  if preset == "cifar10":
    runbook.cifar10_data(c, ijepa_recipe)
    c.model = _vit("vit_small", 4)
    c.predictor.update(width=192, depth=6, num_heads=6)
    c.masks.min_keep = 4
    c.batch_size = 256
    c.total_epochs = 300.0
    c.optimizer.update(warmup_epochs=15.0)
  elif preset == "imagenet":
    runbook.imagenet_data(c, ijepa_recipe)
    c.model = _vit("vit_base", 16, attention_impl="auto", remat="none")
    c.batch_size = 2048
    c.total_epochs = 300.0
  else:  # quickstart, smoke
    runbook.digits_data(c, ijepa_recipe, smoke=preset == "smoke")
    if preset == "smoke":
      c.model = _vit("vit_test", 4)
      c.predictor.update(width=32, depth=1, num_heads=2)
      c.masks.update(num_targets=2, min_keep=0)
      c.optimizer.update(warmup_epochs=1.0)
    else:
      # Patch 4: 4 x 4 = 16 patches (patch 2 costs ~4x per step, too slow
      # for the 5-minute budget). One 2 x 2 target (scale 0.25-0.3 of 16
      # tokens -> 4), the context a 3 x 3 block minus it (~5 tokens): the
      # paper's 4 targets of 15-20% are 1-2 tokens each here, leaving ~3.5
      # context tokens, and the kNN of the target encoder did not beat
      # random init (docstring).
      c.model = _vit("vit_small", 4, width=128, depth=4, num_heads=4)
      c.predictor.update(width=64, depth=2, num_heads=4)
      c.masks.update(num_targets=1, target_scale=(0.25, 0.3), min_keep=0)
      c.batch_size = 64
      c.total_steps = 800
      c.log_every_steps = 100
      c.checkpoint.every_steps = 400
      c.optimizer.update(warmup_epochs=5.0)
  c.views.num_views = 1
  return c
