"""NNCLR (Dwibedi, Aytar, Tompson, Sermanet, Zisserman 2021, "With a Little
Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
Representations", ICCV). No author code was released; the reference
behaviour is lightly's NNCLR example (`NNMemoryBankModule` + `NTXentLoss`) and
solo-learn `solo/methods/nnclr.py`.

Network: encoder f -> projector g (3 layers with BN, the last one included,
[2048, 2048, d=256] in the paper, Sec. 4.1) -> predictor q (2 layers, hidden
4096). For two views of each image, z = g(f(x)), p = q(z), and the positive
of each embedding is its nearest neighbour in a support set Q of past
embeddings (eq. 2, cosine similarity; the raw row is returned)::

  L = 0.5 * ( ntxent(NN(z_0, Q), p_1) + ntxent(NN(z_1, Q), p_0) )

computed by `jssl.losses.nnclr` (symmetric, the paper's Sec. 3 "we
symmetrize"; the NT-Xent of lightly's example, see that function for the
paper's N-way variant). The neighbours and Q are constants: gradients reach
the encoder, projector and predictor through p only; z reaches the loss only
through the argmax (no gradient), as in the paper, so the projector is
trained through the predictor.

State (`method_state`, arrays only, saved by Orbax):
  'batch_stats'  BN statistics of encoder, projector and predictor;
  'queue'        `jssl.losses.QueueState`: the support set [K, d] (float32,
                 initialised to random unit rows as lightly and solo-learn do)
                 and its write pointer.

Queue update: inside `loss`, after the lookup, the global batch of view-1
projections z_1 (raw, as lightly stores them) is written FIFO (`wrap='ring'`,
indices modulo K: the paper's queue, Sec. 3; lightly's bank instead drops the
rows that do not fit before the end, the `wrap='reset'` of the loss and its
parity fixture). Any K >= global batch is a strict FIFO with `ring`; K smaller
than the global batch is a config error. The paper's support set is 98,304
(Sec. 4.1, 24 ImageNet batches of 4096); solo-learn's CIFAR recipe 65,536.

Batch norm: the network runs once per view (`common.apply_per_view`; lightly
and solo-learn forward each view separately), BN statistics over the global
batch of one view (SyncBN).

Deviations: solo-learn normalises z before enqueueing (the lookup is
scale-invariant, so the loss is the same). The paper's own loss is eq. 1
(cross-view negatives only); this method uses the 2N-anchor NT-Xent of
lightly (negatives from both sides).

Evaluation/export: the encoder f.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl import errors, losses, precision
from jssl.methods import base, common
from jssl.methods.base import Method


def make(config, length=None) -> Method:
  """NNCLR from `config.model`, `.projector`, `.predictor`, `.loss`.

  Args:
    config: run config; `views.num_views` must be 2; `loss.temperature` (paper
      0.1, solo-learn CIFAR 0.2), `loss.queue_size` (K, at least the global
      `batch_size`).
    length: unused (no step-dependent schedule).
  """
  del length
  common.require_views(config, "NNCLR")
  common.require_fields(config, "NNCLR", ("projector", "predictor", "loss"))
  temperature = float(config.loss.temperature)
  queue_size = int(config.loss.queue_size)
  batch = int(config.batch_size)
  if queue_size < batch:
    raise errors.ConfigError(
        f"NNCLR: config.loss.queue_size={queue_size} must be at least the global batch "
        f"config.batch_size={batch} (each step writes the whole batch into the support set)")
  if temperature <= 0:
    raise errors.ConfigError(f"NNCLR: config.loss.temperature={temperature} must be > 0")
  dim = int(config.projector.out_dim)
  if int(config.predictor.out_dim) != dim:
    raise errors.ConfigError(
        f"NNCLR contrasts predictions with support-set projections: config.predictor.out_dim="
        f"{config.predictor.out_dim} must equal config.projector.out_dim={dim}")
  encoder, online, _ = common.build_nets(config)

  def init(key, views):
    k_net, k_queue = jax.random.split(key)
    variables = online.init(k_net, views[0], train=True)
    queue = losses.QueueState(
        queue=common.unit(jax.random.normal(k_queue, (queue_size, dim), jnp.float32)),
        ptr=jnp.zeros((), jnp.int32))
    return variables["params"], {"batch_stats": variables.get("batch_stats", {}),
                                 "queue": queue}

  def loss(params, method_state, views, batch_, key, step):
    del batch_, key, step
    (h, z, p), stats = common.apply_per_view(
        online, {"params": params, "batch_stats": method_state["batch_stats"]}, views)
    # Loss inputs in float32 (jssl.precision); the support set stores float32.
    z, p = precision.cast_to_f32((z, p))
    # z enters only through the lookup and the queue (constants there too).
    z = jax.lax.stop_gradient(z)
    value, aux = losses.nnclr(z[0], z[1], p[0], p[1], *method_state["queue"],
                              temperature=temperature, wrap="ring")
    metrics = {
        "repr_std": common.feature_std(h[0]),
        base.PROBE_FEATURES: h[0],
        "pred_std": common.feature_std(p[0]),
        # How close the support-set neighbour is to the embedding it replaces.
        "nn_cosine": common.mean_cosine(z[0], aux.nn0),
        # Cosine of each prediction with the other view's neighbour (the positive).
        "pos_cosine": common.mean_cosine(p[1], aux.nn0),
    }
    return value, ({"batch_stats": stats, "queue": aux.queue}, metrics)

  return Method(init=init, loss=loss, update_state=base.keep_state, encoder=encoder,
                encoder_variables=base.trunk_variables)
