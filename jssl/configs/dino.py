r"""DINO (Caron et al. 2021) run book.

Presets (`--config=dino:<preset>`):

quickstart  Offline digits (1347 train / 450 test, 16 px), half-width
            ResNet-10, 150 steps of 256 images: 2 global crops (scale 0.4-1)
            + 2 local crops of 8 px, LARS lr 0.3, teacher momentum 0.99 -> 1,
            DINO head 512-512-128 -> 256 with BN, tau_t 0.02 (see the
            comments in get_config for why these differ from the paper):
              python -m jssl.main --config=dino:quickstart \
                  --workdir=/tmp/jssl_dino
            Measured (2 shared CPU cores): see README "Zoo" table.

cifar10     DINO ResNet-18 (CIFAR stem) on TFDS `cifar10`, solo-learn's
            CIFAR recipe (vturrisi/solo-learn `scripts/pretrain/cifar/
            dino.yaml` + `augmentations/asymmetric.yaml`, `bash_files/
            pretrain/cifar/dino.sh`, `solo/methods/dino.py` defaults): batch
            256, LARS (eta 0.02, momentum 0.9, bias/BN excluded) lr 0.3 x
            B/256, weight decay 1e-6, 10 warm-up epochs + cosine, 1000
            epochs, head 2048-2048-256 -> 4096 prototypes (no BN, last layer
            normalised and frozen for 1 epoch), teacher momentum 0.9995 -> 1,
            tau_s 0.1, tau_t 0.04 -> 0.07 over 50 epochs, no gradient
            clipping. Views: 2 crops of 32 px (scale 0.08-1), flip, jitter
            (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2, no blur, solarize
            p = 0 / 0.2; no local crops.
            Expected: 89.52% top-1 (solo-learn README, CIFAR-10, ResNet-18,
            1000 epochs, online linear classifier).
            Data: TFDS `cifar10` in --config.data.data_dir (TFDS default
            ~/tensorflow_datasets). With a network, TFDS downloads and
            prepares it once: `tfds build cifar10 --data_dir=DATA_DIR`.
            Offline, register a local copy of the archive instead:
              python -m jssl.data.offline --dataset=cifar10 \
                  --archive=PATH/TO/cifar-10-binary.tar.gz \
                  --data_dir=DATA_DIR
            CPU smoke check (2 cores):
              python -m jssl.main --config=dino:cifar10 \
                  --workdir=/tmp/dino_c10 --config.total_steps=20 \
                  --config.batch_size=128
            One GPU:
              python -m jssl.main --config=dino:cifar10 \
                  --workdir=DIR --config.data.data_dir=DATA_DIR \
                  --config.model.dtype=bfloat16
            Time per epoch: not measured. With 2 crops a DINO step costs
            about 4/3 of a SimCLR step (student forward+backward on both
            crops plus a teacher forward), so expect ~4/3 x SimCLR's measured
            figure (README "Performance"); each local crop adds its pixel
            share of a global crop.

imagenet    DINO ViT-S/16 on TFDS `imagenet2012` (manual download), the
            official main_dino.py defaults (facebookresearch/dino) with the
            README's "boosting DINO performance" settings: 300 epochs,
            teacher temperature 0.04 -> 0.07 over 30 epochs, last layer not
            normalised. AdamW lr 5e-4 x B/256 (10 warm-up epochs, cosine to
            1e-6), weight decay cosine 0.04 -> 0.4, per-tensor gradient clip
            3.0, last layer frozen for 1 epoch, head 2048-2048-256 -> 65536,
            teacher momentum 0.996 -> 1, tau_s 0.1, center momentum 0.9,
            batch 1024 (16 GPUs x 64). Views (DataAugmentationDINO): 2 global
            224 px crops at scale (0.4, 1) (blur p 1.0 / 0.1, solarize p 0 /
            0.2) + 8 local 96 px crops at (0.05, 0.4) (blur p 0.5); flip,
            jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2. Deviation: sin-cos
            position embeddings (jssl's ViT) instead of DINO's interpolated
            learned table.
            Expected: 73.3% k-NN / ~76.1% linear top-1 (dino README, this
            300-epoch recipe). The 100-epoch vanilla run (--config.total_epochs
            =100 --config.loss.teacher_temp=0.04 --config.head.norm_last_layer
            =True, batch 512): 69.3% k-NN / ~73.8% linear (README). The
            released ViT-S/16 checkpoint (paper Table 2, README table): 74.5%
            k-NN / 77.0% linear, with a longer schedule.
            GPU pod / TPU v3-32 or larger; launch/README.md (same config;
            --config.batch_size is the GLOBAL batch, the lr scales with it).
            Per device (80 GB GPU, --config.model.dtype=bfloat16): 128 images
            (x 2 global + 8 local crops), remat 'none': 1024 = 8 devices x
            128. Estimate: XLA's compile-time memory analysis of this train
            step for one device's share, compiled on CPU from abstract shapes
            (jax 0.10.2; tests/models/test_vit_accelerator.py, by hand):
            temp 51,881,885,952 + arguments 770,109,468 bytes = 52.7 GB at
            128; 1.12 GB temp at 2, so ~0.40 GB per image and ~180 images at
            most in 80 GB. XLA:CPU keeps bf16 intermediates in float32 in
            places and does not reuse buffers as GPU schedulers do, so read it
            as an upper bound. --config.model.remat=block frees the encoder
            activations kept for the backward pass (jax's vjp residuals:
            ~205 MB per image 'none' -> ~10 MB 'block') for larger per-device
            batches; XLA:CPU's analysis does not show that saving.

cifar10_vit DINO ViT-S/4 on CIFAR-10 (32 px: 8x8 tokens), main_dino.py's ViT
            recipe scaled down: 2 global crops of 32 px at (0.4, 1) + 6 local
            crops of 16 px at (0.05, 0.4), no blur, solarize p 0 / 0.2, AdamW
            as imagenet, batch 256, 300 epochs, head -> 4096. No published
            reference figure and not measured: treat as a starting point.

smoke       Tiny model, 6 steps: for tests (seconds on CPU).

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "cifar10_vit", "smoke")

# DataAugmentationDINO: global crop 1 always blurred, global crop 2 blurred
# with p=0.1 and solarised with p=0.2.
_DINO_PER_VIEW = ({"blur.p": 1.0, "solarize.p": 0.0},
                  {"blur.p": 0.1, "solarize.p": 0.2})
_CIFAR_PER_VIEW = recipes.CIFAR_ASYMMETRIC_PER_VIEW


def _dino_adamw() -> ml_collections.ConfigDict:
  """main_dino.py's optimiser: AdamW, lr 5e-4 x B/256 after 10 linear warm-up
  epochs, cosine to min_lr 1e-6; weight decay cosine 0.04 -> 0.4 on weights
  (not biases / norms); clipping is per tensor (config.dino.clip_grad)."""
  return ml_collections.ConfigDict(dict(
      name="adamw", base_lr=5e-4, lr_scaling="linear", weight_decay=0.04,
      weight_decay_end=0.4, warmup_epochs=10.0, min_lr=1e-6, b1=0.9,
      b2=0.999, grad_clip_norm=0.0, layer_decay=1.0))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "dino")
  c = runbook.base_config("dino")
  # DINO head (vision_transformer.py DINOHead): num_layers Linear layers
  # D -> hidden_dim -> ... -> bottleneck_dim (GELU between), L2-normalise,
  # weight-normalised Linear -> out_dim (K). norm_last_layer: gain fixed at 1
  # (official default True; its README trains ViT-S with False, which is
  # better but "can make the training unstable").
  c.head = ml_collections.ConfigDict(dict(
      out_dim=65536, hidden_dim=2048, bottleneck_dim=256, num_layers=3,
      use_bn=False, norm_last_layer=True))
  # DINOLoss: tau_s; tau_t warms up linearly from warmup_teacher_temp to
  # teacher_temp over warmup_teacher_temp_epochs (epochs), then constant;
  # center momentum m (eq. 4).
  c.loss = ml_collections.ConfigDict(dict(
      student_temp=0.1, teacher_temp=0.07, warmup_teacher_temp=0.04,
      warmup_teacher_temp_epochs=30.0, center_momentum=0.9))
  # Teacher EMA momentum lambda: cosine base -> final over the run (paper
  # Sec. 3.1: 0.996 -> 1).
  c.ema = ml_collections.ConfigDict(dict(base_momentum=0.996,
                                         final_momentum=1.0))
  # Training tricks of main_dino.py. clip_grad: max gradient norm PER
  # parameter tensor (utils.clip_gradients; 0 = off; official 3.0).
  # freeze_last_layer_epochs: epochs during which the head's last layer is
  # not updated (official 1).
  c.dino = ml_collections.ConfigDict(dict(clip_grad=3.0,
                                          freeze_last_layer_epochs=1.0))
  if preset == "cifar10":
    runbook.solo_cifar10(c, recipes.byol_recipe)
    c.views.per_view = _CIFAR_PER_VIEW
    c.head.update(hidden_dim=2048, bottleneck_dim=256, out_dim=4096)
    c.ema.base_momentum = 0.9995
    # solo-learn's DINO defaults of the run behind its README figure
    # (bash_files/pretrain/cifar/dino.sh with the argparse-era defaults).
    c.loss.update(teacher_temp=0.07, warmup_teacher_temp=0.04,
                  warmup_teacher_temp_epochs=50.0)
    c.dino.clip_grad = 0.0
    # solo-learn LARS: lr 0.3 x B/256, wd 1e-6, eta 0.02 (its clip_lr is not
    # implemented by jssl's LARS).
    c.optimizer.update(name="lars", base_lr=0.3, weight_decay=1e-6,
                       trust_coefficient=0.02, warmup_epochs=10.0)
  elif preset == "imagenet":
    # main_dino.py: 2 global crops of 224 px at scale (0.4, 1), 8 local crops
    # of 96 px at (0.05, 0.4) with blur p=0.5 (DataAugmentationDINO).
    runbook.imagenet_data(c, recipes.byol_recipe)
    c.views.per_view = _DINO_PER_VIEW
    c.views.crop.scale = (0.4, 1.0)
    recipes.add_local_crops(c.views, num=8, image_size=96, scale=(0.05, 0.4),
                          overrides={"blur.p": 0.5, "solarize.p": 0.0})
    c.batch_size = 1024             # official: 16 GPUs x 64; 80 GB: 8 x 128 (docstring)
    c.total_epochs = 300.0
    # ViT-S/16. DINO's learned position table is interpolated for the 96 px
    # crops; jssl's ViT has a fixed sin-cos table per resolution instead.
    c.model = ml_collections.ConfigDict(dict(
        name="vit_small", patch_size=16, pos_embed="sincos", pool="cls",
        dtype="float32", attention_impl="auto", remat="none",
        drop_path_rate=0.1))      # student only (main_dino.py --drop_path_rate)
    c.head.update(out_dim=65536, norm_last_layer=False)  # README "boosting"
    # eval_linear.py for ViT-S: the last 4 blocks' normed CLS tokens (jssl.models.vit).
    c.eval.linear_feature = "cls_last4"
    c.loss.update(teacher_temp=0.07, warmup_teacher_temp=0.04,
                  warmup_teacher_temp_epochs=30.0)
    c.ema.base_momentum = 0.996
    c.optimizer = _dino_adamw()
  elif preset == "cifar10_vit":
    # No published DINO CIFAR-10 ViT recipe: main_dino.py's ViT defaults
    # scaled to 32 px (patch 4: 8x8 tokens; local crops 16 px: 4x4 tokens).
    runbook.cifar10_data(c, recipes.byol_recipe)
    c.views.per_view = _CIFAR_PER_VIEW
    c.views.crop.scale = (0.4, 1.0)
    recipes.add_local_crops(c.views, num=6, image_size=16, scale=(0.05, 0.4),
                          overrides={"blur.p": 0.0, "solarize.p": 0.0})
    c.batch_size = 256
    c.total_epochs = 300.0
    c.model = ml_collections.ConfigDict(dict(
        name="vit_small", patch_size=4, pos_embed="sincos", pool="cls",
        dtype="float32", drop_path_rate=0.1))   # student only, main_dino.py default
    c.head.update(out_dim=4096)
    c.eval.linear_feature = "cls_last4"    # DINO's ViT-S linear probe input
    c.optimizer = _dino_adamw()
  else:  # quickstart, smoke
    runbook.digits_data(c, recipes.byol_recipe, smoke=preset == "smoke")
    c.views.per_view = _CIFAR_PER_VIEW  # 16 px: no blur, as on CIFAR
    # DINO's global crop scale with multi-crop: (0.4, 1). Measured: with the
    # SimCLR range (0.08, 1) the 8x8 digits are cropped beyond recognition,
    # the teacher's targets carry no image identity and DINO collapses to
    # the uniform output within 50 steps.
    c.views.crop.scale = (0.4, 1.0)
    # 2 local crops of 8 px (half the side, as 96 / 224 px), no blur.
    recipes.add_local_crops(c.views, num=2, image_size=8, scale=(0.1, 0.4),
                          overrides={"blur.p": 0.0, "solarize.p": 0.0})
    # BN in the head (DINO's `use_bn_in_head`, offered for convnets): at init
    # the small ResNet's features are short (|h| ~ 1.4), and through three
    # std-0.02 layers the bottleneck is ~0.06 long, so its bias dominates
    # after a few updates and every image maps to one direction (uniform
    # collapse, measured: loss stuck at log K). BN keeps it O(1).
    c.head.update(hidden_dim=512, bottleneck_dim=128, out_dim=256,
                  use_bn=True)
    c.ema.base_momentum = 0.99   # 200 steps: the teacher must keep up
    # Sharper teacher than DINO's 0.04 and fewer prototypes than its 65536.
    # Measured on this preset (60 steps, batch 128): at tau_t 0.04 the
    # teacher entropy climbs to log K (uniform collapse) with K = 256 ...
    # 2048, any lr, with or without local crops; at tau_t 0.02, K = 256 it
    # stays low and the kNN accuracy of the teacher rises above random init.
    c.loss.update(teacher_temp=0.02, warmup_teacher_temp=0.02,
                  warmup_teacher_temp_epochs=0.0)
    c.optimizer.update(name="lars", base_lr=0.3, weight_decay=1e-5,
                       trust_coefficient=0.02, warmup_epochs=2.0)
    if preset == "smoke":
      c.head.update(hidden_dim=32, bottleneck_dim=16, out_dim=64)
    else:
      # 150 steps, not 200: with 2 local crops a step costs ~1.4 SimCLR
      # steps, and 200 took 6 min on 2 idle cores (over the quickstart's
      # 5-minute budget).
      c.total_steps = 150
  c.views.num_views = 2         # the 2 global crops the teacher sees
  return c
