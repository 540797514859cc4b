"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny 2021, "Barlow Twins:
Self-Supervised Learning via Redundancy Reduction", ICML; official code
facebookresearch/barlowtwins `main.py`, class `BarlowTwins`).

encoder f -> projector g -> z^A, z^B for the two views, then eq. 1-2::

  c_ij = sum_b zh^A_{b,i} zh^B_{b,j} / B        zh = per-view batch-normalised z
  L = sum_i (1 - c_ii)^2 + lambda sum_{i != j} c_ij^2        (lambda = 0.0051)

The batch normalisation of z (official `self.bn = BatchNorm1d(affine=False)`
in train mode, i.e. batch statistics, biased variance, eps 1e-5, each view
separately, SyncBN = global batch) is part of the loss: `jssl.losses.
barlow_twins` standardises each view over the global batch and divides `c`
by the global batch, so no BN layer ends the projector here. The projector is
Linear-BN-ReLU x2 then Linear (`config.projector`: paper ImageNet
8192-8192-8192; solo-learn's CIFAR recipe 2048-2048-2048, since at 32 px and
ResNet-18 (512-d features) the 8192-wide head costs more than the encoder and
solo-learn reaches 92.10% with 2048). The final Linear keeps a bias (jssl's
`MLPHead`) where the official one has none: the loss subtracts the per-dimension
batch mean, so that bias has zero gradient and no effect.

Deviations from the paper, and why:
  * Views are concatenated into one encoder pass (as jssl's SimCLR), so the
    encoder's and projector's BN statistics span both views (2B images); the
    official code forwards each view separately (statistics over B).
  * The paper's LARS uses lr 0.2 for weights and 0.0048 for biases and BN
    parameters (both x B/256). `jssl.schedules.make_optimizer` has one LR
    schedule, so biases/BN use the weight LR; like the official LARS they are
    excluded from weight decay and from the trust-ratio adaptation.
    solo-learn's CIFAR recipe also uses one LR for all parameters.

Evaluation/export: the encoder f (the only network there is).
"""
from __future__ import annotations

from jssl import errors, losses
from jssl.methods import base, common
from jssl.methods.base import Method


def make(config, length=None) -> Method:
  del length  # no step-dependent schedule besides the LR
  if config.views.num_views != 2:
    raise errors.ConfigError(
        f"Barlow Twins correlates exactly 2 views; config.views.num_views="
        f"{config.views.num_views}")
  lambda_param = float(config.loss.lambda_param)
  scale = float(config.loss.get("scale", 1.0))
  if lambda_param < 0 or scale <= 0:
    raise errors.ConfigError(f"Barlow Twins needs config.loss.lambda_param >= 0 and "
                             f"scale > 0, got {lambda_param} and {scale}")
  encoder, net, init = common.build_joint(config)

  def loss(params, method_state, views, batch, key, step):
    del batch, key, step
    feats, z, new_state = common.joint_forward(net, params, method_state, views)
    # Arrays are global under jit: the loss's standardisation and c span the
    # global batch (the official SyncBN + all_reduce of c).
    value = losses.barlow_twins(z[0], z[1], lambda_param=lambda_param,
                                scale=scale)
    metrics = {"repr_std": common.feature_std(feats["pre_logits"]),
               base.PROBE_FEATURES: feats["pre_logits"][:views[0].shape[0]],
               "proj_std": common.feature_std(z.reshape(-1, z.shape[-1]))}
    return value, (new_state, metrics)

  return Method(init=init, loss=loss, update_state=base.keep_state,
                encoder=encoder, encoder_variables=base.trunk_variables)
