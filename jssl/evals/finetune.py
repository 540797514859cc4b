r"""Trained protocols on augmented crops: the papers' linear evaluation and
label-fraction fine-tuning.

The cached-feature probes (`linear_probe`, `knn`, ...) encode every image once,
centre-cropped. The tables of the SSL papers come from two protocols that
train on random crops instead, and this module runs both in one jitted,
data-sharded step (`jssl.sharding` mesh; the batch split over the data axis,
everything else replicated):

  linear evaluation  The encoder is frozen and runs in inference mode (batch
                     norm on its running statistics); a linear classifier on
                     its `pre_logits` is trained with SGD / LARS on random
                     resized crops + horizontal flips, and tested on centre
                     crops. This is the protocol behind the linear-evaluation
                     tables of SimCLR, BYOL, MoCo and MAE.
  fine-tuning        Encoder and classifier train together (batch norm in
                     training mode, running statistics updated) on a class-
                     balanced `label_fraction` of the train labels: the 1% /
                     10% semi-supervised tables of SimCLR, BYOL and SwAV.

Presets (`protocol_config(protocol, preset)`), each from its source:

  linear / simclr    google-research/simclr README, "Finetuning" (the linear
                     head on ImageNet, `--train_mode=finetune
                     --fine_tune_after_block=4`): Nesterov momentum SGD
                     (`tf2/model.py` build_optimizer, momentum 0.9), learning
                     rate 0.1 x B/256 (`WarmUpAndCosineDecay`, linear scaling,
                     cosine decay), no warm-up, weight decay 1e-6, 90 epochs,
                     batch 4096, zero-initialised classifier
                     (`--zero_init_logits_layer`). Augmentation: random resized
                     crop (area 0.08-1, ratio 3/4-4/3) + flip, no colour (SimCLR
                     `preprocess_for_train(color_distort=False)`). Its README
                     gives ~64.5% for the 100-epoch ResNet-50 with this head.
  linear / mae       MAE (He et al. 2022) Appendix A.3, Table 10 and
                     `main_linprobe.py`: LARS (momentum 0.9, trust 0.001, bias
                     and norm parameters excluded), base lr 0.1 x B/256, weight
                     decay 0, 10 warm-up epochs + cosine, 90 epochs, batch
                     16384; a batch norm without affine parameters (eps 1e-6)
                     before the classifier, which keeps the lr independent of
                     the feature scale.
  finetune / simclr  SimCLR (Chen et al. 2020) Appendix B.5: Nesterov momentum
                     SGD (momentum 0.9), batch 4096, lr 0.05 x B/256 (0.8),
                     no warm-up, no weight decay, random crop + flip only; 60
                     epochs on 1% of the labels, 30 on 10% (the same numbers in
                     SimCLRv2, Chen et al. 2020b, Sec. 4).

Which number is which: `linear_probe.linear_probe` (`linear` in `jssl.evaluate`,
`linear_top1` in `results.json`) fits a regularised logistic regression to
cached centre-crop features in seconds, its L2 chosen on held-out data;
`linear_sgd` here is the papers' protocol (their reported numbers), which
costs `epochs` forward passes of the encoder over the train set. The two
usually agree within a few points; only the second is comparable to a paper's
table.

Deviations, both from running at any scale: the global batch is
`min(preset batch, train examples)` rounded down to a multiple of the
data-parallel devices (the learning rate follows it through the linear
scaling), and an epoch is `floor(N / B)` steps (`ArraySource` drops the
remainder; TFDS streams). SimCLR decays its head's bias too (an L2 loss on
every non-BN variable); jssl decays kernels only, as its pretraining
optimisers do. Label subsets are drawn per class (`label_subset`), not SimCLR's
released ImageNet file lists (`imagenet_subsets/1percent.txt`), which are
a uniform draw of about the same per-class size.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jssl import errors

from jssl import schedules
from jssl import sharding as shd
from jssl.data import augment as aug_lib
from jssl.data import eval_transform

PROTOCOLS = ("linear", "finetune")
PRESETS = {"linear": ("simclr", "mae"), "finetune": ("simclr",)}
_KEYS = ("train_encoder", "label_fraction", "epochs", "batch_size", "head_bn",
         "head_init", "optimizer", "crop_scale", "crop_ratio", "flip_p", "seed",
         "log_every_steps")


def _sgd(base_lr: float, weight_decay: float, warmup_epochs: float = 0.0):
  return dict(name="sgd", base_lr=base_lr, lr_scaling="linear", momentum=0.9,
              nesterov=True, weight_decay=weight_decay, warmup_epochs=warmup_epochs)


def protocol_config(protocol: str, preset: str = "simclr", *,
                    label_fraction: Optional[float] = None,
                    **overrides) -> ml_collections.ConfigDict:
  """The settings of one trained protocol (module docstring), locked.

  Args:
    protocol: 'linear' (frozen encoder) or 'finetune' (encoder trained).
    preset: a name in `PRESETS[protocol]`.
    label_fraction: share of the train labels, in (0, 1]; 'linear' uses 1.0,
      'finetune' needs it (SimCLR's epochs depend on it: 60 at <= 1%, else 30).
    **overrides: any field of the returned config (`epochs=5`,
      `batch_size=256`, `optimizer=dict(base_lr=0.2)`); unknown names raise.

  Fields: `train_encoder`, `label_fraction`, `epochs`, `batch_size` (global,
  capped by the data), `head_bn` (BN without affine before the classifier),
  `head_init` ('zeros' | 'normal': N(0, 0.01^2)), `optimizer` (as
  `config.optimizer`, see `jssl.schedules.make_optimizer`), `crop_scale`,
  `crop_ratio`, `flip_p`, `seed`, `log_every_steps` (0 = quiet).
  """
  if protocol not in PRESETS:
    raise errors.ConfigError(f"unknown trained protocol {protocol!r}; choose from {list(PRESETS)}")
  if preset not in PRESETS[protocol]:
    raise errors.ConfigError(f"unknown {protocol} preset {preset!r}; choose from "
                             f"{list(PRESETS[protocol])}")
  c = dict(train_encoder=protocol == "finetune", label_fraction=1.0, head_bn=False,
           head_init="zeros", crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3),
           flip_p=0.5, seed=0, log_every_steps=0)
  if protocol == "linear":
    if label_fraction not in (None, 1.0):
      raise errors.ConfigError("the linear protocol trains on every label; label_fraction "
                               "is for 'finetune'")
    if preset == "simclr":
      c.update(epochs=90.0, batch_size=4096, optimizer=_sgd(0.1, 1e-6))
    else:  # mae
      c.update(epochs=90.0, batch_size=16384, head_bn=True, head_init="normal",
               optimizer=dict(name="lars", base_lr=0.1, lr_scaling="linear",
                              momentum=0.9, trust_coefficient=0.001,
                              weight_decay=0.0, warmup_epochs=10.0))
  else:
    if label_fraction is None:
      raise errors.ConfigError("the finetune protocol needs label_fraction (e.g. 0.01 or 0.1)")
    c.update(label_fraction=float(label_fraction),
             epochs=60.0 if label_fraction <= 0.01 else 30.0, batch_size=4096,
             optimizer=_sgd(0.05, 0.0))
  cfg = ml_collections.ConfigDict(c)
  unknown = sorted(set(overrides) - set(_KEYS))
  if unknown:
    raise errors.ConfigError(f"unknown {protocol} settings {unknown}; allowed: {list(_KEYS)}")
  opt = overrides.pop("optimizer", None)
  cfg.update(overrides)
  if opt:
    cfg.optimizer.update(opt)
  if not 0.0 < cfg.label_fraction <= 1.0:
    raise errors.ConfigError(f"label_fraction must be in (0, 1], got {cfg.label_fraction}")
  if cfg.epochs <= 0 or cfg.batch_size < 1:
    raise errors.ConfigError(f"epochs ({cfg.epochs}) and batch_size ({cfg.batch_size}) must be > 0")
  if cfg.head_init not in ("zeros", "normal"):
    raise errors.ConfigError(f"head_init must be 'zeros' or 'normal', got {cfg.head_init!r}")
  cfg.lock()
  return cfg


def label_subset(labels, fraction: float, *, seed: int = 0) -> np.ndarray:
  """Sorted indices of a deterministic, class-balanced `fraction` of `labels`.

  Every class keeps `max(1, round(fraction * n_c))` of its `n_c` examples,
  drawn by a permutation seeded with `(seed, class)`: the subset of a class
  does not depend on the other classes, and a larger fraction with the same
  seed is a superset of a smaller one (the draw is a prefix of one order).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.size == 0:
    raise ValueError(f"labels must be a non-empty [N] array, got shape {labels.shape}")
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
  keep = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    k = max(1, int(round(fraction * len(idx))))
    order = np.random.default_rng([seed, int(c)]).permutation(len(idx))
    keep.append(idx[order[:k]])
  return np.sort(np.concatenate(keep))


# --------------------------------------------------------------------------
# Data.

class TrainData(NamedTuple):
  """Labelled train images for a trained protocol.

  `batches(global_batch, seed)` yields host batches `{'label': int32 [b]}`
  with either `'image': uint8 [b, H, W, C]` (whole images: the random
  resized crop runs on device) or `'views': uint8 [b, 1, s, s, C]` (crops
  taken on host, as `jssl.data.tfds_train_batches` does).
  """
  num_examples: int
  batches: Callable[[int, int], Iterator[dict]]


def array_train_data(images: np.ndarray, labels: np.ndarray,
                     indices: Optional[np.ndarray] = None) -> TrainData:
  """In-memory images (rows `indices` only, when given)."""
  from jssl.data import sources  # pylint: disable=import-outside-toplevel
  if indices is not None:
    images, labels = images[indices], labels[indices]
  src = sources.ArraySource(images, labels, process_index=0, process_count=1)
  return TrainData(src.num_examples,
                   lambda batch, seed: src.train_batches(batch, seed=seed))


def tfds_train_data(name: str, *, split: str, data_dir: Optional[str], image_size: int,
                    crop_scale: Sequence[float], crop_ratio: Sequence[float],
                    indices: Optional[np.ndarray] = None) -> TrainData:
  """A prepared TFDS split, cropped on host to `image_size` (rows `indices`
  of the split only, when given)."""
  from jssl.data import host, tfds_source  # pylint: disable=import-outside-toplevel
  if indices is None:
    n = tfds_source.split_size(name, split, data_dir)
  else:
    n = int(len(indices))

  crops = host.HostCrops(image_size, 1, tuple(crop_scale), tuple(crop_ratio))

  def batches(batch, seed):
    return tfds_source.tfds_train_batches(tfds_source.TfdsTrainSpec(
        name=name, split=split, data_dir=data_dir, batch_size_per_process=batch, seed=seed,
        example_indices=indices, process_index=0, process_count=1), crops)

  return TrainData(n, batches)


# --------------------------------------------------------------------------
# Model and step.

class ClassifierHead(nn.Module):
  """Linear classifier, optionally after a batch norm without affine
  parameters (MAE's linear probe: `BatchNorm1d(affine=False, eps=1e-6)`,
  running statistics with PyTorch momentum 0.1, i.e. flax momentum 0.9)."""
  num_classes: int
  bn: bool = False
  kernel: str = "zeros"  # 'zeros' | 'normal' (N(0, 0.01^2))

  @nn.compact
  def __call__(self, x, train: bool):
    if self.bn:
      x = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                       epsilon=1e-6, momentum=0.9)(x)
    kernel_init = (nn.initializers.zeros if self.kernel == "zeros"
                   else nn.initializers.normal(0.01))
    return nn.Dense(self.num_classes, kernel_init=kernel_init)(x)


def _augment(key, image, *, size, scale, ratio, flip_p, mean, std, crop):
  """One example: random resized crop (unless cropped on host) + flip + normalise."""
  k_crop, k_flip = jax.random.split(key)
  x = aug_lib.to_float(image)
  if crop:
    x = aug_lib.random_resized_crop(k_crop, x, size=size, scale=scale, ratio=ratio)
  x = aug_lib.random_flip(k_flip, x, p=flip_p)
  return aug_lib.normalize(x, mean=mean, std=std)


def _apply(module, params, stats, x, *, train: bool, rngs=None):
  """`module.apply` -> `(output, stats)`. `stats` is the module's
  `batch_stats` (None without batch norm); a train-mode pass returns the
  updated ones, an inference pass returns them unchanged. `rngs`: the
  'dropout' key of a ViT trained with drop-path (`model.drop_path_rate`)."""
  rngs = rngs if train and rngs is not None else {}
  if stats is None:
    return module.apply({"params": params}, x, train=train, rngs=rngs), None
  variables = {"params": params, "batch_stats": stats}
  if not train:
    return module.apply(variables, x, train=False), stats
  out, upd = module.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
  return out, upd["batch_stats"]


class _Model:
  """Encoder + head as pure functions of `(params, stats)`."""

  def __init__(self, module, frozen_variables, head: ClassifierHead, train_encoder: bool):
    self.module, self.head, self.train_encoder = module, head, train_encoder
    self.encoder_has_bn = "batch_stats" in frozen_variables

  def __call__(self, params, stats, frozen, x, *, train: bool, key=None):
    """Logits and the updated statistics (`stats` unchanged when not training).
    `key`: drop-path key of a fine-tuned ViT (unused otherwise)."""
    new_stats = dict(stats)
    if self.train_encoder:
      out, enc_stats = _apply(self.module, params["encoder"], stats.get("encoder"), x,
                              train=train, rngs=None if key is None else {"dropout": key})
      if enc_stats is not None:
        new_stats["encoder"] = enc_stats
      feats = out["pre_logits"].astype(jnp.float32)
    else:
      feats = jax.lax.stop_gradient(
          self.module.apply(frozen, x, train=False)["pre_logits"].astype(jnp.float32))
    logits, head_stats = _apply(self.head, params["head"], stats.get("head"), feats,
                                train=train)
    if head_stats is not None:
      new_stats["head"] = head_stats
    return logits, new_stats


def _pad_to(batch: dict, multiple: int) -> dict:
  """Pads host rows to a multiple of the devices (mask False on padding)."""
  n = len(batch["label"])
  extra = -n % multiple
  mask = np.asarray(batch.get("mask", np.ones(n, bool)), bool)
  if not extra:
    return dict(batch, mask=mask)
  pad = lambda x: np.concatenate([x, np.zeros((extra,) + x.shape[1:], x.dtype)])
  return {"image": pad(np.asarray(batch["image"])), "label": pad(np.asarray(batch["label"])),
          "mask": pad(mask)}


def train_classifier(module, variables, train: TrainData, test_batches: Iterable[dict], *,
                     num_classes: int, preprocess: dict, cfg: ml_collections.ConfigDict,
                     mesh=None, log: Callable[[str], None] = print,
                     return_variables: bool = False):
  """Trains a classifier on augmented crops through `module`; tests it.

  Args:
    module, variables: the encoder (`jssl.models.make_encoder`) and its
      variables (`params`, and `batch_stats` for a ResNet), e.g. of an export
      (`jssl.load_encoder(...).module / .variables`).
    train: labelled train images (`array_train_data` / `tfds_train_data`),
      already restricted to the label subset when fine-tuning on a fraction.
    test_batches: host batches `{'image': uint8 [b, s, s, C], 'label', 'mask'}`
      already resized and centre-cropped to `preprocess['size']` (as
      `jssl.evaluate.dataset_batches` yields them).
    num_classes: K.
    preprocess: the export's `size`, `mean`, `std` (normalisation of crops).
    cfg: `protocol_config(...)`.
    mesh: a `jssl.sharding` mesh (default: every device on the data axis).
    log: progress lines every `cfg.log_every_steps` steps.
    return_variables: also return the trained variables (host numpy):
      `{'head': {'params', 'batch_stats'?}, 'encoder': {'params',
      'batch_stats'?}}`, the encoder's only when fine-tuned.

  Returns:
    JSON-able dict: `top1` (and `top5` when K > 5) on the test batches, the
    last step's `train_loss` / `train_top1` (augmented train batch), and the
    effective `steps`, `batch_size`, `epochs`, peak `lr`, `num_train`,
    `num_test`, `seconds`, `settings`. With `return_variables`, the pair
    `(results, variables)`.
  """
  t_start = time.time()
  mesh = mesh if mesh is not None else shd.make_mesh()
  n_dev = mesh.shape[shd.DATA_AXIS]
  if jax.process_count() != 1:
    raise NotImplementedError("trained protocols run in one process (all its devices)")
  batch = min(int(cfg.batch_size), train.num_examples) // n_dev * n_dev
  if batch < 1:
    raise ValueError(f"{train.num_examples} train examples cannot fill one row per "
                     f"device on {n_dev} devices")
  steps_per_epoch = train.num_examples // batch
  steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
  tx, schedule = schedules.make_optimizer(cfg.optimizer, global_batch=batch,
                                          total_steps=steps, steps_per_epoch=steps_per_epoch,
                                          model=module)
  head = ClassifierHead(num_classes, bn=bool(cfg.head_bn), kernel=cfg.head_init)
  model = _Model(module, variables, head, bool(cfg.train_encoder))
  size = int(preprocess["size"])
  mean, std = tuple(preprocess["mean"]), tuple(preprocess["std"])
  repl, data = shd.replicated(mesh), shd.data_sharding(mesh)
  frozen = jax.device_put(variables, repl)

  def init(frozen):
    feat_dim = jax.eval_shape(
        lambda v: module.apply(v, jnp.zeros((1, size, size, len(mean))), train=False),
        frozen)["pre_logits"].shape[-1]
    head_vars = head.init(jax.random.key(cfg.seed), jnp.zeros((2, feat_dim)), train=False)
    params, stats = {"head": head_vars["params"]}, {}
    if head.bn:
      stats["head"] = head_vars["batch_stats"]
    if model.train_encoder:
      params["encoder"] = frozen["params"]
      if model.encoder_has_bn:
        stats["encoder"] = frozen["batch_stats"]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "stats": stats,
            "opt_state": tx.init(params)}

  state = jax.jit(init, out_shardings=repl)(frozen)
  state_sh = jax.tree.map(lambda _: repl, state)
  augment = functools.partial(_augment, size=size, scale=tuple(cfg.crop_scale),
                              ratio=tuple(cfg.crop_ratio), flip_p=float(cfg.flip_p),
                              mean=mean, std=std)

  # Traced with the classic threefry lowering, as `jssl.step` does: it
  # compiles several times faster on XLA:CPU, and views stay independent of
  # the sharding (tested 1 vs 8 devices).
  def train_step(state, frozen, images, labels, key):
    crop = images.ndim == 4
    if not crop:
      images = images[:, 0]
    with jax.threefry_partitionable(False):
      keys = shd.example_keys(jax.random.fold_in(key, state["step"]), images)
      x = jax.vmap(functools.partial(augment, crop=crop))(keys, images)

    def loss_fn(params):
      logits, stats = model(params, state["stats"], frozen, x, train=True,
                            key=jax.random.fold_in(jax.random.fold_in(key, state["step"]), 1))
      loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
      return loss, (stats, logits)

    (loss, (stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
           "stats": stats, "opt_state": opt_state}
    top1 = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
    return new, {"loss": loss, "top1": top1, "lr": schedule(state["step"])}

  step_fn = jax.jit(train_step, in_shardings=(state_sh, repl, data, data, repl),
                    out_shardings=(state_sh, repl), donate_argnums=(0,))
  key = jax.random.key(cfg.seed + 1)
  metrics, it = {}, train.batches(batch, int(cfg.seed))
  for i in range(steps):
    b = next(it)
    images = b["image"] if "image" in b else b["views"]
    g = shd.to_global({"x": images, "y": np.asarray(b["label"], np.int32)}, mesh)
    state, metrics = step_fn(state, frozen, g["x"], g["y"], key)
    if cfg.log_every_steps and ((i + 1) % cfg.log_every_steps == 0 or i + 1 == steps):
      m = jax.device_get(metrics)
      log(f"  step {i + 1}/{steps}: loss {float(m['loss']):.4f}, "
          f"batch top-1 {100 * float(m['top1']):.1f}%, lr {float(m['lr']):.4g}")
  train_metrics = jax.device_get(metrics)

  top = min(5, num_classes)

  def eval_step(state, frozen, images, labels, mask):
    x = eval_transform.eval_preprocess(images, size=size, mean=mean, std=std, crop_fraction=1.0)
    logits, _ = model(state["params"], state["stats"], frozen, x, train=False)
    _, ranked = jax.lax.top_k(logits, top)
    hits = ranked == labels[:, None]
    return (jnp.sum(hits[:, 0] & mask), jnp.sum(jnp.any(hits, axis=1) & mask),
            jnp.sum(mask))

  eval_fn = jax.jit(eval_step, in_shardings=(state_sh, repl, data, data, data),
                    out_shardings=repl)
  totals = np.zeros(3, np.int64)
  for b in test_batches:
    b = _pad_to(b, n_dev)
    g = shd.to_global({"x": b["image"], "y": np.asarray(b["label"], np.int32),
                       "m": b["mask"]}, mesh)
    counts = eval_fn(state, frozen, g["x"], g["y"], g["m"])
    totals += np.asarray([int(v) for v in jax.device_get(counts)])
  if totals[2] == 0:
    raise ValueError("the test split yielded no examples")
  out = {"top1": totals[0] / totals[2], "train_loss": float(train_metrics["loss"]),
         "train_top1": float(train_metrics["top1"]), "steps": steps, "batch_size": batch,
         "epochs": steps / steps_per_epoch,
         "lr": float(schedules.scaled_learning_rate(cfg.optimizer, batch)),
         "num_train": int(train.num_examples), "num_test": int(totals[2]),
         "seconds": round(time.time() - t_start, 2), "settings": cfg.to_dict()}
  if num_classes > 5:
    out["top5"] = totals[1] / totals[2]
  out = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v)
         for k, v in out.items()}
  if not return_variables:
    return out
  host = jax.device_get({"params": state["params"], "stats": state["stats"]})
  trained = {}
  for part in ("head", "encoder"):
    if part in host["params"]:
      trained[part] = {"params": host["params"][part]}
      if part in host["stats"]:
        trained[part]["batch_stats"] = host["stats"][part]
  return out, trained
