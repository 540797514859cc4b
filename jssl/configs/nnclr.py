r"""NNCLR (Dwibedi et al. 2021, "With a Little Help from My Friends") run book.

Presets (`--config=nnclr:<preset>`):

quickstart  Offline digits (1347 train / 450 test, 16 px), half-width
            ResNet-10, 200 steps of 256 images, LARS, support set of 1024
            projections (4 batches), temperature 0.2:
              python -m jssl.main --config=nnclr:quickstart \
                  --workdir=/tmp/jssl_nnclr
            Measured: see "Quickstart figures" below.

cifar10     NNCLR ResNet-18 (CIFAR stem) on TFDS `cifar10`, solo-learn's
            CIFAR recipe, checked against vturrisi/solo-learn
            `scripts/pretrain/cifar/nnclr.yaml` (+ `augmentations/
            asymmetric.yaml`, `solo/methods/nnclr.py`): batch 256, LARS (eta
            0.02, bias/BN excluded) lr 0.4 x B/256, weight decay 1e-5,
            warmup_cosine (solo-learn's default 10 warm-up epochs), 1000
            epochs, temperature 0.2, projector 2048-2048-256 (BN after every
            layer), predictor 4096-256, support set 65536. Views: crop 0.08-1,
            flip, jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2, no blur,
            solarize p = 0 / 0.2.
            Expected: 91.88% top-1 (solo-learn README, "Results / CIFAR-10"
            table, NNCLR ResNet-18 1000 epochs; the maintainer says in
            solo-learn issue #385 that the CIFAR figures are the online
            classifier's).
            Data: TFDS `cifar10` in --config.data.data_dir; offline:
              python -m jssl.data.offline --dataset=cifar10 \
                  --archive=PATH/TO/cifar-10-binary.tar.gz \
                  --data_dir=DATA_DIR
            CPU smoke check (2 cores):
              python -m jssl.main --config=nnclr:cifar10 \
                  --workdir=/tmp/nnclr_c10 --config.total_steps=20 \
                  --config.batch_size=128
            One GPU:
              python -m jssl.main --config=nnclr:cifar10 --workdir=DIR \
                  --config.data.data_dir=DATA_DIR --config.model.dtype=bfloat16
            Time per epoch: not measured; a step costs about one SimCLR step
            (two per-view forward/backward passes, plus an [B, K] similarity
            with the support set).

imagenet    NNCLR ResNet-50 on TFDS `imagenet2012`. Heads, checked against
            the paper's own words as quoted in lightly-ai/lightly
            `lightly/models/modules/heads.py` (`NNCLRProjectionHead`,
            `NNCLRPredictionHead`): projector 2048-2048-256, BN after every
            layer, ReLU after all but the last; predictor 4096-256 (BN + ReLU
            on the hidden layer only). The rest of the recipe is NOT VERIFIED:
            BYOL's augmentations, batch 4096, LARS lr 0.3 x B/256 (4.8),
            weight decay 1e-6, 10 warm-up epochs + cosine, 1000 epochs,
            temperature 0.1, support set 98,304 were written from memory of
            the paper's Sec. 4.1; neither the paper text nor code (none was
            released) could be consulted to check them.
            Expected: the paper's abstract reports 75.6% top-1 linear
            (ImageNet, ResNet-50); the number of epochs behind that figure is
            not verified here. jssl has not run it.
            TPU v3-32 or larger; pod slices / multi-host GPU: launch/README.md
            (--config.batch_size is the GLOBAL batch; the support set must
            hold at least one global batch).

smoke       Tiny model, 6 steps, support set of 1.5 batches (the ring wraps
            mid-batch at step 2): tests.

Quickstart figures (python benchmarks/zoo.py --methods nnclr; one run, on a
2-core CPU shared with ~6 other jobs, load average ~13): 200 steps in 2306 s
wall (29 img/s), final loss 5.51, online probe 55.5%; linear top-1 97.8%
(random-init encoder 80.9%), kNN 83.6% (random-init 44.7%).

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "smoke")

_CIFAR_PER_VIEW = recipes.CIFAR_ASYMMETRIC_PER_VIEW


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "nnclr")
  c = runbook.base_config("nnclr")
  # Projector g: 3 Linear layers with BN after each, the output one included
  # (paper Sec. 4.1; solo-learn and lightly `NNCLRProjectionHead`, affine BN).
  c.projector = ml_collections.ConfigDict(
      dict(hidden_dims=(2048, 2048), out_dim=256, use_bn=True, last_bn=True,
           last_bn_scale=True, last_bn_center=True))
  # Predictor q: Linear-BN-ReLU-Linear, hidden 4096 (paper Sec. 4.1).
  c.predictor = ml_collections.ConfigDict(
      dict(hidden_dims=(4096,), out_dim=256, use_bn=True))
  # temperature: NT-Xent T. queue_size: K, the support set of past view-1
  # projections (FIFO; at least the global batch).
  c.loss = ml_collections.ConfigDict(dict(temperature=0.1, queue_size=98304))
  if preset == "cifar10":
    runbook.solo_cifar10(c, recipes.byol_recipe)
    c.views.per_view = _CIFAR_PER_VIEW
    c.loss.update(temperature=0.2, queue_size=65536)
    c.optimizer.update(name="lars", base_lr=0.4, weight_decay=1e-5,
                       trust_coefficient=0.02, warmup_epochs=10.0)
  elif preset == "imagenet":
    runbook.imagenet_data(c, recipes.byol_recipe)
    c.batch_size = 4096
    c.total_epochs = 1000.0
    c.model.update(name="resnet50", stem="imagenet")
    c.loss.update(temperature=0.1, queue_size=98304)
    c.optimizer.update(name="lars", base_lr=0.3, weight_decay=1e-6,
                       trust_coefficient=1e-3, warmup_epochs=10.0)
  else:  # quickstart, smoke
    runbook.digits_data(c, recipes.byol_recipe, smoke=preset == "smoke")
    c.views.per_view = _CIFAR_PER_VIEW  # 16 px: no blur, as on CIFAR
    c.projector.update(hidden_dims=(256, 256), out_dim=64)
    c.predictor.update(hidden_dims=(256,), out_dim=64)
    c.loss.update(temperature=0.2, queue_size=1024)
    c.optimizer.update(name="lars", base_lr=1.0, weight_decay=1e-5,
                       trust_coefficient=0.02, warmup_epochs=2.0)
    if preset == "smoke":
      c.projector.update(hidden_dims=(32, 32), out_dim=16)
      c.predictor.update(hidden_dims=(32,), out_dim=16)
      c.loss.queue_size = 48    # 1.5 batches: the ring splits at step 2
  c.views.num_views = 2         # NNCLR contrasts two views of each image
  return c
