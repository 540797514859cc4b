r"""MoCo v3 (Chen, Xie, He 2021) run book.

Presets (`--config=mocov3:<preset>`):

quickstart  Offline digits (1347 train / 450 test, 16 px), half-width
            ResNet-10, 200 steps of 256 images, LARS, T 0.2, m 0.99 -> 1:
              python -m jssl.main --config=mocov3:quickstart \
                  --workdir=/tmp/jssl_mocov3
            Measured (2 shared CPU cores): see README "Zoo" table.

cifar10     MoCo v3 ResNet-18 (CIFAR stem) on TFDS `cifar10`, solo-learn's
            CIFAR recipe (vturrisi/solo-learn `scripts/pretrain/cifar/
            mocov3.yaml` + `augmentations/asymmetric.yaml`): batch 256, LARS
            (eta 0.02, momentum 0.9, bias/BN excluded) lr 0.3 x B/256, weight
            decay 1e-6, 10 warm-up epochs + cosine, 1000 epochs, T 0.2,
            m 0.99 -> 1 (cosine), projector 512-4096-256, predictor
            256-4096-256. Views: crop 0.08-1, flip, jitter (0.4, 0.4, 0.2,
            0.1) p=0.8, grayscale p=0.2, no blur, solarize p = 0 / 0.2.
            Expected: 93.10% top-1 linear (solo-learn README, CIFAR-10,
            ResNet-18, 1000 epochs).
            Data: TFDS `cifar10` in --config.data.data_dir (TFDS default
            ~/tensorflow_datasets). With a network, TFDS downloads and
            prepares it once: `tfds build cifar10 --data_dir=DATA_DIR`.
            Offline, register a local copy of the archive instead:
              python -m jssl.data.offline --dataset=cifar10 \
                  --archive=PATH/TO/cifar-10-binary.tar.gz \
                  --data_dir=DATA_DIR
            CPU smoke check (2 cores):
              python -m jssl.main --config=mocov3:cifar10 \
                  --workdir=/tmp/mocov3_c10 --config.total_steps=20 \
                  --config.batch_size=128
            One GPU:
              python -m jssl.main --config=mocov3:cifar10 \
                  --workdir=DIR --config.data.data_dir=DATA_DIR \
                  --config.model.dtype=bfloat16
            Time per epoch: not measured. A step costs about 4/3 of a SimCLR
            step (query forward+backward plus a key forward), so expect
            ~4/3 x SimCLR's measured figure (README "Performance").

imagenet    MoCo v3 ResNet-50 on TFDS `imagenet2012`, the official 100-epoch
            recipe (`main_moco.py` defaults + CONFIG.md): batch 4096, LARS
            (eta 1e-3, bias/BN excluded) lr 0.6 x B/256, weight decay 1e-6,
            10 warm-up epochs + cosine, T 1.0, m 0.99 -> 1 (`--moco-m-cos`),
            projector 2048-4096-256, predictor 256-4096-256, BYOL views with
            crop scale 0.2-1 (`--crop-min=.2`).
            Expected: 68.9% top-1 linear (moco-v3 CONFIG.md, ResNet-50, 100
            epochs). Longer: 300 epochs --config.optimizer.base_lr=0.3 ->
            72.8%; 1000 epochs lr 0.3, wd 1.5e-6, m 0.996 -> 74.6%.
            TPU v3-32 / 16 GPUs or more; pod slices and multi-host GPU:
            launch/README.md (--config.batch_size is the GLOBAL batch).

imagenet_vit  MoCo v3 ViT-S/16 (CONFIG.md "ViT-Small"): batch 4096, AdamW
            (0.9, 0.999) lr 1.5e-4 x B/256, weight decay 0.1, 40 warm-up
            epochs + cosine, 300 epochs, T 0.2, m 0.99 -> 1, projector
            384-4096-4096-256, predictor 256-4096-256 (both end in BN),
            random patch projection (frozen patch embedding, Sec. 4.2),
            BYOL views, crop scale 0.08-1, fixed 2-D sin-cos positions.
            Expected: 73.2% top-1 linear (moco-v3 CONFIG.md; paper Table 4).
            Per device (80 GB GPU, --config.model.dtype=bfloat16): 256 images
            (x 2 views), remat 'none': 4096 = 16 devices x 256. Estimate:
            XLA's compile-time memory analysis of this train step for one
            device's share, compiled on CPU from abstract shapes (jax 0.10.2;
            tests/models/test_vit_accelerator.py, by hand): temp
            61,493,004,032 + arguments 758,511,640 bytes = 62.3 GB at 256
            (31.6 GB at 128). XLA:CPU keeps bf16 intermediates in float32 in
            places: an upper bound. --config.model.remat=block frees the
            encoder activations kept for the backward pass (jax's vjp
            residuals: ~74 MB per view 'none' -> ~3 MB 'block'); XLA:CPU's
            analysis does not show that saving.

cifar10_vit  ViT-S/4 (8 x 8 patches of 4 px) on CIFAR-10 with the ImageNet
            ViT recipe at 32 px (batch 512, AdamW lr 1.5e-4 x B/256, wd 0.1,
            40 warm-up epochs, 300 epochs, solo-learn's CIFAR views). No
            reference run exists (the paper pre-trains on ImageNet only):
            expected accuracy not established.

smoke       Tiny ResNet, 6 steps: for tests (seconds on CPU).

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "smoke", "cifar10_vit",
           "imagenet_vit")

# solo-learn `asymmetric.yaml` at 32 px: no blur, solarize on view 2 only.
_CIFAR_PER_VIEW = ({"blur.p": 0.0, "solarize.p": 0.0},
                   {"blur.p": 0.0, "solarize.p": 0.2})


def _vit(c: ml_collections.ConfigDict, name: str, patch: int) -> None:
  """ViT encoder + the ViT heads and optimiser of CONFIG.md."""
  # Replaced wholesale: a ViT rejects the ResNet keys of base_config.
  c.model = ml_collections.ConfigDict(
      dict(name=name, patch_size=patch, dtype="float32", pos_embed="sincos",
           pool="cls"))
  # ViT heads (builder.py MoCo_ViT): projector 3 layers, predictor 2 layers,
  # both ending in BN without affine.
  c.projector.update(hidden_dims=(4096, 4096), out_dim=256, last_bn=True)
  c.predictor.update(hidden_dims=(4096,), out_dim=256, last_bn=True,
                     last_bn_scale=False, last_bn_center=False)
  c.loss.temperature = 0.2
  c.ema.base_momentum = 0.99
  c.freeze_patch_embed = True
  # AdamW, torch defaults (0.9, 0.999); jssl skips decay on 1-D params
  # (biases, LayerNorm), torch's AdamW in main_moco.py decays all.
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_lr=1.5e-4, lr_scaling="linear", weight_decay=0.1,
      b1=0.9, b2=0.999, warmup_epochs=40.0, grad_clip_norm=0.0, layer_decay=1.0))
  c.total_epochs = 300.0


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "mocov3")
  c = runbook.base_config("mocov3")
  # ResNet heads (builder.py MoCo_ResNet): projector D-4096-256 with the
  # output BN without affine; predictor 256-4096-256 without output BN.
  c.projector = ml_collections.ConfigDict(
      dict(hidden_dims=(4096,), out_dim=256, use_bn=True, last_bn=True,
           last_bn_scale=False, last_bn_center=False))
  c.predictor = ml_collections.ConfigDict(
      dict(hidden_dims=(4096,), out_dim=256, use_bn=True, last_bn=False,
           last_bn_scale=False, last_bn_center=False))
  # T: contrastive temperature (--moco-t; 1.0 ResNet-50, 0.2 ViT / CIFAR).
  c.loss = ml_collections.ConfigDict(dict(temperature=1.0))
  # Momentum m: cosine from base_momentum to final_momentum (--moco-m-cos).
  c.ema = ml_collections.ConfigDict(dict(base_momentum=0.99,
                                         final_momentum=1.0))
  # Random patch projection (Sec. 4.2, --stop-grad-conv1): ViT only.
  c.freeze_patch_embed = False
  if preset in ("cifar10", "cifar10_vit"):
    runbook.solo_cifar10(c, recipes.byol_recipe)
    c.views.per_view = _CIFAR_PER_VIEW
    c.loss.temperature = 0.2
    c.optimizer.update(name="lars", base_lr=0.3, weight_decay=1e-6,
                       trust_coefficient=0.02, warmup_epochs=10.0)
    if preset == "cifar10_vit":
      _vit(c, "vit_small", patch=4)
      c.batch_size = 512
  elif preset in ("imagenet", "imagenet_vit"):
    runbook.imagenet_data(c, recipes.byol_recipe)
    c.batch_size = 4096
    c.total_epochs = 100.0
    c.model.update(name="resnet50", stem="imagenet")
    c.views.crop.scale = (0.2, 1.0)    # --crop-min=.2 (ResNet recipes)
    c.optimizer.update(name="lars", base_lr=0.6, weight_decay=1e-6,
                       trust_coefficient=1e-3, warmup_epochs=10.0)
    if preset == "imagenet_vit":
      _vit(c, "vit_small", patch=16)
      # 80 GB: 16 devices x 256 (docstring).
      c.model.update(dict(attention_impl="auto", remat="none"))
      c.views.crop.scale = (0.08, 1.0)  # ViT recipes keep the default
  else:  # quickstart, smoke
    runbook.digits_data(c, recipes.byol_recipe, smoke=preset == "smoke")
    c.views.per_view = _CIFAR_PER_VIEW  # 16 px: no blur, as on CIFAR
    c.projector.update(hidden_dims=(256,), out_dim=64)
    c.predictor.update(hidden_dims=(256,), out_dim=64)
    c.loss.temperature = 0.2
    c.ema.base_momentum = 0.99
    c.optimizer.update(name="lars", base_lr=1.0, weight_decay=1e-5,
                       trust_coefficient=0.02, warmup_epochs=2.0)
    if preset == "smoke":
      c.projector.update(hidden_dims=(32,), out_dim=16)
      c.predictor.update(hidden_dims=(32,), out_dim=16)
  c.views.num_views = 2         # MoCo v3 contrasts two views of each image
  return c
