"""iBOT / DINOv2: self-distillation on the CLS token plus masked patch tokens.

Zhou et al. 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR
(Sec. 3.2, eq. 1-2; bytedance/ibot `main_ibot.py`, `iBOTLoss`, `models/head.py`,
`loader.py::ImageFolderMask`) and Oquab et al. 2023, "DINOv2: Learning Robust
Visual Features without Supervision" (Sec. 4; facebookresearch/dinov2
`dinov2/train/ssl_meta_arch.py`, `dinov2/loss/{dino_clstoken_loss, ibot_patch_loss,
koleo_loss}.py`, `configs/ssl_default_config.yaml`, `dinov2/data/collate.py`).

Built on `jssl.methods.dino` (multi-crop views, EMA teacher, teacher temperature
warm-up, frozen last layer, DINO head). Per step, with B images, 2 global crops
and L local crops:

  * masks m [2B, N]: BEiT block-wise masks on the global crops (`jssl.masks.
    blockwise`): half the 2B crops masked (`masks.mask_probability` 0.5), their
    ratios spread over `masks.mask_ratio_range` (0.1, 0.5) (DINOv2 collate; iBOT's
    ViT-S recipe `--pred_ratio 0 0.3 --pred_ratio_var 0 0.2` draws the same range).
  * student: ViT on the global crops with the masked patches replaced by the mask
    token (`ViT(use_mask_token=True)`, `mask=m`), on the local crops unmasked;
    drop-path in the student only. Teacher (EMA, no drop-path): the unmasked
    global crops only.
  * CLS: the DINO head on every crop's CLS; L_cls = `jssl.losses.dino` (student
    all crops vs the teacher's other global crop; iBOT eq. 1, DINOv2
    `DINOLoss`).
  * patches: the patch head on the global crops' patch tokens; L_patch =
    `jssl.losses.ibot_patch_dense` over the masked tokens (per image mean over
    its masked tokens, summed and divided by the 2B crops: iBOT eq. 2,
    `iBOTLoss` loss2; DINOv2 `forward_masked`). `loss.shared_head` True: the
    same head as the CLS (iBOT `--shared_head true`); False: a separate head of
    the same shape (DINOv2 `ibot_separate_head`).
  * KoLeo (DINOv2 Sec. 4): `loss.koleo_weight` x the sum over the 2 global crops
    of `jssl.losses.koleo` on the student CLS (the encoder's normed CLS token).

  L = L_cls + loss.ibot_weight x L_patch + loss.koleo_weight x L_koleo

Teacher targets (`loss.centering`): 'centering' = DINO/iBOT softmax of centred
logits, with EMA centers c (CLS) and c_p (patches, its own center);
'sinkhorn_knopp' = DINOv2's 3 Sinkhorn-Knopp iterations (`losses.
sinkhorn_knopp_teacher`; for patches over the masked tokens of the global
batch), the centers then stay unused. tau_t warms up 0.04 -> 0.07 for both.

Static shapes: each crop has at most floor(N x high) masked tokens (the block
masks stop at floor(N x ratio)); the patch head runs on that many tokens per crop
(`patch_budget`), the masked ones first, the rest weighted 0 -- the same loss as
DINOv2's gather of the masked tokens, without a data-dependent shape.

State: `{'batch_stats', 'teacher': {'params', 'batch_stats'}, 'center' [K],
'patch_center' [K]}`. Evaluation/export: the TEACHER encoder without the mask
token (iBOT and DINOv2 evaluate the teacher backbone).

Deviations: (1) iBOT updates its patch center from all teacher patch tokens,
DINOv2 (and here) from the masked ones only. (2) KoLeo runs over the global
batch (DINOv2: per GPU), so the result does not depend on the device count.
(3) The separate patch head has the CLS head's shape (DINOv2's defaults are the
same). (4) DINO's per-tensor gradient clipping and frozen last layer(s) as in
`jssl.methods.dino`; DINOv2 clips the global norm (3.0): set `dino.clip_grad=0`
and `optimizer.grad_clip_norm=3.0` for that.
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import errors, losses, masks, models, precision
from jssl.methods import base, common, dino
from jssl.methods.base import Method
from jssl.models import dino_head

NUM_GLOBAL = dino.NUM_GLOBAL
CENTERINGS = ("centering", "sinkhorn_knopp")
PATCH_HEAD = "patch_head"


class IBOTNet(nn.Module):
  """Encoder on the crop groups, the CLS head on every CLS, the patch head on the
  global crops' patch tokens at `token_index` [2B, M] (all tokens when None).

  Returns `(h [V B, D], cls_logits [V B, K], patch_logits [2B, M, K])`.
  """
  encoder: nn.Module
  head: nn.Module
  patch_head: Optional[nn.Module] = None   # None: shared with `head` (iBOT)

  def __call__(self, groups: Sequence[jax.Array], mask=None, token_index=None, *,
               train: bool):
    out = self.encoder(groups[0], train=train, mask=mask)
    h = jnp.concatenate([out["pre_logits"]] + [
        self.encoder(x, train=train)["pre_logits"] for x in groups[1:]], axis=0)
    tokens = out["tokens"]
    if token_index is not None:
      tokens = jnp.take_along_axis(tokens, token_index[..., None], axis=1)
    b, m, d = tokens.shape
    patch_head = self.head if self.patch_head is None else self.patch_head
    patches = patch_head(tokens.reshape(b * m, d), train=train)
    return h, self.head(h, train=train), patches.reshape(b, m, -1)


def _mask_settings(config):
  mc = config.get("masks", None)
  if mc is None:
    raise errors.ConfigError("iBOT needs config.masks (mask_ratio_range, mask_probability)")
  lo, hi = (float(v) for v in mc.mask_ratio_range)
  return (lo, hi), float(mc.mask_probability)


def check(config):
  """Build-time config errors; returns (num_local, grid, (lo, hi), prob, budget)."""
  if not models.is_vit(config.model):
    raise errors.ConfigError(
        f"iBOT masks the patch tokens of a ViT encoder; config.model.name="
        f"{config.model.get('name')!r} is not a ViT")
  if config.model.get("pool", "cls") != "cls":
    raise errors.ConfigError(f"iBOT distils the CLS token; config.model.pool="
                             f"{config.model.pool!r} must be 'cls'")
  common.require_fields(config, "iBOT", ("masks",))
  num_local = dino._check_config(config)  # pylint: disable=protected-access
  lc = config.loss
  for f in ("ibot_weight", "koleo_weight", "shared_head", "centering"):
    if f not in lc:
      raise errors.ConfigError(f"iBOT needs config.loss.{f} (see configs/ibot.py)")
  if float(lc.ibot_weight) < 0:
    raise errors.ConfigError(f"config.loss.ibot_weight={lc.ibot_weight} must be >= 0")
  if float(lc.koleo_weight) < 0:
    raise errors.ConfigError(f"config.loss.koleo_weight={lc.koleo_weight} must be >= 0")
  if lc.centering not in CENTERINGS:
    raise errors.ConfigError(f"config.loss.centering={lc.centering!r} must be one of "
                             f"{CENTERINGS}")
  size, p = int(config.views.image_size), int(config.model.patch_size)
  if size % p:
    raise errors.ConfigError(f"iBOT: config.views.image_size={size} is not divisible by "
                             f"config.model.patch_size={p}")
  grid = (size // p, size // p)
  (lo, hi), prob = _mask_settings(config)
  masks.check_blockwise(grid, mask_ratio_range=(lo, hi), mask_probability=prob,
                        min_aspect=0.3, prefix="config.masks")
  n = grid[0] * grid[1]
  budget = int(n * hi)
  if prob > 0 and budget < 1:
    raise errors.ConfigError(
        f"config.masks.mask_ratio_range={(lo, hi)} masks no token of the {grid[0]}x{grid[1]} "
        "patch grid (floor(N x high) = 0): raise the high end")
  return num_local, grid, (lo, hi), prob, max(budget, 1)


def token_index(mask, budget: int):
  """[B, budget] int32: each row's masked tokens first (raster order), then the
  others; and the [B, budget] bool of which are masked."""
  idx = jnp.argsort(~mask, axis=-1, stable=True)[:, :budget].astype(jnp.int32)
  return idx, jnp.take_along_axis(mask, idx, axis=1)


def dino_cross_entropy(student, teacher_probs, student_temp: float):
  """`losses.dino`'s value with given teacher targets [A, B, K] (DINOv2's
  Sinkhorn-Knopp `DINOLoss.forward`): mean over pairs v != a of
  mean_b -sum_k P_a log softmax(s_v / tau_s)."""
  log_s = jax.nn.log_softmax(student.astype(jnp.float32) / student_temp, axis=-1)
  p = jax.lax.stop_gradient(teacher_probs.astype(jnp.float32))
  ce = -jnp.einsum("abk,vbk->avb", p, log_s).mean(-1)             # [A, V]
  a, v = ce.shape
  keep = ~jnp.eye(a, v, dtype=bool)
  return jnp.sum(jnp.where(keep, ce, 0.0)) / jnp.sum(keep)


def make(config, length=None) -> Method:
  """Builds iBOT / DINOv2 from `config` (see configs/ibot.py); `length` is required."""
  num_local, grid, ratio, prob, budget = check(config)
  length = base.require_length(length, "iBOT teacher momentum / temperature")
  momentum = common.momentum_schedule(config, length, "iBOT teacher momentum")
  temp_schedule = dino.teacher_temperature_schedule(config, length)
  lc = config.loss
  student_temp, center_momentum = float(lc.student_temp), float(lc.center_momentum)
  ibot_weight, koleo_weight = float(lc.ibot_weight), float(lc.koleo_weight)
  sinkhorn = lc.centering == "sinkhorn_knopp"
  clip = float(config.dino.clip_grad)
  freeze_steps = int(round(float(config.dino.freeze_last_layer_epochs)
                           * length.steps_per_epoch))

  encoder = models.make_encoder(config.model)     # evaluated / exported: no mask token
  train_encoder = encoder.clone(use_mask_token=True)
  head_cfg = precision.head_config(config.head, config)
  head = dino_head.make_dino_head(head_cfg)
  patch_head = None if lc.shared_head else dino_head.make_dino_head(head_cfg)
  net = IBOTNet(encoder=train_encoder, head=head, patch_head=patch_head)
  teacher_net = (IBOTNet(encoder=train_encoder.clone(drop_path_rate=0.0), head=head,
                         patch_head=patch_head)
                 if getattr(encoder, "drop_path_rate", 0.0) else net)
  out_dim = int(config.head.out_dim)
  num_views = NUM_GLOBAL + num_local

  def groups_of(views):
    return common.multicrop_groups(views, NUM_GLOBAL, num_local, "iBOT")

  def make_mask(key, n_crops):
    return masks.blockwise(key, n_crops, grid, mask_ratio_range=ratio,
                           mask_probability=prob)

  def init(key, views):
    groups = groups_of(views)
    mask = jnp.zeros(groups[0].shape[:1] + (grid[0] * grid[1],), bool)
    variables = net.init({"params": key, "dropout": jax.random.fold_in(key, 1)},
                         groups, mask, token_index(mask, budget)[0], train=True)
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731
    return params, {"batch_stats": stats,
                    "teacher": {"params": copy(params), "batch_stats": copy(stats)},
                    "center": jnp.zeros((out_dim,), jnp.float32),
                    "patch_center": jnp.zeros((out_dim,), jnp.float32)}

  def loss(params, method_state, views, batch, key, step):
    del batch
    groups = groups_of(views)
    b = views[0].shape[0]
    k_mask, k_drop = jax.random.split(key)
    mask = make_mask(k_mask, NUM_GLOBAL * b)                       # [2B, N]
    idx, valid = token_index(mask, budget)                         # [2B, M]
    if clip:
      params = dino.clip_grads_per_param(params, clip)
    (h, s_cls, s_patch), new_vars = net.apply(
        {"params": params, "batch_stats": method_state["batch_stats"]},
        groups, mask, idx, train=True, mutable=["batch_stats"], rngs={"dropout": k_drop})
    teacher = method_state["teacher"]
    (_, t_cls, t_patch), t_vars = teacher_net.apply(
        {"params": teacher["params"], "batch_stats": teacher["batch_stats"]},
        groups[:1], None, idx, train=True, mutable=["batch_stats"])
    s_cls, s_patch, t_cls, t_patch = precision.cast_to_f32(
        (s_cls, s_patch, jax.lax.stop_gradient(t_cls), jax.lax.stop_gradient(t_patch)))
    student = s_cls.reshape(num_views, b, out_dim)
    teacher_cls = t_cls.reshape(NUM_GLOBAL, b, out_dim)
    tau_t = temp_schedule(step)
    center, patch_center = method_state["center"], method_state["patch_center"]
    if sinkhorn:
      q = losses.sinkhorn_knopp_teacher(t_cls, tau_t).reshape(NUM_GLOBAL, b, out_dim)
      cls_loss = dino_cross_entropy(student, q, student_temp)
      qp = losses.sinkhorn_knopp_teacher(t_patch.reshape(-1, out_dim), tau_t,
                                         valid=valid.reshape(-1)).reshape(t_patch.shape)
      patch_loss, _ = losses.ibot_patch_dense(
          s_patch, t_patch, valid, patch_center, teacher_temp=tau_t,
          student_temp=student_temp, teacher_probs=qp)
      new_center, new_patch_center = center, patch_center
    else:
      cls_loss, new_center = losses.dino(
          student, teacher_cls, center, teacher_temp=tau_t, student_temp=student_temp,
          center_momentum=center_momentum)
      patch_loss, new_patch_center = losses.ibot_patch_dense(
          s_patch, t_patch, valid, patch_center, teacher_temp=tau_t,
          student_temp=student_temp, center_momentum=center_momentum)
    cls_g = h[:NUM_GLOBAL * b]
    koleo = (sum(losses.koleo(cls_g[i * b:(i + 1) * b]) for i in range(NUM_GLOBAL))
             if koleo_weight else jnp.zeros((), jnp.float32))
    value = cls_loss + ibot_weight * patch_loss + koleo_weight * koleo
    metrics = {
        "repr_std": common.feature_std(h[:b]),
        base.PROBE_FEATURES: h[:b],
        "teacher_temp": tau_t,
        "dino_loss": cls_loss,
        "ibot_loss": patch_loss,
        "koleo_loss": koleo,
        "mask_fraction": jnp.mean(mask.astype(jnp.float32)),
    }
    new_state = {
        **common.online_target_state(new_vars, t_vars, method_state, "teacher"),
        "center": jax.lax.stop_gradient(new_center),
        "patch_center": jax.lax.stop_gradient(new_patch_center),
    }
    return value, (new_state, metrics)

  update_state = common.target_update_fn(momentum, "teacher")

  def encoder_variables(params, method_state):
    """The TEACHER encoder without its mask token (what iBOT / DINOv2 evaluate)."""
    del params
    enc = method_state["teacher"]["params"]["encoder"]
    return {"params": {k: v for k, v in enc.items() if k != "mask_token"}}

  frozen = ()
  if freeze_steps > 0:
    frozen = ((dino.LAST_LAYER_PATH, freeze_steps),)
    if patch_head is not None:
      frozen += ((f"{PATCH_HEAD}/{dino_head.LAST_LAYER}", freeze_steps),)
  return Method(init=init, loss=loss, update_state=update_state, encoder=encoder,
                encoder_variables=encoder_variables, frozen=frozen)
