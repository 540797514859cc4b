"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to
Self-Supervised Learning", NeurIPS; google-deepmind/deepmind-research
`byol/byol_experiment.py`, `byol/configs/byol.py`, `byol/utils/helpers.py`).

Online network theta: encoder f -> projector g -> predictor q. Target network
xi: encoder + projector only, an exponential moving average of the online
one. For two augmented views v, v' of each image (asymmetric recipe,
`views.byol_recipe`):

  L = ||n(q_theta(z_theta)) - n(sg z'_xi)||^2 + (the same with v, v' swapped)
    = sum over the two directions of (2 - 2 cos), mean over the batch   (eq. 2)
  xi <- tau xi + (1 - tau) theta,
  tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2                  (Sec. 3.2)

The target's outputs are constants for the gradient (`jax.lax.stop_gradient`;
the target lives in `method_state`, which is never differentiated). The
target is updated after the optimiser step (`update_state`), with the
momentum of the step just taken, exactly as `_update_fn` does. The target's
batch norm runs in train mode (batch statistics) and its running statistics
come from its own forward passes, not from the EMA (byol `target_state`).

Evaluation and export use the ONLINE encoder, as BYOL reports.

Deviations: the target starts as a copy of the online network (BYOL draws it
from another seed and reports no difference; moco-v3 and solo-learn copy).
The linear classifier BYOL trains alongside on stop-gradient features is
jssl's method-independent online probe (`config.online_probe`,
`jssl.step.OnlineProbe`).
"""
from __future__ import annotations

from jssl import losses
from jssl.methods import base, common
from jssl.methods.base import Method


def make(config, length=None) -> Method:
  """BYOL from `config.model`, `.projector`, `.predictor`, `.ema`.

  Args:
    config: run config; `views.num_views` must be 2; `ema.base_momentum`
      (tau_base, 0.996 on ImageNet for 1000 epochs, 0.99 on CIFAR in
      solo-learn) and `ema.final_momentum` (1.0).
    length: the run length (the momentum schedule spans it); required.
  """
  common.require_views(config, "BYOL")
  common.require_fields(config, "BYOL", ("projector", "predictor", "ema"))
  tau = common.momentum_schedule(config, length, "BYOL target momentum")
  encoder, online, target_net = common.build_nets(config)

  def loss(params, method_state, views, batch, key, step):
    del batch, key
    h, p, z_t, new_state = common.online_target_forward(
        online, target_net, params, method_state, views)
    value = losses.byol(p[0], p[1], z_t[0], z_t[1])  # sg(z'_xi) inside too
    metrics = {"repr_std": common.feature_std(h[0]), base.PROBE_FEATURES: h[0],
               "pred_std": common.feature_std(p[0]),
               # cos(q(z_1), z'_2): 1 - loss/4 per direction on average.
               "pos_cosine": common.mean_cosine(p[0], z_t[1]),
               "ema_momentum": tau(step)}
    return value, (new_state, metrics)

  # After the optimiser step: theta is the updated online network.
  return Method(init=common.online_target_init(online), loss=loss,
                update_state=common.target_update_fn(tau),
                encoder=encoder, encoder_variables=base.trunk_variables)
