"""I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture", CVPR; facebookresearch/ijepa
`src/train.py`, `src/masks/multiblock.py`, `src/models/vision_transformer.py`).

One view x (random resized crop only, Sec. 4 / App. A). Per step,
`jssl.masks.multiblock` draws M_t = 4 target blocks (scale 0.15-0.2, aspect
0.75-1.5) and M_c = 1 context block (scale 0.85-1.0, square) with the targets
removed from it. Then (train.py `forward_target`, `forward_context`, `loss_fn`):

  context encoder f_theta on the context tokens only (keep_indices; position
      embeddings added before the selection)          z  [M_c*B, N_c, D]
  predictor g_phi(z, context positions, target positions)  p  [M_t*M_c*B, N_t, D]
  target encoder f_xi on the FULL image, layer-normed per token (no affine),
      stop-gradient, the target blocks gathered        h  [M_t*M_c*B, N_t, D]
  L = mean smooth-L1(p - h)                            (`jssl.losses.ijepa`)
  xi <- m xi + (1 - m) theta, m linear from ema.base_momentum (0.996) to
      ema.final_momentum (1.0) over the run (train.py `momentum_scheduler`).

The target encoder is an EMA copy of the context encoder (same architecture,
initialised as a copy, train.py `copy.deepcopy(encoder)`); it lives in
`method_state`, so no gradient reaches it. The predictor (`jssl.models.ijepa.
Predictor`) is a narrow ViT: `config.predictor` width (384), depth (12 in the
paper's ViT-H/14 config), num_heads (ijepa: the encoder's).

Evaluation / export: the TARGET encoder's average-pooled last-layer patch
tokens (`config.model.pool='gap'`: mean of the final-LayerNorm patch tokens),
what the paper's linear probe uses (Sec. 5, "we use the target encoder ...
average pool its output"). The online probe sees the same features of the
training view's full image (computed by the target pass anyway).

Static shapes: the token lists are padded to fixed lengths with validity
masks (see `jssl.masks`): the context encoder and the predictor mask the
padding as attention keys, the loss averages over valid target tokens only.
Unlike ijepa, no image's context is truncated to the batch minimum.

Deviations: jssl's ViT has a cls token; the context and target encoders keep
it (it is attended to, never a target; ijepa's encoder has none). The learning
rate warms up from 0 (ijepa: from start_lr 2e-4) and the weight-decay schedule
is jssl's cosine (ijepa's CosineWDSchedule is the same curve). No drop-path
(ijepa's configs use none). Initialisation follows jssl's ViT (xavier), not
ijepa's trunc-normal with per-depth rescaling. `config.masks.placement`:
'ijepa' (the official code's block placement, the cifar10 / imagenet presets)
or 'uniform' (blocks anywhere they fit, up to the whole grid: the paper's
description; the 16 px quickstart, whose 4 x 4 grid the official placement
cuts to its top-left 3 x 3; `jssl.masks` module doc).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl import errors, losses, masks, models, precision
from jssl.methods import base, common
from jssl.methods.base import Method
from jssl.models.ijepa import Predictor, apply_with_key_valid

_PREDICTOR_KEYS = ("width", "depth", "num_heads", "mlp_ratio")
_MASK_KEYS = ("num_targets", "target_scale", "target_aspect", "num_context", "context_scale",
              "context_aspect", "min_keep", "placement")
_OPTIONAL_KEYS = {"mlp_ratio", "placement"}


def _as_dict(cfg, allowed, field):
  d = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
  unknown = sorted(set(d) - set(allowed))
  if unknown:
    raise errors.ConfigError(f"unknown config.{field} keys {unknown}; allowed: {list(allowed)}")
  missing = sorted(set(allowed) - set(d) - _OPTIONAL_KEYS)
  if missing:
    raise errors.ConfigError(f"I-JEPA needs config.{field}.{missing[0]} (see configs/ijepa.py)")
  return d


def check(config) -> tuple[tuple[int, int], dict, dict]:
  """Build-time checks; returns (patch grid, mask settings, predictor settings)."""
  if not models.is_vit(config.model):
    raise errors.ConfigError(
        f"I-JEPA predicts patch-token embeddings of a ViT; config.model.name="
        f"{config.model.get('name')!r} is not a ViT (use one of "
        f"{', '.join(n for n in models.VIT_VARIANTS if n != 'vit_test')})")
  if config.model.get("pool", "cls") != "gap":
    raise errors.ConfigError(
        f"I-JEPA evaluates the average-pooled patch tokens (paper Sec. 5); "
        f"config.model.pool={config.model.get('pool', 'cls')!r} (set it to 'gap')")
  if config.views.num_views != 1:
    raise errors.ConfigError(f"I-JEPA uses one view per image; config.views.num_views="
                             f"{config.views.num_views} (set it to 1)")
  if common.num_local_views(config):
    raise errors.ConfigError("I-JEPA uses no multi-crop local views; set config.views.local.num=0")
  common.require_fields(config, "I-JEPA", ("masks", "predictor", "ema"))
  p = int(config.model.get("patch_size", 16))
  size = int(config.views.image_size)
  if size % p:
    raise errors.ConfigError(f"I-JEPA: config.views.image_size={size} is not divisible by "
                             f"config.model.patch_size={p}")
  grid = (size // p, size // p)
  m = _as_dict(config.masks, _MASK_KEYS, "masks")
  m = {k: (tuple(float(x) for x in v) if isinstance(v, (tuple, list)) else v)
       for k, v in m.items()}
  m["num_targets"], m["num_context"] = int(m["num_targets"]), int(m["num_context"])
  m["min_keep"] = int(m["min_keep"])
  m["placement"] = str(m.get("placement", "ijepa"))
  masks.check_multiblock(grid, prefix="config.masks", **m)
  pred = _as_dict(config.predictor, _PREDICTOR_KEYS, "predictor")
  if int(pred["width"]) % int(pred["num_heads"]) or int(pred["width"]) % 4:
    raise errors.ConfigError(f"config.predictor.width={pred['width']} must be divisible by "
                             f"config.predictor.num_heads={pred['num_heads']} and by 4 "
                             "(sin-cos position embeddings)")
  return grid, m, pred


def make_predictor(config, encoder) -> Predictor:
  _, _, pred = check(config)
  return Predictor(width=int(pred["width"]), depth=int(pred["depth"]),
                   num_heads=int(pred["num_heads"]),
                   mlp_ratio=float(pred.get("mlp_ratio", 4.0)), out_dim=encoder.width,
                   dtype=encoder.dtype, attention_impl=encoder.attention_impl,
                   remat=encoder.remat)


def linear_momentum(config, length):
  """m(step): linear from ema.base_momentum to ema.final_momentum over the run
  (ijepa train.py: `ema[0] + i * (ema[1] - ema[0]) / (ipe * num_epochs)`)."""
  total = base.require_length(length, "I-JEPA target momentum").total_steps
  start, end = float(config.ema.base_momentum), float(config.ema.final_momentum)
  if not 0.0 <= start <= end <= 1.0:
    raise errors.ConfigError(f"I-JEPA: need 0 <= ema.base_momentum <= ema.final_momentum <= 1, "
                             f"got {start}, {end}")

  def momentum(step):
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(total, 1), 0.0, 1.0)
    return start + (end - start) * frac

  return momentum


def make(config, length=None) -> Method:
  """I-JEPA from `config.model` (a ViT, pool 'gap'), `.predictor`, `.masks`, `.ema`."""
  grid, mcfg, _ = check(config)
  momentum = linear_momentum(config, length)
  encoder = models.make_encoder(config.model)
  predictor = make_predictor(config, encoder)

  def sample(key, batch):
    return masks.multiblock(key, batch, grid, **mcfg)

  def forward(params, x, mb):
    """Context encoder + predictor: predictions [M_t*M_c*B, N_t, D]."""
    m_c, b, n_c = mb.context.shape
    xs = jnp.concatenate([x] * m_c, axis=0) if m_c > 1 else x
    keep = mb.context.reshape(m_c * b, n_c)
    key_valid = jnp.concatenate([jnp.ones((m_c * b, 1), bool),       # the cls token
                                 mb.context_valid.reshape(m_c * b, n_c)], axis=1)
    z = apply_with_key_valid(encoder, {"params": params["encoder"]}, xs, key_valid,
                             train=True, keep_indices=keep)["tokens"]
    return predictor.apply({"params": params["predictor"]}, z, mb.context, mb.context_valid,
                           mb.targets, mb.target_valid, grid)

  def init(key, views):
    x = views[0]
    k_enc, k_pred, k_mask = jax.random.split(key, 3)
    mb = sample(k_mask, x.shape[0])
    m_c, b, n_c = mb.context.shape
    enc_params = encoder.init(k_enc, x, train=True,
                              keep_indices=mb.context.reshape(m_c * b, n_c))["params"]
    z = jnp.zeros((m_c * b, n_c, encoder.width), encoder.dtype)
    pred_params = predictor.init(k_pred, z, mb.context, mb.context_valid, mb.targets,
                                 mb.target_valid, grid)["params"]
    params = {"encoder": enc_params, "predictor": pred_params}
    # The target encoder starts as a copy (ijepa: copy.deepcopy(encoder)); a
    # copy, not an alias: the state is donated.
    target = {"params": {"encoder": jax.tree.map(jnp.array, enc_params)}, "batch_stats": {}}
    return params, {"batch_stats": {}, "target": target}

  def loss(params, method_state, views, batch, key, step):
    del batch
    (x,) = views
    mb = sample(key, x.shape[0])
    target = encoder.apply({"params": method_state["target"]["params"]["encoder"]}, x,
                           train=True)
    tokens = jax.lax.stop_gradient(precision.cast_to_f32(target["tokens"]))
    pred = forward(params, x, mb)
    value, aux = losses.ijepa(pred, tokens, mb.targets, mb.context.shape[0], mb.target_valid)
    h = jax.lax.stop_gradient(target["pre_logits"])
    metrics = {"repr_std": common.feature_std(h), base.PROBE_FEATURES: h,
               "loss_mse": aux["loss_mse"],
               "context_tokens": jnp.mean(jnp.sum(mb.context_valid, axis=-1).astype(jnp.float32)),
               "target_tokens": jnp.mean(jnp.sum(mb.target_valid, axis=-1).astype(jnp.float32)),
               "ema_momentum": momentum(step)}
    return value, (method_state, metrics)

  def encoder_variables(params, method_state):
    del params
    return {"params": method_state["target"]["params"]["encoder"]}

  return Method(init=init, loss=loss, update_state=common.target_update_fn(momentum),
                encoder=encoder, encoder_variables=encoder_variables)
