r"""Supervised contrastive learning, SupCon (Khosla et al. 2020) run book.

SupCon uses the class labels (`batch['label']`, present for every jssl data
source); everything else is SimCLR-shaped.

Presets (`--config=supcon:<preset>`):

quickstart  Offline: scikit-learn's digits at 16 px (1347 train / 450 test),
            half-width ResNet-10, 200 steps of 256 images, on 2 CPU cores:
              python -m jssl.main --config=supcon:quickstart \
                  --workdir=/tmp/jssl_supcon
            Measured (2 idle CPU cores, README "Zoo" table): 202 s wall, linear
            top-1 97.3% (random-init encoder 76.2%), kNN 95.3% (42.0%). SupCon sees the labels, so this
            is a supervised reference point, not an SSL result. Projector
            256-64 without BN, temperature 0.1 (T_base 0.1), SimCLR's
            quickstart LARS settings.

cifar10     ResNet-18 (CIFAR stem) on TFDS `cifar10`, solo-learn's recipe
            (vturrisi/solo-learn `scripts/pretrain/cifar/supcon.yaml`,
            `augmentations/symmetric.yaml`): batch 256, SGD (momentum 0.9)
            lr 0.4 x B/256, weight decay 1e-5, 10 warm-up epochs + cosine,
            1000 epochs, projector 2048-256 without BN, temperature 0.2
            (unscaled loss: base_temperature = temperature); views: crop
            0.08-1, flip, jitter (0.8, 0.8, 0.8, 0.2) p=0.8, grayscale 0.2,
            blur p=0.5.
            Expected: 93.82% top-1 linear (solo-learn README, CIFAR-10,
            ResNet-18, 1000 epochs, online linear classifier; solo-learn's
            loss is the L_in variant, see jssl/methods/supcon.py).
            SupContrast's own CIFAR-10 recipe (HobbitLong/SupContrast
            README): ResNet-50, batch 1024, lr 0.5, temperature 0.1 (0.5 is
            its SimCLR baseline), cosine, 96.0%:
              --config.model.name=resnet50 --config.batch_size=1024 \
              --config.optimizer.base_lr=0.125 --config.loss.temperature=0.1 \
              --config.loss.base_temperature=0.07 --config.projector.out_dim=128
            Data: TFDS `cifar10` in --config.data.data_dir (TFDS default
            ~/tensorflow_datasets). With a network, TFDS downloads and
            prepares it once: `tfds build cifar10 --data_dir=DATA_DIR`.
            Offline, register a local copy of the archive instead:
              python -m jssl.data.offline --dataset=cifar10 \
                  --archive=PATH/TO/cifar-10-binary.tar.gz \
                  --data_dir=DATA_DIR
            CPU (2 cores, a smoke check only):
              python -m jssl.main --config=supcon:cifar10 \
                  --workdir=/tmp/supcon_c10 --config.total_steps=20 \
                  --config.batch_size=128
            Time per epoch: not measured; the same as SimCLR's measured
            CIFAR-10 figure (simclr run book, ~2.5 h per epoch on 2 CPU
            cores): the same passes, only the positive mask differs.
            One GPU:   python -m jssl.main --config=supcon:cifar10 \
                           --workdir=DIR --config.data.data_dir=DATA_DIR \
                           --config.model.dtype=bfloat16
            TPU pod slice / multi-host GPU: launch/README.md (same config;
            --config.batch_size is the GLOBAL batch, the LR scales with it).

imagenet    ResNet-50 on TFDS `imagenet2012`: temperature 0.1 and T_base 0.07
            (paper / SupContrast `SupConLoss` defaults), projector
            2048-2048-128 without BN (SupContrast 'mlp' head), SimCLR's
            ImageNet views and optimiser (batch 4096, LARS 0.3 x B/256, weight
            decay 1e-6, 10 warm-up epochs), 100 epochs as jssl's SimCLR preset.
            The paper's large-batch ImageNet optimiser settings and epoch
            count are not reproduced here (not verified).
            Expected: the paper reports 78.7% top-1 for ResNet-50 (Table 2,
            with AutoAugment, which jssl's view recipes do not include) and
            81.4% for ResNet-200 (abstract); not measured with jssl.
            TPU v3-32 or larger; launch/README.md.

smoke       Tiny model, 6 steps: for tests (seconds on CPU).

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "smoke")


def cifar_recipe(size, *, mean, std):
  """solo-learn's symmetric CIFAR views: jitter strength 1.0, blur p=0.5."""
  r = recipes.simclr_recipe(size, mean=mean, std=std, blur=True)
  r.color_jitter.update(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
  return r


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "supcon")
  c = runbook.base_config("supcon")
  # SupContrast's 'mlp' head: Linear-ReLU-Linear, no BN.
  c.projector = ml_collections.ConfigDict(dict(
      hidden_dims=(2048,), out_dim=128, use_bn=False, last_bn=False))
  # temperature: T of eq. 2. base_temperature: T_base, the loss is scaled by
  # T / T_base (SupContrast default 0.07).
  c.loss = ml_collections.ConfigDict(dict(temperature=0.1,
                                          base_temperature=0.07))
  if preset == "cifar10":
    runbook.solo_cifar10(c, cifar_recipe)
    c.projector.update(hidden_dims=(2048,), out_dim=256)
    c.loss.update(temperature=0.2, base_temperature=0.2)
    c.optimizer.update(name="sgd", base_lr=0.4, weight_decay=1e-5,
                       momentum=0.9, warmup_epochs=10.0)
  elif preset == "imagenet":
    runbook.imagenet_data(c, recipes.simclr_recipe)
    c.batch_size = 4096
    c.total_epochs = 100.0
    c.model.update(name="resnet50", stem="imagenet")
    c.projector.update(hidden_dims=(2048,), out_dim=128)
    c.optimizer.update(name="lars", base_lr=0.3, weight_decay=1e-6,
                       warmup_epochs=10.0)
    # Colour-jitter strength 1.0 on ImageNet (SimCLR App. A).
    c.views.color_jitter.update(brightness=0.8, contrast=0.8, saturation=0.8,
                                hue=0.2)
  else:  # quickstart, smoke
    runbook.digits_data(c, recipes.simclr_recipe, smoke=preset == "smoke")
    c.projector.update(hidden_dims=(256,), out_dim=64)
    c.loss.update(temperature=0.1, base_temperature=0.1)
    c.optimizer.update(name="lars", base_lr=1.0, weight_decay=1e-5,
                       trust_coefficient=0.02, warmup_epochs=2.0)
    if preset == "smoke":
      c.projector.update(hidden_dims=(32,), out_dim=16)
  c.views.num_views = 2         # two views of each image; same-class images
  return c                      # are positives too
