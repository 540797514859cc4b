"""Supervised contrastive learning, SupCon (Khosla et al. 2020, "Supervised
Contrastive Learning", NeurIPS; reference code HobbitLong/SupContrast
`losses.py` (SupConLoss) and `main_supcon.py`).

encoder f -> projector g -> unit-norm z for the V = 2 views; eq. 2 (L_out)::

  L = (1/(2B)) sum_a -(T/T_base) (1/|P(a)|) sum_{p in P(a)}
        log( exp(z_a.z_p / T) / sum_{k != a} exp(z_a.z_k / T) )

where P(a) are the other samples of the 2B-sample global batch that share
a's label (`batch['label']`), so each anchor has its other view plus every
same-class image as positives. `jssl.losses.supcon` computes it; under jit
the labels are a global array sharded over the batch axis exactly like the
images (the step shards every leaf of the batch), so positives and negatives
span the global batch.

The projector follows SupContrast's 'mlp' head, Linear-ReLU-Linear without BN
(`config.projector.use_bn=False`; ResNet-50: 2048-2048-128).
`config.loss.base_temperature` is SupContrast's T_base (0.07), which scales
the loss (and so the effective LR) by T/T_base; set it equal to T for an
unscaled loss (solo-learn).

Deviations, and why: views are concatenated into one encoder pass (as jssl's
SimCLR), so BN statistics span both views; SupContrast does the same
(`torch.cat([images[0], images[1]])`). solo-learn's SupCon (the CIFAR-10
figure quoted in configs/supcon.py) uses the "L_in" form (log of the summed
positive probability); jssl uses the paper's better L_out.

Evaluation/export: the encoder f (the paper trains a linear classifier on it).
"""
from __future__ import annotations

import jax.numpy as jnp

from jssl import errors, losses
from jssl.methods import base, common
from jssl.methods.base import Method


def make(config, length=None) -> Method:
  del length  # no step-dependent schedule besides the LR
  num_views = config.views.num_views
  if num_views < 2:
    raise errors.ConfigError(f"SupCon needs >= 2 views of each image; "
                             f"config.views.num_views={num_views}")
  temperature = float(config.loss.temperature)
  base_temperature = float(config.loss.get("base_temperature", temperature))
  if temperature <= 0 or base_temperature <= 0:
    raise errors.ConfigError(f"SupCon temperatures must be > 0, got temperature="
                             f"{temperature}, base_temperature={base_temperature}")
  encoder, net, init = common.build_joint(config)

  def loss(params, method_state, views, batch, key, step):
    del key, step
    if "label" not in batch:
      raise ValueError(
          "SupCon is supervised: the batch needs integer class labels under "
          f"'label' (shape [B]); it has keys {sorted(batch)}")
    labels = batch["label"]
    b = views[0].shape[0]
    if labels.shape != (b,):
      raise ValueError(f"SupCon: batch['label'] must have shape [B] = {(b,)}, "
                       f"got {labels.shape}")
    # [V*B, H, W, C] in one pass.
    feats, z, new_state = common.joint_forward(net, params, method_state, views)
    features = jnp.swapaxes(z, 0, 1)  # [B, V, P]
    value = losses.supcon(features, labels, temperature=temperature,
                          base_temperature=base_temperature)
    metrics = {"repr_std": common.feature_std(feats["pre_logits"]),
               base.PROBE_FEATURES: feats["pre_logits"][:b]}
    return value, (new_state, metrics)

  return Method(init=init, loss=loss, update_state=base.keep_state,
                encoder=encoder, encoder_variables=base.trunk_variables)
