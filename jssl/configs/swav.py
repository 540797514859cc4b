r"""SwAV (Caron et al. 2020) run book.

Presets (`--config=swav:<preset>`):

quickstart  Offline digits (1347 train / 450 test, 16 px), half-width
            ResNet-10, 200 steps of 256 images, 2 global 16 px crops (no local
            crops, see the preset's comment), projector 256-32, 100
            prototypes, Sinkhorn epsilon 0.02, LARS:
              python -m jssl.main --config=swav:quickstart \
                  --workdir=/tmp/jssl_swav
            Measured (2 idle CPU cores, README "Zoo" table): 200 s wall,
            linear top-1 96.7% (random-init encoder 76.2%), kNN 77.3%
            (random init 42.0%).

cifar10     SwAV ResNet-18 (CIFAR stem) on TFDS `cifar10`, solo-learn's CIFAR
            recipe (vturrisi/solo-learn `scripts/pretrain/cifar/swav.yaml` +
            `augmentations/symmetric.yaml`): batch 256, LARS (eta 0.02,
            momentum 0.9, bias/BN excluded) lr 0.6 x B/256, weight decay
            1e-6, 10 warm-up epochs + cosine, 1000 epochs, projector
            2048-128, 3000 prototypes, T 0.1, Sinkhorn eps 0.05 x 3 iters,
            queue 3840 from epoch 50, prototypes frozen for 2 epochs. Views:
            2 crops of 32 px (no local crops), crop 0.08-1, flip, jitter
            (0.8, 0.8, 0.8, 0.2) p=0.8, grayscale p=0.2, blur p=0.5.
            (solo-learn's LARS clips the adaptive lr at the base lr,
            `clip_lr: True`; jssl's LARS does not.)
            Expected: 89.17% top-1 linear (solo-learn README, CIFAR-10,
            ResNet-18, 1000 epochs).
            Data: TFDS `cifar10` in --config.data.data_dir (TFDS default
            ~/tensorflow_datasets). With a network, TFDS downloads and
            prepares it once: `tfds build cifar10 --data_dir=DATA_DIR`.
            Offline, register a local copy of the archive instead:
              python -m jssl.data.offline --dataset=cifar10 \
                  --archive=PATH/TO/cifar-10-binary.tar.gz \
                  --data_dir=DATA_DIR
            CPU smoke check (2 cores):
              python -m jssl.main --config=swav:cifar10 \
                  --workdir=/tmp/swav_c10 --config.total_steps=20 \
                  --config.batch_size=128
            One GPU:
              python -m jssl.main --config=swav:cifar10 \
                  --workdir=DIR --config.data.data_dir=DATA_DIR \
                  --config.model.dtype=bfloat16
            Time per epoch: not measured. With 2 crops a SwAV step costs about
            a SimCLR step (same encoder passes; Sinkhorn on [B, 3000] is
            small), so expect ~1x SimCLR's measured figure (README
            "Performance").

imagenet    SwAV ResNet-50 on TFDS `imagenet2012`, the paper's best recipe
            (Sec. 4.1, App. A; facebookresearch/swav
            `scripts/swav_800ep_pretrain.sh`): multi-crop 2 x 224 px (scale
            0.14-1) + 6 x 96 px (0.05-0.14), batch 4096, LARS (eta 1e-3) lr
            4.8 at 4096 (0.3 x B/256), cosine to 0.0048, weight decay 1e-6,
            10 warm-up epochs, 800 epochs, projector 2048-128, 3000
            prototypes frozen for 1 epoch (313 iterations), T 0.1, eps 0.05,
            no queue at this batch (the 256-batch recipe uses queue 3840
            from epoch 15). Jitter strength 1.0, blur p=0.5 with the official
            23 px kernel on every crop.
            Expected: 75.3% top-1 linear (SwAV paper, Table 1, ResNet-50,
            800 epochs, 2x224 + 6x96).
            Time per epoch: not measured; 2x224 + 6x96 is ~2.2x the pixels of
            SimCLR's 2x224, so expect ~2.2x SimCLR's per-epoch time.
            TPU v3-32 or larger; pod slices / multi-host GPU: launch/README.md
            (same config; --config.batch_size is the GLOBAL batch, the lr
            scales with it; min_lr does not).

smoke       Tiny model, 6 steps, 2 global + 2 local crops, queue on: for tests
            (seconds on CPU).

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import functools

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "cifar10", "imagenet", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = runbook.check_preset(arg or "cifar10", PRESETS, "swav")
  c = runbook.base_config("swav")
  # Projector: Linear-BN-ReLU-Linear 2048 -> 128 (resnet50.py `hidden_mlp`,
  # `output_dim`); the output is L2-normalised before the prototypes.
  c.projector = ml_collections.ConfigDict(
      dict(hidden_dims=(2048,), out_dim=128, use_bn=True, last_bn=False))
  c.loss = ml_collections.ConfigDict(dict(
      temperature=0.1,          # T of the swapped-prediction softmax (paper 0.1)
      epsilon=0.05,             # Sinkhorn entropic regularisation (paper 0.05)
      sinkhorn_iterations=3))   # Sinkhorn-Knopp iterations (paper 3)
  c.swav = ml_collections.ConfigDict(dict(
      num_prototypes=3000,      # K (paper 3000 on ImageNet; solo-learn CIFAR 3000)
      queue_length=0,           # embeddings per global crop; 0 = no queue (paper
                                # 3840 at batch 256, none at 4096); rounded down
                                # to a multiple of the global batch
      epoch_queue_starts=15.0,  # epochs before the queue fills (official 15)
      freeze_prototypes_epochs=1.0))  # prototypes fixed this many epochs
  if preset == "cifar10":
    runbook.solo_cifar10(c, recipes.simclr_recipe)
    # solo-learn symmetric.yaml: jitter strength 1.0 and blur p=0.5 at 32 px.
    c.views.color_jitter.update(brightness=0.8, contrast=0.8, saturation=0.8,
                                hue=0.2)
    c.views.blur.p = 0.5
    c.swav.update(num_prototypes=3000, queue_length=3840, epoch_queue_starts=50.0,
                  freeze_prototypes_epochs=2.0)
    c.optimizer.update(base_lr=0.6, weight_decay=1e-6, trust_coefficient=0.02,
                       warmup_epochs=10.0)
  elif preset == "imagenet":
    recipe = functools.partial(
        recipes.multicrop_recipe, local_size=96, num_local=6,
        global_scale=(0.14, 1.0), local_scale=(0.05, 0.14),
        # multicropdataset.py blurs every crop with a 23 px kernel; jssl's
        # kernel is a fraction of the crop side, 23/96 on the local crops.
        local_overrides={"blur.kernel_fraction": 23 / 96})
    runbook.imagenet_data(c, recipe)
    c.views.blur.kernel_fraction = 23 / 224
    # Colour distortion strength 1.0 (multicropdataset.py get_color_distortion).
    c.views.color_jitter.update(brightness=0.8, contrast=0.8, saturation=0.8,
                                hue=0.2)
    c.batch_size = 4096
    c.total_epochs = 800.0
    c.model.update(name="resnet50", stem="imagenet")
    c.swav.update(num_prototypes=3000, queue_length=0,
                  freeze_prototypes_epochs=1.0)   # 313 iterations at 4096
    # base_lr 4.8 at batch 4096 = 0.3 x B/256; final_lr 0.0048 (absolute).
    c.optimizer.update(base_lr=0.3, weight_decay=1e-6, trust_coefficient=0.001,
                       warmup_epochs=10.0, min_lr=0.0048)
  else:  # quickstart, smoke
    smoke = preset == "smoke"
    # Two 16 px global crops; no local crops on the quickstart: the digits are
    # 8x8 upsampled, so an 8 px local crop holds a few source pixels; with 2
    # of them the codes stayed near-uniform (collapse) in 40-step trials
    # (swav README "Common issues": fewer crops).
    # The smoke preset keeps 2 local crops to exercise multi-crop.
    recipe = functools.partial(
        recipes.multicrop_recipe, local_size=8, num_local=2 if smoke else 0,
        global_scale=(0.14, 1.0), local_scale=(0.14, 0.4))
    runbook.digits_data(c, recipe, smoke=smoke)
    c.projector.update(hidden_dims=(256,), out_dim=32)
    # epsilon 0.02 < 0.05: sharper codes; at 0.05 the quickstart collapsed to
    # uniform codes (loss ln K), the failure the swav README's "Common issues"
    # fixes first with a lower epsilon. The log-domain Sinkhorn is stable there.
    c.loss.epsilon = 0.02
    c.swav.update(num_prototypes=100, queue_length=0, epoch_queue_starts=0.0,
                  freeze_prototypes_epochs=1.0)   # ~5 steps of 256
    c.optimizer.update(name="lars", base_lr=0.6, weight_decay=1e-6,
                       trust_coefficient=0.02, warmup_epochs=2.0)
    if smoke:
      c.projector.update(hidden_dims=(32,), out_dim=16)
      # The queue (2 batches of 32) fills in steps 0-1 and is used from step 2.
      c.swav.update(num_prototypes=16, queue_length=64, epoch_queue_starts=0.0,
                    freeze_prototypes_epochs=0.05)   # ~2 steps of 32
  c.views.num_views = 2   # global crops: the two that get codes
  return c
