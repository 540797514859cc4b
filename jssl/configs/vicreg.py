r"""VICReg (Bardes, Ponce, LeCun 2022) run book.

Presets (`--config=vicreg:<preset>`):

quickstart  Offline: scikit-learn's digits at 16 px (1347 train / 450 test),
            half-width ResNet-10, 200 steps of 256 images, on 2 CPU cores:
              python -m jssl.main --config=vicreg:quickstart \
                  --workdir=/tmp/jssl_vicreg
            Measured (2 idle CPU cores, README "Zoo" table): 198 s wall, linear
            top-1 98.4% (random-init encoder 76.2%), kNN 92.2% (42.0%). Expander 512-512, LARS lr
            0.5 x B/256 (eta 0.02), 2 warm-up epochs.

cifar10     ResNet-18 (CIFAR stem) on TFDS `cifar10`, solo-learn's recipe
            (vturrisi/solo-learn `scripts/pretrain/cifar/vicreg.yaml`):
            batch 256, LARS (eta 0.02, momentum 0.9, bias/BN excluded)
            lr 0.3 x B/256, weight decay 1e-4, 10 warm-up epochs + cosine,
            1000 epochs, expander 2048-2048-2048, coefficients 25/25/1;
            views: crop 0.2-1, flip, jitter (0.4, 0.4, 0.2, 0.1) p=0.8,
            grayscale 0.2, no blur, solarize p=0.1 on both views.
            Expected: 92.07% top-1 linear (solo-learn README, CIFAR-10,
            ResNet-18, 1000 epochs, online linear classifier).
            Data: TFDS `cifar10` in --config.data.data_dir (TFDS default
            ~/tensorflow_datasets). With a network, TFDS downloads and
            prepares it once: `tfds build cifar10 --data_dir=DATA_DIR`.
            Offline, register a local copy of the archive instead:
              python -m jssl.data.offline --dataset=cifar10 \
                  --archive=PATH/TO/cifar-10-binary.tar.gz \
                  --data_dir=DATA_DIR
            CPU (2 cores, a smoke check only):
              python -m jssl.main --config=vicreg:cifar10 \
                  --workdir=/tmp/vicreg_c10 --config.total_steps=20 \
                  --config.batch_size=128
            Time per epoch: not measured; it scales like SimCLR's measured
            CIFAR-10 figure (simclr run book, ~2.5 h per epoch on 2 CPU
            cores) times VICReg's relative cost (same encoder passes, a
            2048-wide expander).
            One GPU:   python -m jssl.main --config=vicreg:cifar10 \
                           --workdir=DIR --config.data.data_dir=DATA_DIR \
                           --config.model.dtype=bfloat16
            TPU pod slice / multi-host GPU: launch/README.md (same config;
            --config.batch_size is the GLOBAL batch, the LR scales with it).

imagenet    ResNet-50 on TFDS `imagenet2012`, the paper's recipe (Sec. 4.1,
            App. C; facebookresearch/vicreg `main_vicreg.py`): batch 2048,
            LARS (eta 0.001, bias/BN excluded) lr 0.2 x B/256, weight decay
            1e-6, 10 warm-up epochs, cosine to 0.001 x the peak LR,
            1000 epochs, expander 8192-8192-8192, coefficients 25/25/1;
            BYOL's asymmetric views (blur p 1.0 / 0.1, solarize 0 / 0.2,
            saturation 0.2; vicreg `augmentations.py`).
            Expected: 73.2% top-1 linear (paper Table 1, 1000 epochs).
            TPU v3-32 or larger; launch/README.md.

smoke       Tiny model, 6 steps: for tests (seconds on CPU).

Metrics: `invariance`, `variance`, `covariance` are the unweighted terms.
Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "smoke")


def cifar_recipe(size, *, mean, std):
  """solo-learn's VICReg CIFAR views (one recipe for both views)."""
  r = recipes.simclr_recipe(size, mean=mean, std=std, blur=False)
  r.crop.scale = (0.2, 1.0)
  r.color_jitter.saturation = 0.2
  r.solarize.p = 0.1
  return r


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "vicreg")
  c = runbook.base_config("vicreg")
  # The "expander": Linear-BN-ReLU per hidden width, then Linear.
  c.projector = ml_collections.ConfigDict(dict(
      hidden_dims=(2048, 2048), out_dim=2048, use_bn=True, last_bn=False))
  # lambda (invariance), mu (variance), nu (covariance): paper 25 / 25 / 1.
  c.loss = ml_collections.ConfigDict(dict(sim_coeff=25.0, std_coeff=25.0,
                                          cov_coeff=1.0))
  if preset == "cifar10":
    runbook.solo_cifar10(c, cifar_recipe)
    c.optimizer.update(name="lars", base_lr=0.3, weight_decay=1e-4,
                       trust_coefficient=0.02, warmup_epochs=10.0)
  elif preset == "imagenet":
    runbook.imagenet_data(c, recipes.byol_recipe)
    c.batch_size = 2048
    c.total_epochs = 1000.0
    c.model.update(name="resnet50", stem="imagenet")
    c.projector.update(hidden_dims=(8192, 8192), out_dim=8192)
    c.optimizer.update(
        name="lars", base_lr=0.2, weight_decay=1e-6, trust_coefficient=0.001,
        warmup_epochs=10.0,
        # Cosine floor in absolute LR units: 0.001 x 0.2 x 2048/256
        # (main_vicreg.py `end_lr = base_lr * 0.001`); rescale with the batch.
        min_lr=0.2 * 2048 / 256 * 0.001)
  else:  # quickstart, smoke
    runbook.digits_data(c, cifar_recipe, smoke=preset == "smoke")
    c.projector.update(hidden_dims=(512,), out_dim=512)
    c.optimizer.update(name="lars", base_lr=0.5, weight_decay=1e-5,
                       trust_coefficient=0.02, warmup_epochs=2.0)
    if preset == "smoke":
      c.projector.update(hidden_dims=(32,), out_dim=32)
  c.views.num_views = 2
  return c
