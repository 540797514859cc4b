"""MMCR (Yerxa, Kuang, Simoncelli, Chung 2023, "Learning Efficient Coding of Natural
Images with Maximum Manifold Capacity Representations", NeurIPS; official code
ThomasYerxa/mmcr: `mmcr/cifar_stl/train.py` + `loss_mmcr.py` (no momentum) and
`mmcr/imagenet/train.py` + `loss_mmcr_momentum.py` + `models.py` (momentum variant)).

Each image gives N augmented views (`config.views.num_views`, 40 on CIFAR, 8 on
ImageNet). encoder f -> projector g -> z, rows L2-normalised; the centroid c_b of
image b is the mean of its N normalised projections, and (Sec. 3, eq. 3-4)

  L = -||C||_* + lambda (1/B) sum_b ||Z_b||_*       C = (c_1 .. c_B),  ||.||_* nuclear norm

computed by `jssl.losses.mmcr_official` over the global batch (the official code
all-gathers the projections before the SVD). lambda = 0 in every official run.

Momentum variant (`config.loss.momentum_encoder`, the official ImageNet default
`MMCR_Momentum`): a momentum copy of encoder + projector (EMA with `config.ema`,
constant tau 0.99 officially, `misc.MomentumUpdate` after each step) also embeds every
view; the centroids average the online and the momentum means,
c_b = (mean_n u_{b,n} + mean_n u^m_{b,n}) / 2, and the momentum outputs are constants
of the loss (`stop_gradient`; the official momentum parameters have
requires_grad=False). Evaluation and export use the online encoder, as
`MomentumComposerWrapper.get_backbone` hands the online `f` to the linear probe.

Batch norm: all B*N views go through the network in one pass (the official loader
concatenates the views into one `(B N)` batch), so statistics span every view;
`common.joint_forward`. The loss takes the views sample-major as the official
`einops.rearrange('(B N) C -> B C N')` does.

Deviation: the official momentum loss drops non-finite centroid rows before the SVD
(dynamic shape); here they would make the loss non-finite.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl import errors, losses
from jssl.methods import base, common
from jssl.methods.base import Method


def _sample_major(z):
  """[V, B, P] -> [B * V, P] with row b * V + v (the official `(B N)` layout)."""
  return jnp.swapaxes(z, 0, 1).reshape(-1, z.shape[-1])


def make(config, length=None) -> Method:
  """MMCR from `config.model`, `.projector`, `.loss` (`lmbda`, `momentum_encoder`)
  and, with the momentum encoder, `.ema` (`base_momentum`, `final_momentum`).

  Args:
    config: run config; `views.num_views` N >= 2 views per image.
    length: the run length; required with the momentum encoder (its schedule).
  """
  common.require_fields(config, "MMCR", ("projector", "loss"))
  num_views = int(config.views.num_views)
  if num_views < 2:
    raise errors.ConfigError(
        f"MMCR averages several views of each image; config.views.num_views={num_views} "
        "(the official runs use 40 on CIFAR, 8 on ImageNet)")
  if common.num_local_views(config):
    raise errors.ConfigError(
        f"MMCR uses no multi-crop local views; config.views.local.num="
        f"{common.num_local_views(config)} (set it to 0)")
  lmbda = float(config.loss.lmbda)
  if lmbda < 0:
    raise errors.ConfigError(f"MMCR: config.loss.lmbda={lmbda} must be >= 0")
  use_momentum = bool(config.loss.get("momentum_encoder", False))
  encoder, net, init = common.build_joint(config)

  def metrics_of(feats, views, terms):
    return {"repr_std": common.feature_std(feats["pre_logits"]),
            base.PROBE_FEATURES: feats["pre_logits"][:views[0].shape[0]],
            "global_nuc": terms.global_nuc, "local_nuc": terms.local_nuc}

  if not use_momentum:
    def loss(params, method_state, views, batch, key, step):
      del batch, key, step
      feats, z, new_state = common.joint_forward(net, params, method_state, views)
      value, terms = losses.mmcr_official(_sample_major(z), num_views=num_views,
                                          lmbda=lmbda)
      return value, (new_state, metrics_of(feats, views, terms))

    return Method(init=init, loss=loss, update_state=base.keep_state,
                  encoder=encoder, encoder_variables=base.trunk_variables)

  common.require_fields(config, "MMCR", ("ema",))
  tau = common.momentum_schedule(config, length, "MMCR momentum encoder")

  def loss(params, method_state, views, batch, key, step):  # noqa: F811
    del batch, key
    feats, z, stats = common.joint_forward(
        net, params, {"batch_stats": method_state["batch_stats"]}, views)
    target = method_state["target"]
    _, z_m, t_stats = common.joint_forward(
        net, target["params"], {"batch_stats": target["batch_stats"]}, views)
    value, terms = losses.mmcr_official(
        _sample_major(z), jax.lax.stop_gradient(_sample_major(z_m)),
        num_views=num_views, lmbda=lmbda)
    new_state = dict(method_state, batch_stats=stats["batch_stats"],
                     target={"params": target["params"],
                             "batch_stats": t_stats["batch_stats"]})
    metrics = metrics_of(feats, views, terms)
    metrics["ema_momentum"] = tau(step)
    return value, (new_state, metrics)

  return Method(init=common.online_target_init(net), loss=loss,
                update_state=common.target_update_fn(tau),
                encoder=encoder, encoder_variables=base.trunk_variables)
