"""MoCo v3 (Chen, Xie, He 2021, "An Empirical Study of Training
Self-Supervised Vision Transformers", ICCV; facebookresearch/moco-v3
`moco/builder.py`, `main_moco.py`, `vits.py`, CONFIG.md).

Query branch theta: encoder f -> projector g -> predictor q. Key branch xi
(momentum encoder): encoder + projector, an EMA of theta. For two views
x1, x2 of each image, q_i = q(g(f_theta(x_i))), k_i = g(f_xi(x_i)):

  ctr(q, k) = 2T * mean_n CE( [n(q_n) . n(k_m) / T]_m , n )   (m: global batch)
  L = ctr(q1, sg k2) + ctr(q2, sg k1)                          (Algorithm 1)
  xi <- m xi + (1 - m) theta,  m = 1 - (1 - m0)(cos(pi k / K) + 1) / 2

(`losses.mocov3`: in-batch keys, no queue, each term scaled by 2T, directions
summed.) Keys are constants for the gradient (the momentum encoder runs under
`no_grad` officially; here it lives in `method_state` and its outputs get a
`stop_gradient`). Its batch norm runs in train mode and keeps its own
running statistics (`model.train()`; only parameters are averaged).

ResNet: projector 2 layers (D-4096-256), predictor 2 layers (256-4096-256);
ViT: projector 3 layers, predictor 2 layers ending in BN; each hidden layer
Linear-BN-ReLU, the projector output BN without affine (`_build_mlp`).
ViT option `freeze_patch_embed`: the random patch projection of Sec. 4.2
(`--stop-grad-conv1`): the patch embedding stays at its random init for the
whole run (`Method.frozen`), which stabilises training.

Evaluation and export use the query (base) encoder, which is what
`main_lincls.py` loads (`module.base_encoder`).

Deviations: the momentum update happens after the optimiser step with the
step's momentum (official: before computing the keys of the next step, with
the next step's momentum), a one-step shift of the schedule; the predictor's
last Linear of the ResNet variant has a bias (jssl's MLPHead adds one when
no BN follows); see also the configs for the optimiser's weight-decay mask.
"""
from __future__ import annotations

from jssl import errors, losses, models
from jssl.methods import base, common
from jssl.methods.base import Method

# The patch embedding stays frozen for the whole run: a step limit no run
# reaches (int32, the optimiser's step counter).
_FOREVER = 2**31 - 1


def make(config, length=None) -> Method:
  """MoCo v3 from `config.model`, `.projector`, `.predictor`, `.ema`, `.loss`.

  Args:
    config: run config; `views.num_views` must be 2; `loss.temperature` (T:
      1.0 ResNet-50 default, 0.2 ViT and solo-learn CIFAR); `ema.base_momentum`
      (m0 0.99); `freeze_patch_embed` (ViT only).
    length: the run length (the momentum schedule spans it); required.
  """
  common.require_views(config, "MoCo v3")
  common.require_fields(config, "MoCo v3",
                        ("projector", "predictor", "ema", "loss"))
  vit = models.is_vit(config.model)
  freeze_patch = bool(config.get("freeze_patch_embed", False))
  if freeze_patch and not vit:
    raise errors.ConfigError(
        "freeze_patch_embed (MoCo v3's random patch projection) needs a ViT "
        f"encoder; config.model.name={config.model.name!r}")
  momentum = common.momentum_schedule(config, length, "MoCo v3 momentum")
  temperature = float(config.loss.temperature)
  # MoCo v3's predictor is the same kind of MLP as its projector (it may end
  # in BN), so it is built by make_projector.
  encoder, online, target_net = common.build_nets(config,
                                                  predictor_from="projector")

  def loss(params, method_state, views, batch, key, step):
    del batch, key
    h, q, k, new_state = common.online_target_forward(
        online, target_net, params, method_state, views)
    value = losses.mocov3(q[0], q[1], k[0], k[1], temperature=temperature)
    metrics = {"repr_std": common.feature_std(h[0]), base.PROBE_FEATURES: h[0],
               "pos_cosine": common.mean_cosine(q[0], k[1]),
               "ema_momentum": momentum(step)}
    return value, (new_state, metrics)

  frozen = (("encoder/patch_embed", _FOREVER),) if freeze_patch else ()
  # The query (base) encoder is what MoCo v3's linear probe loads.
  return Method(init=common.online_target_init(online), loss=loss,
                update_state=common.target_update_fn(momentum),
                encoder=encoder, encoder_variables=base.trunk_variables,
                frozen=frozen)
