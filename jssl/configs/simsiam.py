r"""SimSiam (Chen & He 2021) run book.

Presets (`--config=simsiam:<preset>`):

quickstart  Offline digits (1347 train / 450 test, 16 px), half-width
            ResNet-10, 800 steps of 64 images (38 epochs), SGD lr 0.5 x
            64/256 = 0.125, fixed predictor lr off:
              python -m jssl.main --config=simsiam:quickstart \
                  --workdir=/tmp/jssl_simsiam
            Measured (README "Zoo", seeds 0, 1, 2, 2-core AMD EPYC, idle,
            jssl's XLA:CPU tuning; ~87 s wall / ~153 s CPU per run): linear
            87.1 / 81.1 / 88.4% against 76.2 / 84.4 / 83.1% at random init
            (W/L 74/25, 46/61, 48/24; pooled 168 / 110, p 0.0003), kNN
            56.9 / 43.8 / 61.8% against 42.0 / 44.9 / 42.2%. It passes the
            zoo's pooled rule, but seed 1 is below random init on both
            probes (-3.3 / -1.1): a fragile recipe, not a clean pass.
            How it was chosen (seeds 10-13, then run once on 0-2): the
            previous quickstart, 200 steps of 256 at lr 0.5, gave on seeds
            0-2 linear 79.8 / 83.6 / 80.2% (pooled W/L 115 / 116) and kNN
            53.6 / 46.4 / 47.1%. Its encoder barely moved: the parameter norm
            went from 55.87 to 55.95 and the loss stalled near -0.3 (seed
            10). Tried there:
              SGD lr 0.2: linear 81.8 / 84.2 / 81.6%, kNN 55.1 / 52.4 /
                56.7% (seeds 0-2; the same picture);
              LARS lr 0.3 (trust 0.02, as MoCo v2 / BYOL here), seeds 0
                and 1: linear 81.8 / 78.9%, kNN 47.6 / 47.6%;
              the paper's fixed predictor lr (--config.fix_pred_lr=True),
                seed 10: linear 81.6% (random init 81.8%), kNN 52.4%
                (46.4%); without it 81.1% / 55.8%;
              400 steps of 256 (seed 10): 80.4% / 48.4%;
              800 steps of 64 (this preset), seeds 10-13: linear +8.7 /
                -0.2 / +1.3 / +2.9 (pooled W/L 176 / 119), kNN +18.9 / +6.2
                / +6.4 / +7.6.

cifar10     SimSiam ResNet-18 (CIFAR stem) on TFDS `cifar10`, solo-learn's
            CIFAR recipe (vturrisi/solo-learn `scripts/pretrain/cifar/
            simsiam.yaml` + `augmentations/symmetric_weak.yaml`): batch 256,
            SGD (momentum 0.9) lr 0.5 x B/256, weight decay 1e-5, 10 warm-up
            epochs + cosine, 1000 epochs, projector 2048-2048-2048 (BN
            without affine on the output), predictor 2048-512-2048. Views:
            crop 0.08-1, flip, jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale
            p=0.2, blur p=0.5, no solarize; the predictor's lr held at the
            peak (solo-learn `static_lr`; `--config.fix_pred_lr`).
            The paper's own CIFAR-10 setting (App. D: ResNet-18 variant, SGD
            lr 0.03 x B/256, batch 512, wd 5e-4, 800 epochs, 2-layer
            projector) reports 91.8%.
            Expected: 90.51% top-1 linear (solo-learn README, CIFAR-10,
            ResNet-18, 1000 epochs).
            Data: TFDS `cifar10` in --config.data.data_dir (TFDS default
            ~/tensorflow_datasets). With a network, TFDS downloads and
            prepares it once: `tfds build cifar10 --data_dir=DATA_DIR`.
            Offline, register a local copy of the archive instead:
              python -m jssl.data.offline --dataset=cifar10 \
                  --archive=PATH/TO/cifar-10-binary.tar.gz \
                  --data_dir=DATA_DIR
            CPU smoke check (2 cores):
              python -m jssl.main --config=simsiam:cifar10 \
                  --workdir=/tmp/simsiam_c10 --config.total_steps=20 \
                  --config.batch_size=128
            One GPU:
              python -m jssl.main --config=simsiam:cifar10 \
                  --workdir=DIR --config.data.data_dir=DATA_DIR \
                  --config.model.dtype=bfloat16
            Time per epoch: not measured; a SimSiam step costs about what a
            SimCLR step does (one network, two views, wider heads), so expect
            about SimCLR's measured figure (README "Performance").

imagenet    SimSiam ResNet-50 on TFDS `imagenet2012`, the paper's recipe
            (Sec. 4; `main_simsiam.py` defaults): batch 512, SGD (momentum
            0.9) lr 0.05 x B/256, weight decay 1e-4, cosine without warm-up,
            100 epochs, MoCo v2 views (crop 0.2-1, jitter (0.4, 0.4, 0.4, 0.1)
            p=0.8, grayscale p=0.2, blur p=0.5, flip).
            Expected: 68.1% top-1 linear (paper Table 4 / official README,
            100 epochs, with the fixed predictor lr, which this preset uses);
            67.7% without it (paper Table 1; --config.fix_pred_lr=False).
            8 GPUs or a TPU v3-8; pod slices / multi-host GPU:
            launch/README.md (--config.batch_size is the GLOBAL batch).

smoke       Tiny model, 6 steps: for tests (seconds on CPU).

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "simsiam")
  c = runbook.base_config("simsiam")
  # Projector: 3 x (Linear-BN), ReLU between, output BN without scale/shift
  # (paper Sec. 4.4 / builder.py); width 2048 throughout.
  c.projector = ml_collections.ConfigDict(
      dict(hidden_dims=(2048, 2048), out_dim=2048, use_bn=True, last_bn=True,
           last_bn_scale=False, last_bn_center=False))
  # Predictor: bottleneck Linear(512)-BN-ReLU-Linear(2048) (Sec. 4.3).
  c.predictor = ml_collections.ConfigDict(
      dict(hidden_dims=(512,), out_dim=2048, use_bn=True))
  c.optimizer.update(name="sgd", base_lr=0.05, weight_decay=1e-4,
                     momentum=0.9, warmup_epochs=0.0)
  # The predictor keeps the peak lr while the rest follows the schedule
  # (official README command `--fix-pred-lr`; solo-learn `static_lr`).
  c.fix_pred_lr = True
  if preset == "cifar10":
    runbook.solo_cifar10(c, recipes.simclr_recipe)
    c.views.blur.p = 0.5          # solo-learn symmetric_weak: blur at 32 px
    c.optimizer.update(base_lr=0.5, weight_decay=1e-5, warmup_epochs=10.0)
  elif preset == "imagenet":
    runbook.imagenet_data(c, recipes.simclr_recipe)
    c.views.crop.scale = (0.2, 1.0)   # MoCo v2 augmentation (min scale 0.2)
    c.batch_size = 512
    c.total_epochs = 100.0
    c.model.update(name="resnet50", stem="imagenet")
    c.optimizer.update(base_lr=0.05, weight_decay=1e-4, warmup_epochs=0.0)
  else:  # quickstart, smoke
    runbook.digits_data(c, recipes.simclr_recipe, smoke=preset == "smoke")
    c.projector.update(hidden_dims=(256, 256), out_dim=256)
    c.predictor.update(hidden_dims=(64,), out_dim=256)  # 1/4 bottleneck
    c.optimizer.update(base_lr=0.5, weight_decay=1e-5, warmup_epochs=2.0)
    # Off here: measured without it (README "Zoo"); on, it did not help
    # (docstring).
    c.fix_pred_lr = False
    if preset == "quickstart":
      # 800 steps of 64 (the images of 200 x 256, lr 0.5 x 64/256 = 0.125):
      # the encoder barely moved in 200 steps (docstring).
      c.batch_size = 64
      c.total_steps = 800
      c.log_every_steps = 100
      c.checkpoint.every_steps = 200
    if preset == "smoke":
      c.projector.update(hidden_dims=(32, 32), out_dim=32)
      c.predictor.update(hidden_dims=(8,), out_dim=32)
  c.views.num_views = 2         # SimSiam compares two views of each image
  return c
