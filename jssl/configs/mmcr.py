r"""MMCR (Yerxa et al. 2023, "Learning Efficient Coding of Natural Images with Maximum
Manifold Capacity Representations") run book.

Presets (`--config=mmcr:<preset>`):

quickstart  Offline digits (1347 train / 450 test, 16 px), half-width ResNet-10,
            200 steps of 128 images x 4 views (512 views a step, as the two-view
            quickstarts' 256 x 2), projector 512-128, AdamW lr 2e-3, no momentum
            encoder, lambda 0:
              python -m jssl.main --config=mmcr:quickstart \
                  --workdir=/tmp/jssl_mmcr
            Measured (`benchmarks/zoo.py --methods mmcr`, 2 CPU cores shared
            with ~7 other jobs, load ~16, so the time says little): 2531 s wall,
            11.8 img/s, final loss -57.4 (minus the centroid nuclear norm), linear
            top-1 90.4% (random-init encoder 76.2%), kNN 75.8% (42.0%).

cifar10     The official CIFAR recipe, checked against ThomasYerxa/mmcr
            `pretrain_cifar_stl.py` (defaults: batch_size 32, n_aug 40, lr 1e-3,
            lmbda 0, epochs 500), `mmcr/cifar_stl/train.py` (torch Adam,
            weight_decay 1e-6, no LR schedule, projector_dims [512, 128]),
            `models.py` (ResNet-50, 3x3 stride-1 conv1, max-pool dropped;
            projector Linear-BN-ReLU-Linear, its Linear layers without bias)
            and `data.py` (`CifarBatchTransform`): 32 images x 40 views a step,
            Adam lr 1e-3 (constant, not scaled with the batch), weight decay
            1e-6, 500 epochs, lambda 0, no momentum encoder; views: crop
            0.08-1, flip, jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2,
            no blur.
            Expected: NOT VERIFIED. An earlier draft quoted about 93.5% top-1
            linear (paper Table 1, CIFAR-10, 40 views) from memory; neither the
            paper nor the repository README (which gives no figures) could be
            checked. Note the official code selects the best of many saved
            checkpoints by linear accuracy (`model_select_cifar_stl.py`).
            Data: TFDS `cifar10` in --config.data.data_dir (TFDS default
            ~/tensorflow_datasets). With a network, TFDS downloads and
            prepares it once: `tfds build cifar10 --data_dir=DATA_DIR`.
            Offline, register a local copy of the archive instead:
              python -m jssl.data.offline --dataset=cifar10 \
                  --archive=PATH/TO/cifar-10-binary.tar.gz \
                  --data_dir=DATA_DIR
            One GPU:   python -m jssl.main --config=mmcr:cifar10 \
                           --workdir=DIR --config.data.data_dir=DATA_DIR \
                           --config.model.dtype=bfloat16
            CPU (2 cores, a smoke check only): add --config.total_steps=5
            --config.views.num_views=4 (a few steps). Time per epoch: not measured (each step
            runs 32 x 40 = 1280 images through a ResNet-50).

imagenet    The official ImageNet recipe, checked against `pretrain_imagenet.py`
            (defaults: batch_size 2048, n_aug 8, lr 0.8, tau 0.99, lmbda 0,
            epochs 100, objective `MMCR_Momentum`), `mmcr/imagenet/train.py`
            (projector_dims [8192, 8192, 512]; LARS lr 0.8 x B/256, weight
            decay 1e-6, momentum 0.9, bias/BN filtered; 10 warm-up epochs,
            cosine to alpha_f 0.001 x the peak), `misc.py` (LARS eta 1e-3;
            `MomentumUpdate` tau constant) and `data.py` (`Barlow_Transform`:
            views alternate blur p 1.0 / 0.1, solarize 0 / 0.2, jitter
            (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2): ResNet-50, batch 2048
            images x 8 views, projector 2048-8192-8192-512, momentum encoder.
            Expected: NOT VERIFIED. An earlier draft quoted about 71.5% top-1
            linear (paper Table 1, ImageNet-1k, 100 epochs, 8 views) from
            memory; the paper could not be checked and the repository gives no
            figure. Not reproduced here.
            TPU v3-32 or larger / multi-host GPU: launch/README.md (same config;
            --config.batch_size is the GLOBAL batch in images, each gives 8 views).

smoke       Tiny model, 6 steps, 3 views: for tests (seconds on CPU).

Fields: `views.num_views` (N views per image), `loss.lmbda` (weight of the local
nuclear norm, 0 officially), `loss.momentum_encoder` (the momentum variant) and
`ema.base_momentum` / `ema.final_momentum` (its EMA; equal = constant tau).
Metrics: `global_nuc` (nuclear norm of the centroids; the loss is its negative
for lambda = 0) and `local_nuc`.

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "smoke")


def cifar_recipe(size, *, mean, std):
  """The official CIFAR views (`CifarBatchTransform`): SimCLR's CIFAR recipe."""
  return recipes.simclr_recipe(size, mean=mean, std=std, blur=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "mmcr")
  c = runbook.base_config("mmcr")
  # Linear-BN-ReLU per hidden width, then Linear (the Barlow Twins head).
  c.projector = ml_collections.ConfigDict(dict(
      hidden_dims=(512,), out_dim=128, use_bn=True, last_bn=False))
  c.loss = ml_collections.ConfigDict(dict(lmbda=0.0, momentum_encoder=False))
  # The momentum encoder's EMA (used only with loss.momentum_encoder): the official
  # `MomentumUpdate` keeps tau = 0.99 for the whole run.
  c.ema = ml_collections.ConfigDict(dict(base_momentum=0.99, final_momentum=0.99))
  if preset == "cifar10":
    runbook.solo_cifar10(c, cifar_recipe, epochs=500.0)
    c.model.update(name="resnet50", stem="cifar")
    c.batch_size = 32
    c.views.num_views = 40
    # torch Adam(lr=1e-3, weight_decay=1e-6) without a schedule; AdamW's decoupled
    # decay of 1e-6 x lr is a negligible difference at this size.
    c.optimizer.update(name="adamw", base_lr=1e-3, lr_scaling="none",
                       weight_decay=1e-6, warmup_epochs=0.0, min_lr=1e-3)
  elif preset == "imagenet":
    runbook.imagenet_data(c, recipes.byol_recipe)
    c.batch_size = 2048
    c.total_epochs = 100.0
    c.model.update(name="resnet50", stem="imagenet")
    c.views.num_views = 8
    # `Barlow_Transform`: views 2i / 2i+1 are the Barlow Twins / BYOL pair.
    c.views.per_view = tuple(c.views.per_view) * 4
    c.projector.update(hidden_dims=(8192, 8192), out_dim=512)
    c.loss.momentum_encoder = True
    c.optimizer.update(name="lars", base_lr=0.8, weight_decay=1e-6,
                       trust_coefficient=1e-3, warmup_epochs=10.0,
                       min_lr=0.8 * 2048 / 256 * 0.001)
  else:  # quickstart, smoke
    runbook.digits_data(c, cifar_recipe, smoke=preset == "smoke")
    c.batch_size = 128
    c.views.num_views = 4
    c.optimizer.update(name="adamw", base_lr=2e-3, lr_scaling="none",
                       weight_decay=1e-6, warmup_epochs=2.0)
    if preset == "smoke":
      c.batch_size = 16
      c.views.num_views = 3
      c.projector.update(hidden_dims=(32,), out_dim=16)
  return c
