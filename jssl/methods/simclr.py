"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML; google-research/simclr `tf2/model.py`).

encoder f -> projector g (MLP with BN) -> contrastive loss over the global
batch: both views are concatenated before the encoder so batch-norm statistics
span all 2B images of the global batch, as SimCLR's global BN does on TPU pods.

`config.loss.name` picks the contrastive loss on the projections:
  'ntxent' (default)  NT-Xent, SimCLR eq. 1 (`jssl.losses.ntxent`).
  'dcl'               Decoupled contrastive loss (Yeh et al. 2022, "Decoupled
                      Contrastive Learning", ECCV, eq. 6): the positive pair is
                      removed from the denominator (`jssl.losses.dcl`).
  'dclw'              DCL with von Mises-Fisher weights on the positive term,
                      w_i = 2 - B softmax_i(u_i.v_i / sigma) (eq. 7;
                      `jssl.losses.dclw`, `config.loss.sigma`, paper 0.5).
DCL/DCLW follow lightly's convention (the two directions averaged, DCLW
weights detached); the reference implementation the losses are tested against
(raminnakhli/Decoupled-Contrastive-Learning `loss/dcl.py`,
`experiment/simclr/main.py`) sums the directions, i.e. 2x the loss and the
gradient, which a linear-scaled learning rate absorbs.
"""
from __future__ import annotations

from jssl import errors, losses
from jssl.methods import base, common
from jssl.methods.base import Method

LOSSES = ("ntxent", "dcl", "dclw")


def contrastive_loss_fn(loss_cfg):
  """`(z_a, z_b) -> scalar` for `loss_cfg.name` in LOSSES; raises on others."""
  name = loss_cfg.get("name", "ntxent")
  temperature = loss_cfg.temperature
  if name == "ntxent":
    return lambda a, b: losses.ntxent(a, b, temperature=temperature)
  if name == "dcl":
    return lambda a, b: losses.dcl(a, b, temperature=temperature)
  if name == "dclw":
    sigma = loss_cfg.get("sigma", 0.5)
    return lambda a, b: losses.dclw(a, b, temperature=temperature, sigma=sigma)
  raise errors.ConfigError(f"config.loss.name={name!r}: SimCLR supports {', '.join(LOSSES)}")


def make(config, length=None) -> Method:
  del length  # SimCLR has no step-dependent schedule besides the LR.
  if config.views.num_views != 2:
    raise errors.ConfigError(
        f"SimCLR contrasts exactly 2 views; config.views.num_views="
        f"{config.views.num_views}")
  contrast = contrastive_loss_fn(config.loss)
  encoder, net, init = common.build_joint(config)

  def loss(params, method_state, views, batch, key, step):
    del batch, key, step
    # [2B, H, W, C] in one pass: BN over both views.
    feats, z, new_state = common.joint_forward(net, params, method_state, views)
    value = contrast(z[0], z[1])
    metrics = {"repr_std": common.feature_std(feats["pre_logits"]),
               base.PROBE_FEATURES: feats["pre_logits"][:views[0].shape[0]],
               "pos_cosine": common.mean_cosine(z[0], z[1])}
    return value, (new_state, metrics)

  return Method(init=init, loss=loss, update_state=base.keep_state,
                encoder=encoder, encoder_variables=base.trunk_variables)

