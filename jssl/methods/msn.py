"""MSN (Assran et al. 2022, "Masked Siamese Networks for Label-Efficient
Learning", ECCV; facebookresearch/msn `src/msn_train.py` (train loop, head,
momentum), `src/losses.py` (`init_msn_loss`, `sharpen`, `distributed_sinkhorn`),
`src/deit.py` (`forward_features` patch drop) and `src/data_manager.py`
(`make_transforms`, `MultiViewTransform`), all read for this file) and PMSN
(Assran et al. 2023, "The Hidden Uniform Cluster Prior in Self-Supervised
Learning", ICLR; no official code, lightly `PMSNLoss`).

Views (config.views): 2 random crops of each image (`num_views` = 2) plus F
small "focal" crops (`views.local.num`), as `MultiViewTransform` with
rand_views + 1 = 2 random views and focal_views = F (paper Sec. 3, "Focal
masking"). View 0 is the TARGET view; view 1 and the F focal crops are the
1 + F ANCHOR views.

  * Anchor branch (online encoder f_theta + projection head g_theta): view 1
    has a fraction r = `loss.mask_ratio` of its patch tokens dropped at random
    (paper Sec. 3 "Random masking"; deit.py keeps T = floor(N (1 - r)) patch
    tokens and the cls token, position embeddings added first); the focal
    crops are not masked (deit.py sets patch_drop = 0 after the first
    resolution group: a small crop is itself a "focal mask").
  * Target branch (EMA encoder + head, f_xi, g_xi): the unmasked view 0,
    stop-gradient (msn_train.py: `torch.no_grad()`).
  * Prototypes q [K, d] (K = `loss.num_prototypes`, 1024 in the paper),
    learnable, L2-normalised inside the loss. With z the head outputs
    (paper eq. 1-2, `jssl.losses.msn`, parity-tested):

      p_a = softmax(n(z_a) . n(q)^T / tau)           every anchor a   (tau 0.1)
      p^+ = Sinkhorn(sharpen(softmax(n(z^+) . n(q)^T / tau), T)), sg   (T 0.25)
      L   = mean_a H(p^+_{b(a)}, p_a) + lambda KL(pbar || uniform),  pbar = mean_a p_a

    The targets are computed under stop-gradient, prototypes included: the
    prototypes learn only through the anchor branch (losses.py computes the
    targets with the prototypes detached).
  * PMSN (`loss.pmsn_exponent` = e > 0): the me-max term is replaced by
    KL(pi || pbar) with the power-law prior pi_k ∝ k^(-e) (PMSN Sec. 4,
    e = 0.25; `jssl.losses.pmsn`). e = 0 is MSN.
  * The target follows xi <- m xi + (1 - m) theta after every step (encoder
    and head; prototypes are not in the target), m: 0.996 -> 1.

Batch norm in the head (`config.projector.use_bn`; msn_vits16.yaml
`use_bn: true`): deit.py's `forward` runs encoder + head once per resolution
group (the masked view 1, then the F focal crops together), so BN statistics
and running averages follow each group, as here. The target's BN statistics
come from its own train-mode passes (only parameters are averaged). BN
removes any shift common to the batch, so the encoder's final LayerNorm bias
gets no gradient through a BN head (as in msn_train.py); AdamW then moves it by
its float noise only.

State: `method_state = {'batch_stats': online head BN stats, 'target':
{'params': {'encoder', 'projector'}, 'batch_stats'}}`; the prototypes are
`params['prototypes']` [K, d].

Evaluation and export use the TARGET encoder's cls token (the paper
evaluates the target encoder; linear_eval.py / logistic_eval.py load
`target_encoder`). The online probe also reads the target encoder's features
of view 0 (the pass the loss makes anyway).

Deviations from msn_train.py:
  * Masks are drawn per example (one key each, `jssl.sharding.example_keys`),
    so they do not depend on how the batch is sharded; deit.py draws one
    permutation per device batch.
  * EMA momentum: jssl's cosine 0.996 -> 1 over the run
    (`common.momentum_schedule`, as BYOL / DINO here); msn_train.py increases
    it linearly over 1.25x the run (ending at ~0.9992).
  * lr: jssl's warm-up from 0 and cosine over the run; msn_train.py warms up
    from 2e-4 and runs its cosine over 1.25x the run (ends above final_lr).
  * The head uses ReLU (`jssl.models.heads.MLPHead`); msn_train.py uses GELU.
  * Weight decay also reaches the prototypes (jssl decays every >= 2-D
    parameter); msn_train.py excludes them. They are L2-normalised in the
    loss, so decay only changes their norm (and thereby their effective lr).
  * Gradient clipping (3.0) is the global norm over all parameters,
    prototypes included; msn_train.py clips the encoder's only. The
    prototypes' gradient is summed over GPUs there (AllReduceSum) instead of
    averaged: a constant factor, which AdamW does not see.
  * The optional entropy term (`use_ent`, weight 0 in every released config)
    and the sharpening schedule (constant 0.25 in them) are left out.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import errors, losses, models, precision, sharding
from jssl.methods import base, common
from jssl.methods.base import Method

PROTOTYPES = "prototypes"   # parameter path of the [K, d] prototypes


def num_keep(num_patches: int, mask_ratio: float) -> int:
  """T = floor(N (1 - r)) visible patch tokens (deit.py `forward_features`);
  the tiny epsilon keeps e.g. 16 x (1 - 0.25) = 12 from rounding down."""
  return int(math.floor(num_patches * (1.0 - mask_ratio) + 1e-9))


def random_keep(key, images: jax.Array, num_patches: int,
                mask_ratio: float) -> jax.Array:
  """keep_indices `[B, T]` int32: T = `num_keep` patches drawn uniformly
  without replacement per example (argsort of per-example uniform noise; each
  example has its own key, `jssl.sharding.example_keys`, so the masks do not
  depend on the sharding)."""
  keys = sharding.example_keys(key, images)
  noise = jax.vmap(lambda k: jax.random.uniform(k, (num_patches,)))(keys)
  order = jnp.argsort(noise, axis=1)
  return order[:, :num_keep(num_patches, mask_ratio)].astype(jnp.int32)


class MSNNet(nn.Module):
  """encoder -> projection head, once per resolution group.

  `groups`: arrays `[N_g, H_g, W_g, C]`; `keep_indices` (or None) masks the
  FIRST group only (the random anchor view; focal crops are not masked).
  Returns `(h, z)`: the encoder's `pre_logits` and the head outputs of all
  groups, concatenated in order.
  """
  encoder: nn.Module
  projector: nn.Module

  def __call__(self, groups: Sequence[jax.Array], keep_indices=None, *,
               train: bool):
    hs, zs = [], []
    for i, x in enumerate(groups):
      h = self.encoder(x, train=train,
                       keep_indices=keep_indices if i == 0 else None)["pre_logits"]
      hs.append(h)
      zs.append(self.projector(h, train=train))
    return jnp.concatenate(hs, axis=0), jnp.concatenate(zs, axis=0)


_LOSS_KEYS = ("mask_ratio", "num_prototypes", "temperature", "sharpen_temperature",
              "sinkhorn_iterations", "me_max_weight", "pmsn_exponent")


def _check_config(config) -> int:
  """Config errors MSN can detect before tracing; returns F (focal crops)."""
  common.require_fields(config, "MSN", ("projector", "loss", "ema"))
  if not models.is_vit(config.model):
    raise errors.ConfigError(
        f"MSN masks the patch tokens of a ViT encoder; config.model.name="
        f"{config.model.get('name')!r} is not a ViT (use one of "
        f"{', '.join(n for n in models.VIT_VARIANTS if n != 'vit_test')}, "
        "with config.model.patch_size)")
  missing = [k for k in _LOSS_KEYS if k not in config.loss]
  if missing:
    raise errors.ConfigError(f"MSN needs config.loss fields {missing} (see configs/msn.py)")
  if config.views.num_views != 2:
    raise errors.ConfigError(
        "MSN takes 2 random crops per image (target and masked anchor); "
        f"config.views.num_views={config.views.num_views} (focal crops go in "
        "config.views.local.num)")
  focal = common.num_local_views(config)
  p = int(config.model.get("patch_size", 16))
  size = int(config.views.image_size)
  if size % p:
    raise errors.ConfigError(f"MSN: config.views.image_size={size} is not divisible by "
                             f"config.model.patch_size={p}")
  if focal:
    local = config.views.local
    if "image_size" not in local or "scale" not in local:
      raise errors.ConfigError(
          f"MSN focal crops: config.views.local.num={focal} but config.views.local lacks "
          "image_size / scale (see jssl.data.recipes.add_local_crops)")
    if int(local.image_size) % p:
      raise errors.ConfigError(
          f"MSN: config.views.local.image_size={local.image_size} is not divisible by "
          f"config.model.patch_size={p}")
    if config.model.get("pos_embed", "sincos") == "learned":
      raise errors.ConfigError(
          "MSN focal crops on a ViT need position embeddings for two resolutions: jssl's "
          "learned table fixes one; use config.model.pos_embed='sincos' or "
          "config.views.local.num=0")
  lc = config.loss
  ratio = float(lc.mask_ratio)
  n = (size // p) ** 2
  if not 0.0 <= ratio < 1.0 or num_keep(n, ratio) < 1:
    raise errors.ConfigError(
        f"MSN: config.loss.mask_ratio={ratio} must leave at least one of the {n} patches "
        f"of a {size} px view visible (keeps floor(N (1 - r)))")
  if int(lc.num_prototypes) < 2:
    raise errors.ConfigError(
        f"MSN: config.loss.num_prototypes={lc.num_prototypes} must be >= 2 (paper: 1024)")
  for field in ("temperature", "sharpen_temperature"):
    if not float(lc[field]) > 0:
      raise errors.ConfigError(f"MSN: config.loss.{field}={lc[field]} must be > 0")
  if int(lc.sinkhorn_iterations) < 0:
    raise errors.ConfigError(
        f"MSN: config.loss.sinkhorn_iterations={lc.sinkhorn_iterations} must be >= 0")
  if float(lc.me_max_weight) < 0:
    raise errors.ConfigError(f"MSN: config.loss.me_max_weight={lc.me_max_weight} must be >= 0")
  if float(lc.pmsn_exponent) < 0:
    raise errors.ConfigError(
        f"MSN: config.loss.pmsn_exponent={lc.pmsn_exponent} must be >= 0 (0: MSN's me-max; "
        "PMSN: 0.25)")
  return focal


def loss_fn(config):
  """`(anchors [V*B, d], targets [B, d], prototypes [K, d]) -> (loss, MSNTerms)`:
  MSN (`loss.pmsn_exponent` = 0) or PMSN (> 0) with the config's settings."""
  lc = config.loss
  kw = dict(temperature=float(lc.temperature),
            sharpen_temperature=float(lc.sharpen_temperature),
            sinkhorn_iterations=int(lc.sinkhorn_iterations))
  exponent, weight = float(lc.pmsn_exponent), float(lc.me_max_weight)
  if exponent > 0:
    return lambda a, t, q: losses.pmsn(a, t, q, power_law_exponent=exponent,
                                       prior_weight=weight, **kw)
  return lambda a, t, q: losses.msn(a, t, q, me_max_weight=weight, **kw)


def make(config, length=None) -> Method:
  """Builds MSN / PMSN from `config.model` (a ViT), `.projector`, `.loss`,
  `.ema`, `.views`; `length` is required (the EMA momentum spans the run)."""
  focal = _check_config(config)
  momentum = common.momentum_schedule(config, length, "MSN target momentum")
  mask_ratio = float(config.loss.mask_ratio)
  num_protos = int(config.loss.num_prototypes)
  objective = loss_fn(config)
  encoder = models.make_encoder(config.model)
  net = MSNNet(encoder=encoder, projector=common.projector_of(config))
  p = encoder.patch_size
  out_dim = int(config.projector.out_dim)

  def groups_of(views):
    return common.multicrop_groups(views[1:], 1, focal, "MSN")

  def keep_of(key, x):
    n = (x.shape[1] // p) * (x.shape[2] // p)
    if num_keep(n, mask_ratio) == n:
      return None   # nothing to drop
    return random_keep(key, x, n, mask_ratio)

  def init(key, views):
    k_net, k_proto, k_mask = jax.random.split(key, 3)
    variables = net.init(k_net, groups_of(views), keep_of(k_mask, views[1]), train=True)
    params = dict(variables["params"])
    stats = variables.get("batch_stats", {})
    # msn_train.py: uniform(-1/sqrt(d), 1/sqrt(d)).
    bound = 1.0 / math.sqrt(out_dim)
    params[PROTOTYPES] = jax.random.uniform(k_proto, (num_protos, out_dim), jnp.float32,
                                            -bound, bound)
    return params, {"batch_stats": stats, "target": common.target_init(params, stats)}

  def loss(params, method_state, views, batch, key, step):
    del batch
    b = views[0].shape[0]
    online = {k: params[k] for k in ("encoder", "projector")}
    (h_a, z_a), new_vars = net.apply(
        {"params": online, "batch_stats": method_state["batch_stats"]},
        groups_of(views), keep_of(key, views[1]), train=True, mutable=["batch_stats"])
    target = method_state["target"]
    (h_t, z_t), t_vars = net.apply(target, [views[0]], None, train=True,
                                   mutable=["batch_stats"])
    # The target network is an EMA, never trained by gradients.
    h_t, z_t = jax.lax.stop_gradient((h_t, z_t))
    z_a, z_t = precision.cast_to_f32((z_a, z_t))   # loss inputs in float32
    value, terms = objective(z_a, z_t, params[PROTOTYPES])
    q = terms.target_probs
    used = jnp.max(jax.nn.one_hot(jnp.argmax(q, -1), num_protos), axis=0)
    metrics = {
        "repr_std": common.feature_std(h_t),
        base.PROBE_FEATURES: h_t,
        "anchor_repr_std": common.feature_std(h_a[:b]),
        "ce": terms.ce,
        "regularizer": terms.regularizer,
        # Collapse alarms (msn_train.py logs 'max-t' and 'np'): the mean
        # largest target probability, and how many prototypes are some
        # target's argmax.
        "target_max_prob": jnp.mean(jnp.max(q, -1)),
        "prototypes_used": jnp.sum(used),
        "ema_momentum": momentum(step),
    }
    new_state = common.online_target_state(new_vars, t_vars, method_state)
    return value, (new_state, metrics)

  # After the optimiser step: encoder and head, not the prototypes.
  update_state = common.target_update_fn(momentum)

  def encoder_variables(params, method_state):
    """The TARGET encoder: what MSN evaluates and releases."""
    del params
    target = method_state["target"]
    out = {"params": target["params"]["encoder"]}
    stats = target["batch_stats"].get("encoder", {})
    if stats:
      out["batch_stats"] = stats
    return out

  return Method(init=init, loss=loss, update_state=update_state, encoder=encoder,
                encoder_variables=encoder_variables)
