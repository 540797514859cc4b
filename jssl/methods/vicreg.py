"""VICReg (Bardes, Ponce, LeCun 2022, "VICReg: Variance-Invariance-Covariance
Regularization for Self-Supervised Learning", ICLR; official code
facebookresearch/vicreg `main_vicreg.py`, class `VICReg`).

encoder f -> expander h -> z^A, z^B, then eq. 1-6::

  s(Z, Z')  = (1/(B D)) sum ||z_b - z'_b||^2                  invariance (MSE)
  v(Z)      = (1/D) sum_d relu(1 - sqrt(Var(z_d) + 1e-4))     variance hinge
  c(Z)      = (1/D) sum_{i != j} Cov(Z)_ij^2                   covariance
  L = 25 s + 25 (v(Z) + v(Z'))/2 + 1 (c(Z) + c(Z'))           lambda/mu/nu

computed by `jssl.losses.vicreg` over the global batch (the official code
all-gathers z for v and c). The three unweighted terms are logged as
`invariance`, `variance` and `covariance`.

The expander is Linear-BN-ReLU x2 then Linear (`config.projector`): the
paper's ImageNet head is 8192-8192-8192; solo-learn's CIFAR recipe uses
2048-2048-2048 (ResNet-18's 512-d features; 92.07% CIFAR-10 linear).

Deviations from the paper, and why:
  * Views are concatenated into one encoder pass (as jssl's SimCLR), so BN
    statistics span both views (2B images); the official code forwards each
    view separately.
  * jssl's MLPHead drops the bias of a Linear followed by BN (BN's shift makes
    it redundant) and keeps one on the last Linear, where the official
    expander has `bias=False`; neither changes what the network can express.

Evaluation/export: the encoder f.
"""
from __future__ import annotations

from jssl import errors, losses
from jssl.methods import base, common
from jssl.methods.base import Method


def make(config, length=None) -> Method:
  del length  # no step-dependent schedule besides the LR
  if config.views.num_views != 2:
    raise errors.ConfigError(
        f"VICReg regularises exactly 2 views; config.views.num_views="
        f"{config.views.num_views}")
  coeffs = {k: float(config.loss[k])
            for k in ("sim_coeff", "std_coeff", "cov_coeff")}
  if min(coeffs.values()) < 0:
    raise errors.ConfigError(f"VICReg coefficients must be >= 0, got {coeffs}")
  encoder, net, init = common.build_joint(config)

  def loss(params, method_state, views, batch, key, step):
    del batch, key, step
    feats, z, new_state = common.joint_forward(net, params, method_state, views)
    # Global arrays under jit: variance and covariance span the global batch.
    value, terms = losses.vicreg(z[0], z[1], **coeffs)
    metrics = {"repr_std": common.feature_std(feats["pre_logits"]),
               base.PROBE_FEATURES: feats["pre_logits"][:views[0].shape[0]],
               "invariance": terms.invariance,
               "variance": terms.variance,
               "covariance": terms.covariance}
    return value, (new_state, metrics)

  return Method(init=init, loss=loss, update_state=base.keep_state,
                encoder=encoder, encoder_variables=base.trunk_variables)
