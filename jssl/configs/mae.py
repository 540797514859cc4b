r"""MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners") run book.

One view per image, crop + flip only (MAE `main_pretrain.py`:
RandomResizedCrop(scale=(0.2, 1.0)) + RandomHorizontalFlip, no colour jitter);
75% of the patches masked per example; ViT encoder on the visible patches,
light decoder, normalised-pixel MSE on the masked patches. AdamW
(betas 0.9, 0.95), lr = base_lr x B / 256, cosine with warm-up, weight decay
0.05 on every >= 2-D parameter (MAE `add_weight_decay`: biases and LayerNorm
excluded, the cls and mask tokens decayed). The evaluated / exported encoder
gives the cls token after the final LayerNorm (`model.pool='cls'`), as the
paper's linear probe (`--cls_token`).

Presets (`--config=mae:<preset>`):

quickstart  scikit-learn's digits at 16 px (offline), ViT of width 128, depth 4,
            patch 4 (16 patches, 4 visible), decoder 128 wide x 2 blocks,
            800 steps of 64 images (MAE gains from many updates: 200 steps of
            256 barely beat the random-init ViT, whose linear probe is already
            ~94% on digits).
              python -m jssl.main --config=mae:quickstart \
                  --workdir=/tmp/jssl_mae_quickstart
            Measured (2 idle CPU cores, README "Zoo" table): 177 s wall, linear
            top-1 96.7% (random-init ViT 94.2%), kNN 73.6% (random 53.1%);
            final loss 0.49 (norm-pix MSE; predicting 0 gives 0.96).
            Three seeds with jssl.cpu_tuning (benchmarks/zoo.py --methods mae
            --seeds 0 1 2, 160-192 CPU s each): linear +2.4 / +2.7 / +1.1,
            kNN +20.7 / +14.0 / +11.6; per test image the trained ViT alone is
            right on 21 / 25 / 16, the random one alone on 10 / 13 / 11;
            pooled 62 vs 34, one-sided exact McNemar p = 0.0028: learns.

cifar10     ViT-Small/4 (32 px -> 8 x 8 = 64 patches, 16 visible) on TFDS
            `cifar10`, solo-learn's CIFAR MAE recipe (vturrisi/solo-learn
            `scripts/pretrain/cifar/mae.yaml` + `augmentations/reconstruction.yaml`):
            decoder 512 wide, 8 blocks, 16 heads; mask ratio 0.75,
            norm_pix_loss; AdamW lr 2e-4 x B/256, betas (0.9, 0.95), weight
            decay 0.05, batch 256, 1000 epochs, solo-learn's default 10 warm-up
            epochs; views: crop + flip only, with MAE's crop scale (0.2, 1)
            (solo-learn's reconstruction.yaml uses (0.08, 1)).
            Expected accuracy: not published -- solo-learn's README reports no
            CIFAR-10 MAE number; treat the first run as the reference.
            Data: TFDS `cifar10`, prepared as in the simclr run book.
            CPU smoke check only:
              python -m jssl.main --config=mae:cifar10 \
                  --workdir=/tmp/mae_c10 --config.total_steps=20 \
                  --config.batch_size=64
            Time per epoch: not measured. MAE's encoder sees 1/4 of the tokens
            and there is one view, so a step costs well under a two-view
            method's of the same backbone (He et al. report 3x or more
            speed-up over an encoder on all patches, Sec. 3); measure with
            `python -m jssl.benchmark --config=configs/mae.py:cifar10`.
            One GPU:  python -m jssl.main --config=mae:cifar10 \
                          --workdir=DIR --config.data.data_dir=DATA_DIR \
                          --config.model.dtype=bfloat16
            TPU pod slice / multi-host GPU: launch/README.md (same config;
            --config.batch_size is the GLOBAL batch, lr scales with it).

imagenet    ViT-B/16 on TFDS `imagenet2012` (manual download), the paper's
            recipe (App. A.1, Table 8): batch 4096, AdamW base lr 1.5e-4
            (lr = 1.5e-4 x 4096/256 = 2.4e-3), betas (0.9, 0.95), weight decay
            0.05, 40 warm-up epochs, cosine; decoder 512 x 8 blocks x 16 heads;
            mask 0.75; norm_pix_loss. 800 epochs here (the paper's ablation
            default); --config.total_epochs=1600 for the released models.
            Expected: 68.0% top-1 linear probe, ViT-B, 1600 epochs, normalised
            pixels (paper; facebookresearch/mae FINETUNE.md "Linear Probing"
            table, paper TF/TPU column). TPU v3-64 or larger (paper: 128 TPU
            v3 cores); time per epoch not measured here.
            Per device (80 GB GPU, --config.model.dtype=bfloat16): 256 images,
            remat 'none': 4096 = 16 devices x 256. Estimate: XLA's
            compile-time memory analysis of this train step for one device's
            share, compiled on CPU from abstract shapes (jax 0.10.2;
            tests/models/test_vit_accelerator.py, by hand): temp
            50,451,214,400 + arguments 1,378,243,604 bytes = 51.8 GB at 256;
            512 does not fit (100.9 GB temp, even with remat 'block' on
            XLA:CPU, whose analysis does not show remat's saving). XLA:CPU
            keeps bf16 intermediates in float32 in places: an upper bound.
            --config.model.remat=block|dots rematerialises the encoder's
            blocks (not the decoder's).

smoke       Test-only ViT (width 32, 2 blocks), batch 32, 6 steps: seconds.

Every field can be overridden with --config.<field>=<value>; the config is
locked, so a misspelled field fails with an error naming it.
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "smoke")


def mae_recipe(image_size: int, *, mean, std) -> ml_collections.ConfigDict:
  """MAE's pre-training views: random resized crop (scale 0.2-1) + flip only."""
  r = recipes.simclr_recipe(image_size, mean=mean, std=std, blur=False)
  r.crop.scale = (0.2, 1.0)       # MAE main_pretrain.py: RandomResizedCrop(scale=(0.2, 1.0))
  r.color_jitter.p = 0.0          # MAE uses no colour augmentation
  r.grayscale.p = 0.0
  return r


def _vit(name: str, patch_size: int, **overrides) -> ml_collections.ConfigDict:
  # A ViT config replaces base_config's ResNet model block wholesale: ViT
  # encoders reject the ResNet keys (stem, width_multiplier, conv_impl).
  return ml_collections.ConfigDict(dict(
      name=name, patch_size=patch_size, dtype="float32",
      pos_embed="sincos",         # fixed 2-D sin-cos (MAE)
      pool="cls",                 # 'pre_logits' = cls token (paper's linear probe)
      **overrides))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "mae")
  c = runbook.base_config("mae")
  c.loss = ml_collections.ConfigDict(dict(
      mask_ratio=0.75,            # fraction of patches removed (paper: 0.75)
      norm_pix_loss=True))        # per-patch normalised pixel targets (paper Table 1d)
  # Decoder: width (tokens), depth (blocks), heads; paper 512 x 8 x 16.
  c.decoder = ml_collections.ConfigDict(dict(width=512, depth=8, num_heads=16,
                                             mlp_ratio=4.0))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_lr=1.5e-4, lr_scaling="linear",   # lr = base_lr x B / 256
      weight_decay=0.05, b1=0.9, b2=0.95, warmup_epochs=40.0, min_lr=0.0,
      grad_clip_norm=0.0, layer_decay=1.0))
  if preset == "cifar10":
    runbook.cifar10_data(c, mae_recipe)
    c.model = _vit("vit_small", 4)
    c.batch_size = 256
    c.total_epochs = 1000.0
    # solo-learn CIFAR: lr 2e-4 x B/256, 10 warm-up epochs (its default).
    c.optimizer.update(base_lr=2e-4, warmup_epochs=10.0)
  elif preset == "imagenet":
    runbook.imagenet_data(c, mae_recipe)
    c.model = _vit("vit_base", 16, attention_impl="auto", remat="none")
    c.batch_size = 4096           # 80 GB: 16 devices x 256 (docstring)
    c.total_epochs = 800.0
  else:  # quickstart, smoke
    runbook.digits_data(c, mae_recipe, smoke=preset == "smoke")
    if preset == "smoke":
      c.model = _vit("vit_test", 4)
      c.decoder.update(width=32, depth=1, num_heads=2)
      c.optimizer.update(base_lr=1e-3, warmup_epochs=1.0)
    else:
      # 16 px / patch 4 = 16 patches (4 visible); a 4-block ViT of width 128,
      # ~0.24 CPU-s per step of 64 images.
      c.model = _vit("vit_small", 4, width=128, depth=4, num_heads=4)
      c.decoder.update(width=128, depth=2, num_heads=4)
      # Tuned on this preset (helper sweep, same 51k images seen each): more,
      # smaller steps learn far more than 200 x 256 (linear 96.7% vs 94.7%,
      # kNN 73.6% vs 51.3%); peak lr 1e-3 beat 5e-4 and 1.5e-3 (with a 64-wide
      # decoder); patch 2 made the random-init ViT itself 98.9% (linear).
      c.batch_size = 64
      c.total_steps = 800           # ~38 epochs of the 1347 training digits
      c.log_every_steps = 100
      c.checkpoint.every_steps = 400
      # lr = 4e-3 x 64 / 256 = 1e-3 peak; 10 warm-up epochs (~210 steps).
      c.optimizer.update(base_lr=4e-3, warmup_epochs=10.0)
  c.views.num_views = 1           # MAE reconstructs one view per image
  return c
