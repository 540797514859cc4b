"""Building blocks of the run-book configs in `configs/`.

Every `configs/<method>.py` starts from `base_config(method)` and picks its
data with `cifar10_data`, `imagenet_data` or `digits_data` (the offline
quickstart), then sets the method's own fields. What is shared lives here
once: the loop fields, the dataset statistics, the quickstart and smoke
settings. Each field's comment gives its unit.
"""
from __future__ import annotations

from typing import Callable

import ml_collections

from jssl.errors import ConfigError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)   # canonical train-set statistics
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

QUICKSTART_SIZE = 16   # digits upsampled from 8x8 to this side, pixels


def base_config(method: str) -> ml_collections.ConfigDict:
  """Loop, model, optimiser, data, eval and checkpoint fields every run has."""
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  c.batch_size = 256            # GLOBAL batch (images; each gives V views)
  c.total_epochs = 100.0
  c.total_steps = -1            # > 0 overrides total_epochs
  c.stop_at_step = -1           # > 0: checkpoint and exit there (resumable)
  c.log_every_steps = 50
  c.eval_every_steps = 0        # 0: evaluate only at the end
  c.prefetch = 2                # global batches prepared ahead
  c.mesh = [("data", -1)]       # data parallel over every device

  c.model = ml_collections.ConfigDict(
      dict(name="resnet18", stem="cifar", dtype="float32", width_multiplier=1.0,
           conv_impl="auto"))  # auto: measured per CPU model (jssl.cpu_tuning), XLA conv elsewhere
  c.optimizer = ml_collections.ConfigDict(dict(
      name="lars", base_lr=0.3, lr_scaling="linear", weight_decay=1e-6,
      momentum=0.9, trust_coefficient=0.001, warmup_epochs=10.0,
      grad_clip_norm=0.0,
      layer_decay=1.0,          # ViT layer-wise lr decay (1 = off; schedules.layer_decay)
      patch_embed_lr_mult=1.0))  # ViT patch embedding's extra lr scale (DINOv2: 0.2)
  # source: 'tfds' (a prepared TFDS dataset `name` in `data_dir`, probes on
  # `train_split` / `test_split`), 'folder' (`path` = DIR/<class>/*.jpg
  # labelled, or DIR/*.jpg unlabelled; .jpg .jpeg .png of any size, decoded
  # and cropped on host by `workers` threads), 'npz' (`path` = FILE.npz with
  # `images` uint8 [N, H, W, C] and optional `labels` [N]) or 'digits' (the
  # offline quickstart). eval_path: a labelled folder or .npz for the linear /
  # kNN probes of folder and npz runs (unset: probes skipped, training and
  # export unchanged). README "Your own data".
  none = lambda: ml_collections.FieldReference(None, field_type=str)  # noqa: E731
  c.data = ml_collections.ConfigDict(dict(
      source="tfds", name="cifar10", data_dir=none(), train_split="train",
      test_split="test", path=none(), eval_path=none(),
      workers=0))               # host decode threads per process; 0: one per core
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=512, image_size=32, crop_fraction=1.0, knn_k=200,
      knn_temperature=0.1, at_end=True,
      # The linear probe's input: 'pre_logits' (the encoder's pooled feature,
      # also kNN's) or, for a ViT, 'cls_last4' (the normed cls tokens of the
      # last 4 blocks, concatenated: DINO / iBOT's ViT-S linear probe).
      linear_feature="pre_logits",
      # PNGs in workdir/plots at the end (needs matplotlib): training curves,
      # the test-feature spectrum and a 2-D 'pca' or 'tsne' projection by
      # class; '' turns them off.
      plots="pca"))
  # Online linear probe on stop-gradient features of the first view, its
  # train-batch accuracy logged with the loss (jssl.step.OnlineProbe).
  c.online_probe = ml_collections.ConfigDict(
      dict(enabled=True, lr=0.1, momentum=0.9))
  # Representation diagnostics of the first view's encoder features in the
  # step (jssl.step.Diagnostics): RankMe, uniformity, std ratio with a
  # collapse warning, Vendi, NC1, ... logged as diag/* every `every_steps`
  # steps (0: at every log step; else a multiple of log_every_steps).
  c.diagnostics = ml_collections.ConfigDict(dict(enabled=True, every_steps=0))
  c.checkpoint = ml_collections.ConfigDict(
      dict(every_steps=1000, keep=3, use_async=True))
  c.export = ml_collections.ConfigDict(dict(enabled=True))
  # Where process 0 sends each metrics row besides workdir/metrics.jsonl
  # (jssl.metrics_log): TensorBoard event files in workdir/tensorboard (no
  # TensorFlow needed), and wandb when `wandb` is set (pip install wandb).
  # Empty strings leave wandb's own default (project 'jssl'; entity: your
  # default; name: random); wandb_mode 'offline' logs without a network.
  c.logging = ml_collections.ConfigDict(dict(
      tensorboard=True, wandb=False, wandb_project="jssl", wandb_entity="",
      wandb_name="", wandb_mode=""))
  return c


Recipe = Callable[..., ml_collections.ConfigDict]


def cifar10_data(c: ml_collections.ConfigDict, recipe: Recipe) -> None:
  """TFDS `cifar10` (32 px), views from `recipe(32, mean=, std=)`."""
  c.data.update(source="tfds", name="cifar10", test_split="test")
  c.views = recipe(32, mean=CIFAR10_MEAN, std=CIFAR10_STD)
  c.eval.update(image_size=32, crop_fraction=1.0)
  c.checkpoint.every_steps = 2000


def solo_cifar10(c: ml_collections.ConfigDict, recipe: Recipe, *,
                 epochs: float = 1000.0) -> None:
  """`cifar10_data` with solo-learn's CIFAR setting every one of its recipes
  shares (vturrisi/solo-learn `scripts/pretrain/cifar/*.yaml`): ResNet-18
  with the CIFAR stem, global batch 256, 1000 epochs."""
  cifar10_data(c, recipe)
  c.batch_size = 256
  c.total_epochs = float(epochs)
  c.model.update(name="resnet18", stem="cifar")


def imagenet_data(c: ml_collections.ConfigDict, recipe: Recipe,
                  size: int = 224) -> None:
  """TFDS `imagenet2012` (manual download), 224 px views, 0.875 centre crop."""
  c.data.update(source="tfds", name="imagenet2012", test_split="validation")
  c.views = recipe(size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
  c.eval.update(image_size=size, crop_fraction=0.875, batch_size=1024)
  c.checkpoint.every_steps = 5000


def digits_data(c: ml_collections.ConfigDict, recipe: Recipe, *,
                smoke: bool = False) -> ml_collections.FieldReference:
  """The offline quickstart data: scikit-learn's digits at 16 px.

  One `FieldReference` drives the data, the views and the eval size, so
  `--config.data.kwargs.size=24` resizes all three. Returns it.
  With `smoke=True`, the tiny settings tests use: ResNet-tiny, batch 32,
  6 steps, synchronous checkpoints every 3 steps.
  """
  from jssl.data import digits  # pylint: disable=import-outside-toplevel
  size = ml_collections.FieldReference(QUICKSTART_SIZE)
  c.data.update(source="arrays", name="digits")
  c.data.kwargs = ml_collections.ConfigDict(dict(size=size))
  mean, std = digits.digits_mean_std(QUICKSTART_SIZE)
  c.views = recipe(QUICKSTART_SIZE, mean=mean, std=std)
  c.views.image_size = size
  # A fixed jitter order: under vmap a random order evaluates every ordering
  # (4x the jitter work), which is measurable on a 2-core CPU.
  c.views.color_jitter.random_order = False
  c.eval.update(image_size=size, batch_size=256)
  c.log_every_steps = 25
  c.checkpoint.every_steps = 100
  if smoke:
    c.model.update(name="resnet_tiny", stem="cifar", width_multiplier=1.0)
    c.batch_size = 32
    c.total_steps = 6
    c.log_every_steps = 2
    c.checkpoint.update(every_steps=3, use_async=False)
    c.eval.update(batch_size=64, knn_k=20)
  else:
    # ResNet-10 at half width (16-32-64-128), 16 px: ~0.7 s per step of
    # 256 images x 2 views on 2 CPU cores.
    c.model.update(name="resnet_small", stem="cifar", width_multiplier=0.5)
    c.batch_size = 256
    c.total_steps = 200
  return size


def check_preset(preset: str, presets: tuple[str, ...], file: str) -> str:
  if preset not in presets:
    raise ConfigError(f"unknown preset {preset!r} for {file}; choose one of "
                      f"{', '.join(presets)}")
  return preset
