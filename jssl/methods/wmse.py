"""W-MSE (Ermolov, Siarohin, Sangineto, Sebe 2021, "Whitening for Self-Supervised
Representation Learning", ICML; official code htdt/self-supervised `methods/w_mse.py`,
`methods/whitening.py`, `methods/norm_mse.py`, `model.py` `get_head`).

encoder f -> head g (Linear-BN-ReLU-Linear, 1024 hidden, to a small embedding: 64-d on
CIFAR, 128-d on STL-10 / Tiny ImageNet) -> z for each of V views (W-MSE 2 / W-MSE 4);
then (Sec. 3-4, eq. 4-7), per whitening iteration:

  split the batch into sub-batches of `w_size` images at random (same split per view)
  W_v = Cholesky-whitened z_v within each sub-batch (identity covariance)
  L = mean over view pairs i < j of [2 - 2 mean_b cos(W_i[b], W_j[b])]

computed by `jssl.losses.wmse` on the global batch (`config.loss`: `w_size`, `w_iter`,
`eps`); the random split comes from the step's key. Whitening needs
w_size >= 2 x the embedding dimension (Sec. 4, lightly `WMSELoss` enforces it) and
whole sub-batches: both are config errors here.

Evaluation/export: the encoder f.

Deviations: the official code runs the encoder once per view (BN per view) and the head
on the concatenation; here encoder and head see all V views in one pass
(`common.joint_forward`, as jssl's SimCLR / VICReg), so the encoder's BN statistics span
the V*B images. jssl's MLP head drops the bias of the Linear before BN (BN's shift makes
it redundant), and the bias of the output Linear is frozen at 0 (the whitening removes
the mean, so the loss has no gradient for it beyond rounding noise).
"""
from __future__ import annotations

from jssl import errors, losses
from jssl.methods import base, common
from jssl.methods.base import Method

_OUT_BIAS = "projector/out/bias"
_NEVER = 2**31 - 1  # a step count never reached: frozen for the whole run


def make(config, length=None) -> Method:
  """W-MSE from `config.model`, `.projector` (the head) and `.loss` (`w_size`, `w_iter`,
  `eps`); `views.num_views` V >= 2."""
  del length  # no step-dependent schedule besides the LR
  common.require_fields(config, "W-MSE", ("projector", "loss"))
  v = int(config.views.num_views)
  if v < 2:
    raise errors.ConfigError(f"W-MSE compares >= 2 views of each image; "
                             f"config.views.num_views={v}")
  if common.num_local_views(config):
    raise errors.ConfigError(
        f"W-MSE uses no multi-crop local views; config.views.local.num="
        f"{common.num_local_views(config)} (set it to 0)")
  emb = int(config.projector.out_dim)
  w_size = int(config.loss.w_size)
  batch = int(config.batch_size)
  if w_size < 2 * emb:
    raise errors.ConfigError(
        f"W-MSE whitens sub-batches of config.loss.w_size={w_size} images, which must "
        f"be >= 2 x config.projector.out_dim={emb} (else the covariance is near-singular)")
  if batch % w_size:
    raise errors.ConfigError(
        f"W-MSE splits the batch into sub-batches of config.loss.w_size={w_size}: "
        f"config.batch_size={batch} must be a multiple of it")
  w_iter = int(config.loss.w_iter)
  if w_iter < 1:
    raise errors.ConfigError(f"W-MSE: config.loss.w_iter={w_iter} must be >= 1")
  eps = float(config.loss.eps)
  if not 0.0 <= eps < 1.0:
    raise errors.ConfigError(f"W-MSE: config.loss.eps={eps} must be in [0, 1)")
  encoder, net, init = common.build_joint(config)

  def loss(params, method_state, views, batch, key, step):
    del batch, step
    feats, z, new_state = common.joint_forward(net, params, method_state, views)
    value, white = losses.wmse(
        z.reshape(-1, z.shape[-1]), v, eps=eps, w_iter=w_iter,
        w_size=None if w_size == z.shape[1] else w_size, key=key)
    metrics = {"repr_std": common.feature_std(feats["pre_logits"]),
               base.PROBE_FEATURES: feats["pre_logits"][:views[0].shape[0]],
               # cos between the whitened first two views: 1 - loss/2 for V = 2.
               "pos_cosine": common.mean_cosine(white[:z.shape[1]],
                                                white[z.shape[1]:2 * z.shape[1]])}
    return value, (new_state, metrics)

  # The whitening subtracts the batch mean, so the loss does not depend on the bias of
  # the head's output Linear: its gradient is rounding noise, which Adam would scale up
  # to lr-sized steps (and which differs between device layouts). It stays at 0.
  frozen = ((_OUT_BIAS, _NEVER),)
  return Method(init=init, loss=loss, update_state=base.keep_state,
                encoder=encoder, encoder_variables=base.trunk_variables, frozen=frozen)
