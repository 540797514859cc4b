"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation
Learning", CVPR; facebookresearch/simsiam `simsiam/builder.py`,
`main_simsiam.py`).

One network: encoder f -> projector (3 layers, ends in BN without affine)
-> predictor h (bottleneck 512). For two views x1, x2 of each image,
z_i = proj(f(x_i)), p_i = h(z_i):

  L = 1/2 D(p1, sg(z2)) + 1/2 D(p2, sg(z1)),  D(p, z) = -cos(p, z)   (eq. 4)

The stop-gradient on z is what prevents collapse (Sec. 4.1); it sits inside
`losses.simsiam` (the builder returns `z.detach()`). No target network and no
momentum. Batch norm runs once per view (the builder calls the encoder on
x1 and x2 separately; `common.apply_per_view`).

Deviations from the official recipe, and why:
  * `--fix-pred-lr` (the predictor keeps the initial lr while the rest
    follows the cosine; the paper's Sec. 4.3 / official README command, 68.1%
    at 100 epochs against 67.7% without, Table 1) is `config.fix_pred_lr`
    (`Method.constant_lr = ("predictor",)`, `schedules.scale_by_grouped_lr`).
    With a warm-up (the CIFAR and quickstart presets; the paper has none)
    the predictor skips the warm-up too, as solo-learn's `static_lr` does.
  * Weight decay skips biases and BN parameters (jssl's SGD masks 1-D
    parameters); PyTorch's SGD in `main_simsiam.py` decays all of them.
  * The projector's last Linear has no bias (it is followed by BN; the
    official one keeps a bias with `requires_grad=False`, i.e. frozen at its
    random init, which the following BN removes anyway).
"""
from __future__ import annotations

from jssl import losses, precision
from jssl.methods import base, common
from jssl.methods.base import Method


def make(config, length=None) -> Method:
  """SimSiam from `config.model`, `.projector`, `.predictor`.

  Args:
    config: run config; `views.num_views` must be 2.
    length: unused (no step-dependent schedule besides the LR).
  """
  del length
  common.require_views(config, "SimSiam")
  common.require_fields(config, "SimSiam", ("projector", "predictor"))
  encoder, net, _ = common.build_nets(config)

  def init(key, views):
    variables = net.init(key, views[0], train=True)
    return variables["params"], {"batch_stats": variables.get("batch_stats", {})}

  def loss(params, method_state, views, batch, key, step):
    del batch, key, step
    (h, z, p), stats = common.apply_per_view(
        net, {"params": params, "batch_stats": method_state["batch_stats"]},
        views)
    # losses.simsiam applies the stop-gradient to z (the builder's
    # z.detach()): each branch is a fixed target for the other's predictor.
    p, z = precision.cast_to_f32((p, z))   # loss inputs in float32
    value = losses.simsiam(p[0], p[1], z[0], z[1])
    metrics = {"repr_std": common.feature_std(h[0]), base.PROBE_FEATURES: h[0],
               # Chen & He Fig. 2: std of the normalised projector output,
               # ~1/sqrt(P) when healthy, 0 when collapsed.
               "z_std": common.feature_std(z[0])}
    return value, ({"batch_stats": stats}, metrics)

  fixed = ("predictor",) if bool(config.get("fix_pred_lr", False)) else ()
  return Method(init=init, loss=loss, update_state=base.keep_state,
                encoder=encoder, encoder_variables=base.trunk_variables,
                constant_lr=fixed)
