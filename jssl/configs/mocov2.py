r"""MoCo v2 (Chen, Fan, Girshick, He 2020) run book.

Presets (`--config=mocov2:<preset>`):

quickstart  Offline: scikit-learn's digits at 16 px (1347 train / 450 test),
            half-width ResNet-10, 200 steps of 256 images, on 2 CPU cores:
              python -m jssl.main --config=mocov2:quickstart \
                  --workdir=/tmp/jssl_mocov2
            The queue holds 1024 keys (4 batches), fewer than the 1347
            training images, so an image's own stale key is rarely a negative.
            Quickstart-only deviations (see the comment in get_config): BN in
            the head's hidden layer, LARS lr 0.3, key momentum 0.9 -> 0.99.
            Measured (README "Zoo", three seeds, 2-core AMD EPYC, jssl's
            XLA:CPU tuning): linear top-1 94.4 / 96.0 / 94.7% against 80.9 /
            80.7 / 78.9% for the random-init encoder, kNN 75.8 / 65.8 / 69.3%
            against 44.7 / 44.9 / 46.0%.
            With LARS lr 1.0 (SimCLR's quickstart value, this preset's until
            the three-seed check) the same seeds gave linear 86.2 / 79.6 /
            86.9%, kNN 39.6 / 31.3 / 44.7%, below random init: after step 25
            the parameter norm peaked at 141-204 (from 47) and RankMe fell to
            6-13 (at lr 0.3: norm 45-53, RankMe 20-39). One run under
            jaxlib's default XLA:CPU flags had passed (90.2% / 62.2%), which
            hid it.

cifar10     ResNet-18 (CIFAR stem) on TFDS `cifar10`, solo-learn's MoCo v2+
            recipe (vturrisi/solo-learn `scripts/pretrain/cifar/
            mocov2plus.yaml`, `augmentations/symmetric_weak.yaml`): batch 256,
            SGD (momentum 0.9) lr 0.3 x B/256, weight decay 1e-4, 10 warm-up
            epochs + cosine, 1000 epochs, head 2048-256 (no BN), queue 32768,
            temperature 0.2, key momentum 0.99 -> 0.999 (cosine), symmetric
            loss; views: crop 0.08-1, flip, jitter (0.4, 0.4, 0.4, 0.1) p=0.8,
            grayscale 0.2, blur p=0.5.
            Expected: 92.94% top-1 linear (solo-learn README, "MoCo V2+",
            CIFAR-10, ResNet-18, 1000 epochs, online linear classifier).
            Data: TFDS `cifar10` in --config.data.data_dir (TFDS default
            ~/tensorflow_datasets). With a network, TFDS downloads and
            prepares it once: `tfds build cifar10 --data_dir=DATA_DIR`.
            Offline, register a local copy of the archive instead:
              python -m jssl.data.offline --dataset=cifar10 \
                  --archive=PATH/TO/cifar-10-binary.tar.gz \
                  --data_dir=DATA_DIR
            CPU (2 cores, a smoke check only):
              python -m jssl.main --config=mocov2:cifar10 \
                  --workdir=/tmp/mocov2_c10 --config.total_steps=20 \
                  --config.batch_size=128
            Time per epoch: not measured; it scales like SimCLR's measured
            CIFAR-10 figure (simclr run book, ~2.5 h per epoch on 2 CPU
            cores) times ~1.5 for the symmetric loss (4 encoder passes of B
            images, 2 of them without backward, against SimCLR's 2 with).
            One GPU:   python -m jssl.main --config=mocov2:cifar10 \
                           --workdir=DIR --config.data.data_dir=DATA_DIR \
                           --config.model.dtype=bfloat16
            TPU pod slice / multi-host GPU: launch/README.md (same config;
            --config.batch_size is the GLOBAL batch, the LR scales with it,
            and the queue size must stay a multiple of it).

imagenet    ResNet-50 on TFDS `imagenet2012`, the official MoCo v2 recipe
            (facebookresearch/moco README: `main_moco.py --lr 0.03
            --batch-size 256 --mlp --moco-t 0.2 --aug-plus --cos`): SGD
            (momentum 0.9) lr 0.03 x B/256, weight decay 1e-4, cosine without
            warm-up, 200 epochs, head 2048-2048-128 (no BN), queue 65536,
            key momentum 0.999, temperature 0.2, asymmetric loss; "aug+"
            views: crop 0.2-1, flip, jitter (0.4, 0.4, 0.4, 0.1) p=0.8,
            grayscale 0.2, blur p=0.5.
            Expected: 67.5 +- 0.1% top-1 linear (facebookresearch/moco README,
            5 trials, 200 epochs); 71.1% after 800 epochs
            (--config.total_epochs=800).
            8 GPUs or a TPU slice; launch/README.md.

smoke       Tiny model, 6 steps, queue of 3 batches (wraps around): tests.

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "smoke")


def aug_plus(size, *, mean, std):
  """MoCo v2 "aug+" (main_moco.py) / solo-learn symmetric_weak: SimCLR's
  views with jitter strength 0.5 and blur p=0.5 (crop scale set per preset)."""
  return recipes.simclr_recipe(size, mean=mean, std=std, blur=True)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "mocov2")
  c = runbook.base_config("mocov2")
  # MoCo v2's MLP head: Linear-ReLU-Linear, no BN (builder.py `mlp=True`).
  c.projector = ml_collections.ConfigDict(dict(
      hidden_dims=(2048,), out_dim=128, use_bn=False, last_bn=False))
  # temperature: InfoNCE T (v1 0.07, v2 0.2). queue_size: K negatives, a
  # multiple of the global batch. symmetric: solo-learn's MoCo v2+ loss.
  c.loss = ml_collections.ConfigDict(dict(temperature=0.2, queue_size=65536,
                                          symmetric=False))
  # Key-encoder EMA momentum m, cosine from `base` to `final` over the run;
  # equal values give the constant m of the paper (0.999).
  c.momentum = ml_collections.ConfigDict(dict(base=0.999, final=0.999))
  if preset == "cifar10":
    runbook.solo_cifar10(c, aug_plus)
    c.projector.update(hidden_dims=(2048,), out_dim=256)
    c.loss.update(temperature=0.2, queue_size=32768, symmetric=True)
    c.momentum.update(base=0.99, final=0.999)
    c.optimizer.update(name="sgd", base_lr=0.3, weight_decay=1e-4,
                       momentum=0.9, warmup_epochs=10.0)
  elif preset == "imagenet":
    runbook.imagenet_data(c, aug_plus)
    c.views.crop.scale = (0.2, 1.0)     # aug+: RandomResizedCrop(scale=(0.2, 1))
    c.batch_size = 256
    c.total_epochs = 200.0
    c.model.update(name="resnet50", stem="imagenet")
    c.projector.update(hidden_dims=(2048,), out_dim=128)
    c.loss.update(temperature=0.2, queue_size=65536, symmetric=False)
    c.momentum.update(base=0.999, final=0.999)
    c.optimizer.update(name="sgd", base_lr=0.03, weight_decay=1e-4,
                       momentum=0.9, warmup_epochs=0.0)
  else:  # quickstart, smoke
    runbook.digits_data(c, aug_plus, smoke=preset == "smoke")
    c.views.blur.p = 0.0                # 16 px digits: blur erases strokes
    # Tuned for 200 steps (measured, 2-core CPU): with MoCo v2's BN-free head
    # and SGD lr 0.3 the run collapsed within ~25 steps (positive cosine -> 1,
    # loss -> log(K + 1)): a random ResNet maps all images close together and
    # the queue starts as random unit vectors, which one constant output
    # already beats; with lr 0.06 it stalled near log(K + 1); a BN head with
    # SGD 0.3 collapsed too. A BN in the hidden layer (as SimCLR / MoCo v3)
    # with SimCLR's quickstart LARS settings learned in one run but not in
    # three others (lr 1.0: the parameter norm grew 3-4x after ~25 steps and
    # the rank fell); at LARS lr 0.3 every seed learns (docstring).
    c.projector.update(hidden_dims=(256,), out_dim=64, use_bn=True)
    c.loss.update(temperature=0.2, queue_size=1024, symmetric=True)
    c.momentum.update(base=0.9, final=0.99)
    c.optimizer.update(name="lars", base_lr=0.3, weight_decay=1e-5,
                       trust_coefficient=0.02, warmup_epochs=2.0)
    if preset == "smoke":
      c.projector.update(hidden_dims=(32,), out_dim=16)
      c.loss.queue_size = 96            # 3 batches of 32: wraps in 6 steps
  c.views.num_views = 2                 # query view and key view
  return c
