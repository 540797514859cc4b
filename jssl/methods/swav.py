"""SwAV: swapping assignments between views (Caron et al. 2020, "Unsupervised
Learning of Visual Features by Contrasting Cluster Assignments", NeurIPS;
official code facebookresearch/swav `main_swav.py` (train loop, queue,
`distributed_sinkhorn`), `src/resnet50.py` (projection head, l2norm,
prototypes, multi-resolution forward) and `src/multicropdataset.py`, all read
for this file; CIFAR recipe from solo-learn `solo/methods/swav.py`).

encoder f -> projector g (Linear-BN-ReLU-Linear, 2048 -> 128) -> L2-normalise
-> prototypes C = [c_1..c_K] (unit columns, no bias): scores s = z^T C.
Codes q come from the scores of the 2 global crops by Sinkhorn-Knopp
(eq. 3, epsilon 0.05, 3 iterations, no gradient); every crop predicts the
codes of the other crops (swapped prediction, eq. 1-2, T = 0.1)::

  L = 1/2 sum_{i in global} 1/(V-1) sum_{v != i}
        -1/B sum_b sum_k q_i[b, k] log softmax_k(s_v[b] / T)

computed by `jssl.losses.swav` (parity-tested against the official code).
Sinkhorn normalises over the GLOBAL batch: under `jax.jit` the arrays are
global, so the sums over samples run over every device's rows without the
`dist.all_reduce` of `distributed_sinkhorn`.

Multi-crop (Sec. 3.2): `config.views.num_views` must be 2 (the crops that
get codes, `crops_for_assign = [0, 1]`); `config.views.local.num` adds L small
crops that only predict. As `resnet50.py` does, crops of one resolution are
concatenated through the encoder (BN over the 2B global crops, then over the
LB local crops; the running statistics are updated once per group), and the
head runs once on all (2 + L)B features.

Prototypes, frozen and normalised:
  * frozen for `swav.freeze_prototypes_epochs` (official
    `freeze_prototypes_niters` 313 = 1 epoch at batch 4096; solo-learn 2
    epochs on CIFAR) via `Method.frozen`, which zeroes their update and weight
    decay as setting the gradient to None does. (Their momentum trace in
    `optax.trace` still accumulates during the freeze; torch skips it.)
  * normalised: the official loop L2-normalises the stored prototypes before
    every forward pass. jssl's `update_state` returns only the method state,
    not parameters, so the normalisation is done in the forward instead:
    C = W / sg(||W||) per column. The scores are then exactly the official
    ones, the gradient w.r.t. W is the official gradient divided by ||w_k||
    (equal while ||w_k|| = 1, as at init). Under LARS, whose trust ratio
    scales each update with ||W||, a step then moves W / ||W|| as the
    official step moves its renormalised weights (exactly when all columns
    share one norm, momentum aside); with plain SGD a growing ||w_k|| slows
    the prototypes down. Exact parity would need the step to let
    `update_state` rewrite parameters. `update_state` is the identity.

Queue (small batches, official `--queue_length`, `--epoch_queue_starts`):
`method_state['queue']` `[2, Q, P]` holds past L2-normalised embeddings of
the global crops, newest first. From step `epoch_queue_starts x
steps_per_epoch` each step pushes the current 2 x B embeddings (after the
loss, so they are not their own context) and drops the oldest B; once full
(its last row is non-zero, the official test), the queue's scores against the
current prototypes are appended to the batch's scores before Sinkhorn, and
only the batch rows' codes are used. `Q` is rounded down to a multiple of the
global batch (official). The queue is global (jssl arrays are), where the
official one is per GPU with Q / world_size rows: same total.

Other deviations: the official LARC and SGD weight decay act on every
parameter; jssl's LARS exempts biases and BN parameters (solo-learn's
`exclude_bias_n_norm`). The official warm-up starts at `start_warmup` (0.3 in
the 800-epoch script); jssl's starts at 0. `jssl.losses.sinkhorn` works in the
log domain, so small epsilons (the swav README's first remedy when the loss
sticks at ln K, used by the quickstart) are stable without the official
`--improve_numerical_stability`.

Evaluation/export: the encoder trunk (SwAV's `eval_linear.py` loads the
ResNet trunk without head and prototypes).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import errors, losses, models, precision
from jssl.methods import base, common
from jssl.methods.base import Method

NUM_GLOBAL = 2          # crops_for_assign = [0, 1]
PROTOTYPES = "prototypes"   # parameter path, frozen in the first epoch(s)


def unit_columns(w: jax.Array, *, stop_norm_gradient: bool = False) -> jax.Array:
  """Columns of `w [P, K]` scaled to unit L2 norm (one prototype per column)."""
  norm = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(w), axis=0, keepdims=True), 1e-24))
  if stop_norm_gradient:
    # The official code renormalises the stored weights outside autograd; the
    # forward only ever sees unit prototypes, so the norm is a constant here.
    norm = jax.lax.stop_gradient(norm)
  return w / norm


class Prototypes(nn.Module):
  """Linear without bias onto K unit prototypes: `z [N, P] -> z C [N, K]`."""
  num_prototypes: int

  @nn.compact
  def __call__(self, z):
    # float32 whatever the compute dtype: the scores are divided by the
    # temperature and fed to Sinkhorn and a softmax (jssl.precision).
    w = self.param("kernel", nn.initializers.lecun_normal(),
                   (z.shape[-1], self.num_prototypes), precision.PARAM_DTYPE)
    z = z.astype(precision.LOSS_DTYPE)
    return z @ unit_columns(w, stop_norm_gradient=True)


class SwAVNet(nn.Module):
  """encoder once per resolution group -> projector -> l2norm -> prototypes.

  Returns `(h, z, s)` over the concatenated groups: `h` `pre_logits` `[N, D]`,
  `z` unit embeddings `[N, P]` (float32), `s` scores `[N, K]`.
  """
  encoder: nn.Module
  projector: nn.Module
  num_prototypes: int

  @nn.compact
  def __call__(self, groups: Sequence[jax.Array], *, train: bool):
    h = jnp.concatenate(
        [self.encoder(x, train=train)["pre_logits"] for x in groups], axis=0)
    z = self.projector(h, train=train).astype(precision.LOSS_DTYPE)
    z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, -1, keepdims=True), 1e-24))
    return h, z, Prototypes(self.num_prototypes, name=PROTOTYPES)(z)


def _settings(config, length):
  """Validated SwAV settings: (num_local, queue_len, queue_start, freeze)."""
  missing = [f for f in ("projector", "loss", "swav") if f not in config]
  if missing:
    raise errors.ConfigError(f"SwAV needs config fields {missing} (see configs/swav.py)")
  if config.views.num_views != NUM_GLOBAL:
    raise errors.ConfigError(
        f"SwAV computes codes on exactly {NUM_GLOBAL} global crops; "
        f"config.views.num_views={config.views.num_views} (small crops go in "
        "config.views.local.num, see jssl.data.recipes.add_local_crops)")
  local = config.views.get("local", None)
  num_local = int(local.get("num", 0)) if local is not None else 0
  if num_local < 0:
    raise errors.ConfigError(f"config.views.local.num={num_local} must be >= 0")
  sc = config.swav
  if int(sc.num_prototypes) <= 0:
    raise errors.ConfigError(f"config.swav.num_prototypes={sc.num_prototypes} must be > 0")
  queue_len = int(sc.get("queue_length", 0))
  queue_start = freeze = 0
  if queue_len > 0:
    b = int(config.batch_size)
    # main_swav.py: "the queue needs to be divisible by the batch size".
    queue_len -= queue_len % b
    if queue_len == 0:
      raise errors.ConfigError(
          f"config.swav.queue_length={sc.queue_length} is shorter than the "
          f"global batch {b}; use a multiple of it, or 0 for no queue")
    length = base.require_length(length, "SwAV's queue start (epoch_queue_starts)")
    queue_start = int(round(float(sc.epoch_queue_starts) * length.steps_per_epoch))
  if float(sc.get("freeze_prototypes_epochs", 0.0)) > 0:
    length = base.require_length(length, "SwAV's prototype freezing")
    freeze = int(round(float(sc.freeze_prototypes_epochs) * length.steps_per_epoch))
  return num_local, queue_len, queue_start, freeze


def make(config, length=None) -> Method:
  """Builds SwAV from `config` (see configs/swav.py). `length` is needed for
  the prototype freeze and the queue start (both counted in epochs)."""
  num_local, queue_len, queue_start, freeze = _settings(config, length)
  lc = config.loss
  temperature, epsilon = float(lc.temperature), float(lc.epsilon)
  iters = int(lc.sinkhorn_iterations)
  encoder = models.make_encoder(config.model)
  net = SwAVNet(encoder=encoder, projector=common.projector_of(config),
                num_prototypes=int(config.swav.num_prototypes))
  emb_dim = int(config.projector.out_dim)
  num_views = NUM_GLOBAL + num_local

  def groups_of(views):
    return common.multicrop_groups(views, NUM_GLOBAL, num_local, "SwAV")

  def init(key, views):
    variables = net.init(key, groups_of(views), train=True)
    params = dict(variables["params"])
    # Start from unit prototypes, as the official loop normalises them before
    # the first forward pass.
    params[PROTOTYPES] = {"kernel": unit_columns(params[PROTOTYPES]["kernel"])}
    state = {"batch_stats": variables.get("batch_stats", {})}
    if queue_len:
      # Zeros = empty (the official queue starts as zeros; rows of a full
      # queue are unit vectors, never zero).
      state["queue"] = jnp.zeros((NUM_GLOBAL, queue_len, emb_dim), jnp.float32)
    return params, state

  def loss(params, method_state, views, batch, key, step):
    del batch, key
    b = views[0].shape[0]
    (h, z, s), new_vars = net.apply(
        {"params": params, "batch_stats": method_state["batch_stats"]},
        groups_of(views), train=True, mutable=["batch_stats"])
    scores = precision.cast_to_f32(s).reshape(num_views, b, -1)   # loss input
    high, low = scores[:NUM_GLOBAL], (scores[NUM_GLOBAL:] if num_local else None)
    value, codes = losses.swav(high, low, temperature=temperature, epsilon=epsilon,
                               num_iters=iters)
    new_state = {"batch_stats": new_vars["batch_stats"]}
    metrics = {}
    if queue_len:
      queue = method_state["queue"]
      protos = unit_columns(params[PROTOTYPES]["kernel"])
      # Queued embeddings only shape the codes, which are targets (official:
      # torch.no_grad around the queue scores): no gradient to the prototypes.
      q_scores = jax.lax.stop_gradient(queue @ protos)            # [2, Q, K]
      value_q, codes_q = losses.swav(high, low, queue=q_scores,
                                     temperature=temperature, epsilon=epsilon,
                                     num_iters=iters)
      in_use = jnp.any(queue[:, -1] != 0)
      value = jnp.where(in_use, value_q, value)
      codes = jnp.where(in_use, codes_q, codes)
      # Push after the loss; embeddings are constants in the queue.
      emb = jax.lax.stop_gradient(z[:NUM_GLOBAL * b].reshape(NUM_GLOBAL, b, -1))
      pushed = jnp.concatenate([emb, queue[:, :queue_len - b]], axis=1)
      new_state["queue"] = jnp.where(step >= queue_start, pushed, queue)
      metrics["queue_in_use"] = in_use.astype(jnp.float32)
    p = codes.astype(jnp.float32)
    metrics.update({
        "repr_std": common.feature_std(h[:b]),
        base.PROBE_FEATURES: h[:b],
        # Collapse alarms: code entropy -> 0 when each sample is hard-assigned;
        # the number of prototypes any sample picks -> 1 under collapse.
        "code_entropy": jnp.mean(-jnp.sum(p * jnp.log(jnp.maximum(p, 1e-30)), -1)),
        "prototypes_used": jnp.sum(jnp.max(
            jax.nn.one_hot(jnp.argmax(high[0], -1), high.shape[-1]), axis=0)),
    })
    return value, (new_state, metrics)

  frozen = ((PROTOTYPES, freeze),) if freeze > 0 else ()
  return Method(init=init, loss=loss, update_state=base.keep_state, encoder=encoder,
                encoder_variables=base.trunk_variables, frozen=frozen)

