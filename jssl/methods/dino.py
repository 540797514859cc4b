"""DINO: self-distillation with no labels (Caron et al. 2021, "Emerging
Properties in Self-Supervised Vision Transformers", ICCV; official code
facebookresearch/dino `main_dino.py` (train loop, `DINOLoss`,
`DataAugmentationDINO`), `vision_transformer.py` (`DINOHead`) and `utils.py`
(`MultiCropWrapper`, `clip_gradients`, `cancel_gradients_last_layer`,
`cosine_scheduler`), all read for this file).

Student g_s = encoder + DINO head (`jssl.models.dino_head`) sees every crop
(2 global + L local); the teacher g_t, an EMA of the student, sees the 2 global
crops only. With P_t = softmax((g_t(x) - c) / tau_t) and P_s =
softmax(g_s(x') / tau_s) (paper eq. 1-3, Algorithm 1):

  L = mean over pairs (a, v), a in {global crops}, v in {all crops}, v != a,
      of  mean_b  H(P_t(x_a), P_s(x_v)),     H(p, q) = -sum_k p_k log q_k

computed by `jssl.losses.dino` (parity-tested against the official DINOLoss).
Collapse is avoided by centering and sharpening the teacher:
  c <- m c + (1 - m) mean over the 2B global-batch teacher rows    (eq. 4, m = 0.9)
updated after the loss from the raw teacher outputs, and tau_t = 0.04 -> 0.07
(linear warm-up over 30 epochs) < tau_s = 0.1. The teacher follows
  theta_t <- lambda theta_t + (1 - lambda) theta_s,
  lambda: cosine 0.996 -> 1 over the run (`utils.cosine_scheduler`).

State: `method_state = {'batch_stats': student BN stats, 'teacher':
{'params', 'batch_stats'}, 'center': [K]}`. Only parameters are averaged into
the teacher: as in main_dino.py (the EMA loop zips `parameters()`, not
buffers) the teacher runs in train mode and its BN running statistics come
from its own forward passes on the global crops.

Multi-crop forward (`utils.MultiCropWrapper`): crops of one resolution are
concatenated and go through the encoder together (BN statistics over the 2B
global crops, then over the LB local crops), then the head runs once on all
(2 + L)B features. Under `jax.jit` the arrays are global, so this is SyncBN.

Training tricks of main_dino.py, and how they are done here:
  * last layer frozen during the first `freeze_last_layer_epochs` (1):
    `Method.frozen` zeroes its updates (weight decay included), as
    `cancel_gradients_last_layer` sets its gradients to None. Deviation: its
    AdamW moments still accumulate during that epoch (torch skips them).
  * gradient clipping per parameter tensor (`clip_gradients`, 3.0): each
    tensor's gradient is rescaled to norm <= clip, not the global norm. optax
    has no per-tensor clip and the step is shared, so the loss applies it with
    a `custom_vjp` identity on the parameters (forward unchanged, backward
    clips each leaf); the step's `grad_norm` metric is then the clipped norm.
    Keep `optimizer.grad_clip_norm = 0` (global clipping on top would differ).
  * weight decay cosine 0.04 -> 0.4, AdamW lr 5e-4 x B/256 with 10 warm-up
    epochs to min_lr 1e-6, biases and 1-D parameters not decayed: the
    optimiser config (`jssl.schedules.make_optimizer`).
  * drop-path (stochastic depth) in the student ViT only: main_dino.py builds
    the student with `drop_path_rate=args.drop_path_rate` (default 0.1) and
    the teacher without; `config.model.drop_path_rate` (0.1 in the ViT
    presets), keyed by the step's key (rng stream 'dropout'). The teacher
    is the same network with `drop_path_rate=0` (same parameter tree).
  * teacher temperature: the official schedule is constant within an epoch
    (`teacher_temp_schedule[epoch]`); here it is linear per step
    (`optax.linear_schedule`), which reaches tau_t at the end of the warm-up.

Evaluation and export use the TEACHER encoder (DINO's eval_knn / eval_linear
load `--checkpoint_key teacher`).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jssl import errors, losses, models, precision
from jssl.methods import base, common
from jssl.methods.base import Method
from jssl.models import dino_head

# Parameter path of the head's last layer, frozen in the first epoch.
LAST_LAYER_PATH = f"head/{dino_head.LAST_LAYER}"
NUM_GLOBAL = 2   # DINO's teacher sees exactly the 2 global crops


class MultiCropNet(nn.Module):
  """encoder once per resolution group -> head once on all features.

  Returns `(h, logits)`: `h` the encoder's `pre_logits` `[N, D]` and the head
  output `[N, K]`, N the total number of images over the groups, in order.
  """
  encoder: nn.Module
  head: nn.Module

  def __call__(self, groups: Sequence[jax.Array], *, train: bool):
    h = jnp.concatenate(
        [self.encoder(x, train=train)["pre_logits"] for x in groups], axis=0)
    return h, self.head(h, train=train)


def _num_local(config) -> int:
  local = config.views.get("local", None)
  return int(local.get("num", 0)) if local is not None else 0


def _check_config(config) -> int:
  """Config errors DINO can detect before any tracing; returns L."""
  common.require_fields(config, "DINO", ("head", "loss", "ema", "dino"))
  if config.views.num_views != NUM_GLOBAL:
    raise errors.ConfigError(
        f"DINO's teacher sees exactly {NUM_GLOBAL} global crops; "
        f"config.views.num_views={config.views.num_views} (local crops go in "
        "config.views.local.num)")
  num_local = _num_local(config)
  if num_local < 0:
    raise errors.ConfigError(f"config.views.local.num={num_local} must be >= 0")
  if num_local:
    local = config.views.local
    missing = [k for k in ("image_size", "scale") if k not in local]
    if missing:
      raise errors.ConfigError(
          f"DINO multi-crop: config.views.local.num={num_local} but "
          f"config.views.local lacks {missing} (see "
          "jssl.data.recipes.add_local_crops)")
  if (num_local and models.is_vit(config.model)
      and config.model.get("pos_embed", "sincos") == "learned"):
    raise errors.ConfigError(
        "DINO multi-crop on a ViT needs position embeddings for two "
        "resolutions: jssl's learned table fixes one (DINO interpolates it); "
        "use config.model.pos_embed='sincos' or config.views.local.num=0")
  if config.optimizer.get("grad_clip_norm", 0.0) and config.dino.clip_grad:
    raise errors.ConfigError(
        "DINO clips each parameter's gradient (config.dino.clip_grad="
        f"{config.dino.clip_grad}); set config.optimizer.grad_clip_norm=0 or "
        "config.dino.clip_grad=0, not both")
  return num_local


def clip_grads_per_param(params, max_norm: float):
  """Identity on `params` whose backward pass rescales each leaf's gradient to
  norm <= `max_norm` (DINO `utils.clip_gradients`:
  g <- g * min(1, max_norm / (||g|| + 1e-6)) per tensor)."""

  @jax.custom_vjp
  def identity(p):
    return p

  def fwd(p):
    return p, None

  def bwd(_, g):
    def clip(x):
      norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32))))
      coef = max_norm / (norm + 1e-6)
      return jnp.where(coef < 1.0, x * coef.astype(x.dtype), x)
    return (jax.tree.map(clip, g),)

  identity.defvjp(fwd, bwd)
  return identity(params)


def teacher_temperature_schedule(config, length) -> optax.Schedule:
  """tau_t(step): linear `warmup_teacher_temp -> teacher_temp` over
  `warmup_teacher_temp_epochs`, then constant (DINO `DINOLoss`)."""
  lc = config.loss
  warmup = int(round(float(lc.warmup_teacher_temp_epochs)
                     * length.steps_per_epoch))
  if warmup <= 0:  # optax.linear_schedule would hold the *initial* value.
    return lambda step: jnp.asarray(lc.teacher_temp, jnp.float32)
  return optax.linear_schedule(float(lc.warmup_teacher_temp),
                               float(lc.teacher_temp), warmup)


def make(config, length=None) -> Method:
  """Builds DINO from `config` (see configs/dino.py); `length` is required
  (teacher momentum, teacher temperature and last-layer freezing depend on
  the run length)."""
  num_local = _check_config(config)
  length = base.require_length(length, "DINO teacher momentum / temperature")
  momentum = common.momentum_schedule(config, length, "DINO teacher momentum")
  temp_schedule = teacher_temperature_schedule(config, length)
  student_temp = float(config.loss.student_temp)
  center_momentum = float(config.loss.center_momentum)
  clip = float(config.dino.clip_grad)
  freeze_steps = int(round(float(config.dino.freeze_last_layer_epochs)
                           * length.steps_per_epoch))

  encoder = models.make_encoder(config.model)
  head = dino_head.make_dino_head(precision.head_config(config.head, config))
  net = MultiCropNet(encoder=encoder, head=head)
  # main_dino.py: the teacher ViT has no drop-path (module doc).
  teacher_net = (MultiCropNet(encoder=encoder.clone(drop_path_rate=0.0), head=head)
                 if getattr(encoder, "drop_path_rate", 0.0) else net)
  out_dim = int(config.head.out_dim)
  num_views = NUM_GLOBAL + num_local

  def groups_of(views):
    return common.multicrop_groups(views, NUM_GLOBAL, num_local, "DINO")

  def init(key, views):
    # 'params' keeps the plain key: the same initial weights as before the
    # student had drop-path.
    variables = net.init({"params": key, "dropout": jax.random.fold_in(key, 1)},
                         groups_of(views), train=True)
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    # The teacher starts as a copy of the student (main_dino.py
    # `teacher_without_ddp.load_state_dict(student.module.state_dict())`);
    # copies, not aliases, since the state is donated.
    copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731
    return params, {"batch_stats": stats,
                    "teacher": {"params": copy(params),
                                "batch_stats": copy(stats)},
                    "center": jnp.zeros((out_dim,), jnp.float32)}

  def loss(params, method_state, views, batch, key, step):
    del batch
    groups = groups_of(views)
    b = views[0].shape[0]
    if clip:
      params = clip_grads_per_param(params, clip)
    (h, s_out), new_vars = net.apply(
        {"params": params, "batch_stats": method_state["batch_stats"]},
        groups, train=True, mutable=["batch_stats"], rngs={"dropout": key})
    teacher = method_state["teacher"]
    # The teacher runs in train mode (as main_dino.py) on the global crops.
    (_, t_out), t_vars = teacher_net.apply(
        {"params": teacher["params"], "batch_stats": teacher["batch_stats"]},
        groups[:1], train=True, mutable=["batch_stats"])
    # The teacher is a target, built from an EMA and never trained by
    # gradients (main_dino.py: requires_grad=False, DINOLoss `.detach()`).
    # Loss inputs in float32 (the head's last layer is float32 already).
    s_out, t_out = precision.cast_to_f32((s_out, jax.lax.stop_gradient(t_out)))
    student = s_out.reshape(num_views, b, out_dim)
    teacher_out = t_out.reshape(NUM_GLOBAL, b, out_dim)
    tau_t = temp_schedule(step)
    value, center = losses.dino(
        student, teacher_out, method_state["center"], teacher_temp=tau_t,
        student_temp=student_temp, center_momentum=center_momentum)
    p_t = jax.nn.softmax(
        (teacher_out.astype(jnp.float32) - method_state["center"]) / tau_t, -1)
    metrics = {
        "repr_std": common.feature_std(h[:b]),
        base.PROBE_FEATURES: h[:b],
        "teacher_temp": tau_t,
        # Collapse alarms (paper Fig. 7): teacher entropy -> 0 when one
        # dimension dominates, -> log K when the output is uniform.
        "teacher_entropy": jnp.mean(-jnp.sum(
            p_t * jnp.log(jnp.maximum(p_t, 1e-30)), -1)),
        "center_norm": jnp.linalg.norm(center),
    }
    new_state = {
        **common.online_target_state(new_vars, t_vars, method_state, "teacher"),
        "center": jax.lax.stop_gradient(center),
    }
    return value, (new_state, metrics)

  # After the optimiser step at iteration `step`: momentum_schedule[it].
  # Parameters only; the teacher's BN statistics come from its own passes.
  update_state = common.target_update_fn(momentum, "teacher")

  def encoder_variables(params, method_state):
    """The TEACHER encoder: what DINO evaluates and releases."""
    del params
    teacher = method_state["teacher"]
    out = {"params": teacher["params"]["encoder"]}
    stats = teacher["batch_stats"].get("encoder", {})
    if stats:  # a ViT has no batch statistics
      out["batch_stats"] = stats
    return out

  frozen = ((LAST_LAYER_PATH, freeze_steps),) if freeze_steps > 0 else ()
  return Method(init=init, loss=loss, update_state=update_state,
                encoder=encoder, encoder_variables=encoder_variables,
                frozen=frozen)
