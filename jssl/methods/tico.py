"""TiCo (Zhu, Moraes, Karakasli, Chi, Sun 2022, "TiCo: Transformation
Invariance and Covariance Contrast for Self-Supervised Visual Representation
Learning", arXiv:2206.10698). No author code was released; the loss follows
lightly `TiCoLoss` (which cites sayannag/TiCo-pytorch), the training set-up
lightly's `benchmarks/imagenet/resnet50/tico.py` and the paper's Algorithm 1.

Online network theta: encoder f -> projector g (no predictor). Momentum
encoder xi: the same encoder + projector, an exponential moving average of
theta (BYOL's target). For two augmented views x_1, x_2 of each image::

  z_a = g_theta(f_theta(x_1)),  z_b = sg( g_xi(f_xi(x_2)) )
  (loss, C) = jssl.losses.tico(z_a, z_b, C; beta, rho)
  L = 1 - mean_i u_i.v_i + rho mean_i u_i^T C u_i,   C <- beta C + (1-beta) sg(u^T u / N)
  xi <- tau xi + (1 - tau) theta,  tau cosine from ema.base_momentum to ema.final_momentum

(u, v the L2-normalised z_a, z_b.) The covariance C is updated in the loss
step with the current batch and used at once (lightly, sayannag); it starts
at zero (lightly's lazy init).

State (`method_state`, arrays only, saved by Orbax):
  'batch_stats'  the online network's BN statistics;
  'target'       the momentum encoder (`common.target_init`: a copy of the
                 online encoder + projector at init; its own BN statistics);
  'cov'          C [d, d] float32, replicated (the global batch's u^T u / N).

The momentum encoder is updated after the optimiser step (`update_state`,
`common.target_update_fn`, as BYOL). Gradients reach neither the momentum
encoder (its outputs are under `stop_gradient`) nor C (a constant in the loss).

Deviations: lightly's benchmark feeds the loss's first argument (the one with
the covariance term) from the momentum encoder and so puts no gradient on
that term; here, as in the paper's Algorithm 1, the covariance term acts on the
online network's z_a. One direction per step (x_1 online, x_2 momentum), as in
Algorithm 1 and lightly's benchmark; no symmetrisation.

Evaluation/export: the online encoder (lightly's benchmark evaluates the EMA
copy; BYOL evaluates the online network, as here).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl import errors, losses, models, precision
from jssl.methods import base, common
from jssl.methods.base import Method


def make(config, length=None) -> Method:
  """TiCo from `config.model`, `.projector`, `.ema`, `.loss` (beta, rho).

  Args:
    config: run config; `views.num_views` must be 2; `loss.beta` in [0, 1)
      (0.9), `loss.rho` >= 0 (lightly 20, sayannag 8); `ema.base_momentum` /
      `ema.final_momentum` (lightly's benchmark 0.99 -> 1.0).
    length: the run length (the momentum schedule spans it); required.
  """
  common.require_views(config, "TiCo")
  common.require_fields(config, "TiCo", ("projector", "ema", "loss"))
  beta, rho = float(config.loss.beta), float(config.loss.rho)
  if not 0.0 <= beta < 1.0:
    raise errors.ConfigError(f"TiCo: config.loss.beta={beta} must lie in [0, 1) (the EMA "
                             "coefficient of the covariance; 1 never lets a batch in)")
  if rho < 0:
    raise errors.ConfigError(f"TiCo: config.loss.rho={rho} must be >= 0")
  tau = common.momentum_schedule(config, length, "TiCo momentum encoder")
  encoder = models.make_encoder(config.model)
  net = common.SiameseNet(encoder=encoder, projector=common.projector_of(config))
  dim = int(config.projector.out_dim)

  def init(key, views):
    variables = net.init(key, views[0], train=True)
    params, stats = variables["params"], variables.get("batch_stats", {})
    return params, {"batch_stats": stats, "target": common.target_init(params, stats),
                    "cov": jnp.zeros((dim, dim), jnp.float32)}

  def loss(params, method_state, views, batch, key, step):
    del batch, key
    (h, z, _), stats = common.apply_per_view(
        net, {"params": params, "batch_stats": method_state["batch_stats"]}, views[:1])
    target = method_state["target"]
    (_, z_t, _), t_stats = common.apply_per_view(net, target, views[1:])
    # Loss inputs in float32 (jssl.precision); the momentum encoder's output is a
    # constant (it moves only by the EMA in update_state).
    z_a, z_b = precision.cast_to_f32((z[0], z_t[0]))
    z_b = jax.lax.stop_gradient(z_b)
    value, cov = losses.tico(z_a, z_b, method_state["cov"], beta=beta, rho=rho)
    u = common.unit(z_a)
    metrics = {"repr_std": common.feature_std(h[0]), base.PROBE_FEATURES: h[0],
               "pos_cosine": common.mean_cosine(z_a, z_b),
               # rho's term: mean squared cosine with the recent embeddings.
               "cov_term": jnp.mean(jnp.sum((u @ cov) * u, -1)),
               "ema_momentum": tau(step)}
    new_state = {"batch_stats": stats, "cov": cov.astype(jnp.float32),
                 "target": {"params": target["params"], "batch_stats": t_stats}}
    return value, (new_state, metrics)

  return Method(init=init, loss=loss, update_state=common.target_update_fn(tau),
                encoder=encoder, encoder_variables=base.trunk_variables)
