"""MoCo v2 (Chen, Fan, Girshick, He 2020, "Improved Baselines with Momentum
Contrastive Learning", arXiv:2003.04297; MoCo: He et al. 2020, CVPR; official
code facebookresearch/moco `moco/builder.py` (class MoCo) and `main_moco.py`).

Query network f_q -> MLP head (Linear-ReLU-Linear, 2048-2048-128 on
ResNet-50, no BN) and a key network f_k of the same shape whose weights are an
exponential moving average of f_q's (MoCo eq. 2)::

  theta_k <- m theta_k + (1 - m) theta_q           m = 0.999 (ImageNet)

Loss (MoCo eq. 1, InfoNCE against a queue of K negatives, T = 0.2 in v2)::

  l_i = -log( exp(q_i.k_i / T) / (exp(q_i.k_i / T) + sum_j exp(q_i.n_j / T)) )

with q, k L2-normalised and n_j the rows of the queue, computed by
`jssl.losses.moco`: keys and queue are constants (stop-gradient), the queue is
read before the current keys are written.

State (`method_state`, all arrays, so Orbax saves and restores them):
  'batch_stats'      f_q's BN statistics (the encoder that is evaluated);
  'key_params'       theta_k, initialised as a copy of theta_q (builder.py);
  'key_batch_stats'  f_k's own BN running statistics, updated by its own
                     forward passes (PyTorch's momentum update touches
                     parameters only, not buffers);
  'queues'           a tuple of `jssl.losses.QueueState` (queue [K, D] of
                     unit rows, initialised to random unit vectors; ptr):
                     one queue, or one per key view when symmetric.

Queue update: the new queue is returned by `loss` as part of the new method
state (`jssl.losses.moco` enqueues the global batch of keys after computing
the loss), FIFO with a ring pointer (`wrap='ring'`, builder.py
`_dequeue_and_enqueue`); like the official code, K must be a multiple of the
global batch (checked in `make`). The EMA of theta_k runs in `update_state`,
after the optimiser step, with theta_q of that step; the official forward
updates theta_k at the start of the next step, before computing keys -- the
same sequence of key encoders.

`config.loss.symmetric`: False is the official MoCo v2 (queries from view 1,
keys from view 2). True is solo-learn's MoCo v2+ (`solo/methods/mocov2plus.py`):
loss = (l(q1, k2, queue_2) + l(q2, k1, queue_1)) / 2 with one queue per view's
keys, each view passing through both networks.

Shuffling BN: the official code shuffles the key batch across GPUs so that a
query and its key never share per-GPU BN statistics (MoCo Sec. 3.3, "BN
cheating"). jssl has no per-device BN: every BN layer normalises over the
global batch (arrays are global under jit), the SyncBN / SimCLR global-BN
remedy for the same leak, and query and key batches still get separate
statistics because f_q and f_k run separate forward passes. A shuffle would
not change global statistics, so none is done (solo-learn, with SyncBN, does
not shuffle either).

Other deviations: with `symmetric=True` both views go through each network
in one concatenated pass (BN statistics over 2B images; solo-learn forwards
each view separately). `jssl.schedules`' SGD exempts biases and BN parameters
from weight decay; the official SGD decays every parameter.

Evaluation/export: the query encoder f_q (main_lincls.py loads encoder_q).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl import errors, losses, precision, schedules
from jssl.methods import base, common
from jssl.methods.base import Method, require_length


def momentum_schedule(config, length):
  """theta_k momentum per step: constant `momentum.base` when it equals
  `momentum.final`, else the cosine from base to final over the run
  (solo-learn `MomentumUpdater`, CIFAR: 0.99 -> 0.999)."""
  base, final = float(config.momentum.base), float(config.momentum.final)
  for name, m in (("base", base), ("final", final)):
    if not 0.0 <= m <= 1.0:
      raise errors.ConfigError(f"config.momentum.{name}={m}: a momentum lies in [0, 1]")
  if base == final:
    return lambda step: jnp.asarray(base, jnp.float32)
  length = require_length(length, "MoCo v2's cosine key-encoder momentum")
  return schedules.cosine_between(base, final, length.total_steps)


def make(config, length=None) -> Method:
  if config.views.num_views != 2:
    raise errors.ConfigError(
        f"MoCo v2 contrasts a query view with a key view: config.views."
        f"num_views must be 2, got {config.views.num_views}")
  temperature = float(config.loss.temperature)
  queue_size = int(config.loss.queue_size)
  symmetric = bool(config.loss.symmetric)
  batch = int(config.batch_size)
  if queue_size < batch or queue_size % batch:
    raise errors.ConfigError(
        f"MoCo v2: config.loss.queue_size={queue_size} must be a multiple of "
        f"the global batch config.batch_size={batch} (the queue is a ring "
        f"written one global batch of keys at a time, as in the official "
        f"builder.py)")
  if config.projector.get("last_bn", False):
    raise errors.ConfigError("MoCo v2's head ends in a plain Linear; set "
                             "config.projector.last_bn=False")
  momentum = momentum_schedule(config, length)
  dim = int(config.projector.out_dim)
  encoder, net, net_init = common.build_joint(config)
  num_queues = 2 if symmetric else 1

  def init(key, views):
    k_net, k_queue = jax.random.split(key)
    params, net_state = net_init(k_net, views)
    batch_stats = net_state["batch_stats"]
    queues = tuple(
        losses.QueueState(
            queue=common.unit(jax.random.normal(k, (queue_size, dim), jnp.float32)),
            ptr=jnp.zeros((), jnp.int32))
        for k in jax.random.split(k_queue, num_queues))
    # The key network starts as an exact copy of the query network.
    state = {"batch_stats": batch_stats,
             "key_params": jax.tree.map(jnp.copy, params),
             "key_batch_stats": jax.tree.map(jnp.copy, batch_stats),
             "queues": queues}
    return params, state

  def loss(params, method_state, views, batch_, key, step):
    del batch_, key, step
    v1, v2 = views
    b = v1.shape[0]
    if symmetric:
      x_q = x_k = jnp.concatenate(views, axis=0)   # [2B, ...] both views
    else:
      x_q, x_k = v1, v2                            # official: q <- 1, k <- 2
    (feats, q), new_q = net.apply(
        {"params": params, "batch_stats": method_state["batch_stats"]}, x_q,
        train=True, mutable=["batch_stats"])
    (_, k), new_k = net.apply(
        {"params": method_state["key_params"],
         "batch_stats": method_state["key_batch_stats"]}, x_k,
        train=True, mutable=["batch_stats"])
    # The key network is not trained by this loss (MoCo computes keys under
    # no_grad); theta_k moves only by the EMA in update_state.
    # Loss inputs in float32 (jssl.precision); the queue stores float32 keys.
    q, k = precision.cast_to_f32((q, jax.lax.stop_gradient(k)))
    queues = method_state["queues"]
    if symmetric:
      q1, q2, k1, k2 = q[:b], q[b:], k[:b], k[b:]
      # q1's positive is k2 and its negatives the queue of past view-2 keys
      # (solo-learn mocov2plus), and vice versa.
      l_12, queue_2 = losses.moco(q1, k2, *queues[1], temperature=temperature,
                                  wrap="ring")
      l_21, queue_1 = losses.moco(q2, k1, *queues[0], temperature=temperature,
                                  wrap="ring")
      value = 0.5 * (l_12 + l_21)
      new_queues = (queue_1, queue_2)
      q_pos, k_pos = q, jnp.concatenate([k2, k1], axis=0)
    else:
      value, queue = losses.moco(q, k, *queues[0], temperature=temperature,
                                 wrap="ring")
      new_queues = (queue,)
      q_pos, k_pos = q, k
    metrics = {
        "repr_std": common.feature_std(feats["pre_logits"]),
        base.PROBE_FEATURES: feats["pre_logits"][:b],
        # Mean cosine of each query with its positive key.
        "pos_cosine": jnp.mean(jnp.sum(common.unit(q_pos) * common.unit(k_pos), -1)),
    }
    new_state = {"batch_stats": new_q["batch_stats"],
                 "key_params": method_state["key_params"],
                 "key_batch_stats": new_k["batch_stats"],
                 "queues": new_queues}
    return value, (new_state, metrics)

  def update_state(params, method_state, step):
    m = momentum(step)
    key_params = schedules.ema_update(method_state["key_params"], params, m)
    return dict(method_state, key_params=key_params)

  return Method(init=init, loss=loss, update_state=update_state,
                encoder=encoder, encoder_variables=base.trunk_variables)
