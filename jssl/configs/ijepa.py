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
            patch 4 (4 x 4 = 16 patches), predictor 64 wide x 2 blocks, 1600
            steps of 64 images (76 epochs), AdamW at the paper's lr 1e-3 (5
            warm-up epochs), the paper's weight-decay and momentum schedules.
            Masks adapted to the 4 x 4 grid: ONE 2 x 2 target block
            (target_scale 0.25-0.3) instead of the paper's 4 blocks of 15-20%
            (1-2 tokens here), and blocks placed anywhere they fit
            (masks.placement='uniform'). ijepa's sampler never puts a block on
            the last row or column (corner drawn with an exclusive high,
            blocks capped at grid - 1), so on 4 x 4 its context is always the
            top-left 3 x 3 block, its target always covers token (1, 1), and 7
            of the 16 tokens are never context nor target; with 'uniform' the
            context is the whole grid minus the target (12 tokens), as the
            paper's context scale 0.85-1.0 intends.
              python -m jssl.main --config=ijepa:quickstart \
                  --workdir=/tmp/jssl_ijepa_quickstart
            Measured (README "Zoo", seeds 0, 1, 2, 2-core AMD EPYC, idle,
            ~176 s wall / ~308 s CPU per run): linear 93.8 / 96.4 / 96.7%
            against 92.4 / 94.7 / 94.7% at random init (+1.3 / +1.8 / +2.0;
            per test image 21 / 17 / 17 wins against 15 / 9 / 8 losses,
            pooled 55 vs 32, p = 0.0089: passes the zoo's p < 0.01, narrowly),
            kNN 66.9 / 76.4 / 71.3% against 52.9 / 52.4 / 55.3% (+14.0 /
            +24.0 / +16.0).
            How it was chosen: variants compared on seeds 10 and 11 (random
            init linear 96.4 / 94.0%, kNN 51.6 / 53.8%), then this one run
            once on seeds 0-2. Linear / kNN gain over random init, runs in
            pairs on 2 cores:
              the previous preset (official placement, lr 5e-4): seed 10
                -1.3 / +6.9, seed 11 +1.8 / +10.2;
              uniform, lr 5e-4: seed 10 0.0 / +12.7; with 2 targets -0.2 /
                +13.3;
              uniform, lr 1e-3 (this preset): seed 10 -0.2 / +19.5, seed 11
                +1.3 / +18.2;
              the same with 2 targets: -0.9 / +16.4, +2.7 / +9.6 (CPU ~1.2x);
                3 targets (seed 11): +2.0 / +6.4;
              the same with constant weight decay 0.04 (seed 11): +0.9 /
                +18.9.
            The previous preset (official placement, lr 5e-4), seeds 0-2:
            linear +2.7 / +1.3 / +1.1, pooled 57 / 34, p 0.0103 (failed),
            kNN +8.9 / +8.4 / +6.4. Before it (seed 0 unless said; linear /
            kNN, random init 92.4 / 52.9; official placement):
              800 x 64, lr 1e-3: 94.9 / 53.6; seeds 0-2 pooled linear W/L
                46 / 41, p 0.33;
              the same evaluating the context encoder: 93.6 / 62.9;
              predictor depth 4: 92.0 / 50.0;
              lr 5e-4: 96.0 / 55.6, but seeds 1, 2: 95.3 (94.7) and 94.0
                (94.7);  lr 2.5e-4: 95.6 / 58.0;
              weight decay constant 0.04: 95.1 / 54.9;
              1600 x 64, lr 1e-3: 94.2 / 67.1;  lr 2.5e-4: 93.8 / 60.9;
              800 x 128, lr 1e-3: 95.6 / 54.9;
              1600 x 128, lr 1e-3 (CPU 1.4x): 95.1 / 69.3, seeds 0-2 linear
                +2.7 / +0.9 / +0.9, kNN +16.4 / +15.2 / +9.6, pooled W/L
                53 / 33, p 0.02;  lr 5e-4: 95.1 / 62.9;
              patch 2 (8 x 8 grid, the paper's 4 targets), 300 steps (the
                same CPU time): 97.6 / 54.9 against a random ViT at 96.7 /
                53.3 (RankMe 3.7);
              20 px (5 x 5 grid), 1000 steps, lr 5e-4: 95.8 / 62.2 against
                95.1 / 57.6 at random init;
              the paper's 4 targets of 1-2 tokens (800 x 64): 95.3 / 52.7;
                ema.base_momentum 0.99: 95.1 / 46.2; 0.999: 93.3 / 53.8;
                24 px (6 x 6 grid) with momentum 0.98: collapsed.
            What limits the linear probe: a random ViT's pooled tokens are
            already 92-96% linearly separable on these digits, and the
            target encoder's pooled features are low-rank (RankMe ~20 of 128
            after 1600 steps with uniform placement, ~16 with the official).

cifar10     ViT-Small/4 (32 px -> 8 x 8 = 64 patches) on TFDS `cifar10`,
            predictor 192 wide x 6 blocks x 6 heads, batch 256, 300 epochs,
            AdamW lr 1e-3 (not batch-scaled), 15 warm-up epochs, the paper's
            masks and weight-decay / momentum schedules.
            No published CIFAR-10 I-JEPA recipe: these are the ImageNet
            settings scaled to the small grid (min_keep 4 instead of 10 on
            a 64-token grid); treat the first run as the reference. The
            official block placement is kept: on the 8 x 8 grid it leaves the
            last row and column (15 of 64 tokens) out of every context and
            target, and the context is always the top-left 7 x 7 block;
            --config.masks.placement=uniform is the paper's description, as
            the quickstart uses (not measured at this scale).
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
      min_keep=10, placement="ijepa"))
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
      # tokens -> 4): the paper's 4 targets of 15-20% are 1-2 tokens each
      # here, and with them the target encoder's kNN did not beat random
      # init (docstring).
      c.model = _vit("vit_small", 4, width=128, depth=4, num_heads=4)
      c.predictor.update(width=64, depth=2, num_heads=4)
      # Uniform placement (jssl.masks): the official one never puts a block
      # on the last row or column, and on 4 x 4 its context is always the
      # top-left 3 x 3 block (docstring).
      c.masks.update(num_targets=1, target_scale=(0.25, 0.3), min_keep=0,
                     placement="uniform")
      c.batch_size = 64
      c.total_steps = 1600
      c.log_every_steps = 100
      c.checkpoint.every_steps = 400
      c.optimizer.update(warmup_epochs=5.0)   # the paper's lr 1e-3
  c.views.num_views = 1
  return c
