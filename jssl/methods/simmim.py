"""SimMIM (Xie et al. 2022, "SimMIM: A Simple Framework for Masked Image
Modeling", CVPR; official code microsoft/SimMIM `models/simmim.py` (`SimMIM`,
`VisionTransformerForSimMIM`), `data/data_simmim.py` (`MaskGenerator`,
`SimMIMTransform`), `main_simmim.py`, `config.py` and
`configs/vit_base__800ep/simmim_pretrain__vit_base__img224__800ep.yaml`, all
read for this file).

One view x (normalised). A random set of square "mask patches" of
`mask_patch_size` pixels (32 in the paper, a multiple of the ViT's patch p)
is masked: `MaskGenerator` draws ceil(ratio * M) of the M = (S / mask_patch)^2
cells uniformly without replacement (ratio 0.6) and expands each to its
(mask_patch / p)^2 ViT tokens. The ViT encodes ALL tokens, the masked ones
replaced by one learned mask token before the position embeddings
(`jssl.models.vit`, `use_mask_token`); a linear head (SimMIM's 1x1 conv to
p^2 * 3 channels + PixelShuffle(p), Sec. 3.2 "Prediction head") maps each
patch token to its p*p*C pixels; the loss (Sec. 3.3, eq. 1) is the L1 error on
the masked pixels only, divided by the number of masked pixels (+1e-5) and C
as `SimMIM.forward` (`jssl.losses.simmim`), against the normalised image
(the target is the input tensor after `T.Normalize`, as in the official code).

Masks (`random_mask`): each example draws uniform noise over the M cells from
its own key (`jssl.sharding.example_keys` + `vmap`) and masks the ceil(ratio
M) cells of smallest noise: static shape, exactly the same count per example,
independent of the sharding (tested 1 vs 8 devices).

Drop-path: SimMIM pre-trains its ViT-B with `DROP_PATH_RATE: 0.1`; here
`config.model.drop_path_rate`, keyed by the step key (rng stream 'dropout').

Evaluation / export: the encoder alone (no mask token: it is dropped from the
exported parameters) on the full image. Its 'pre_logits' is the mean of the
patch tokens after the final norm (`config.model.pool='gap'`): SimMIM's loss
reaches only the patch tokens (its head drops the cls token, which gets
gradients only through attention), and its ViT fine-tuning config uses
`USE_MEAN_POOLING: True`. (The digits quickstart uses 'cls' instead: its
4-block ViT's mean token probed no better than random init, see
configs/simmim.py.) The paper's linear probe reads average-pooled
features of an intermediate layer (as BEiT's); jssl's probes read the last
layer's output, so its numbers are not comparable to the paper's.

Deviations: the ViT's position embeddings are jssl's fixed 2-D sin-cos (SimMIM's
ViT-B uses a shared relative position bias, `USE_SHARED_RPB`, no absolute
embedding); the head's outputs are ordered (p, p, C) like `jssl.patches`
(a permutation of the 1x1 conv's (C, p, p) channels: the same linear map);
the learning rate follows jssl's warm-up + cosine, not the ViT-B config's
multi-step decay; no key bias in attention (`jssl.models.vit`). The masked
count is ceil(ratio M) with a 1e-9 tolerance (the official np.ceil would
count 0.6 * 10 = 6.000000000000001 as 7).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import errors, losses, models, precision, sharding
from jssl.methods import base, common
from jssl.methods.base import Method
from jssl.models.vit import XAVIER


def num_masked(num_cells: int, mask_ratio: float) -> int:
  """ceil(ratio * M) masked cells (`MaskGenerator.mask_count`)."""
  return int(math.ceil(num_cells * mask_ratio - 1e-9))


def random_mask(key, images: jax.Array, *, patch_size: int, mask_patch_size: int,
                mask_ratio: float) -> jax.Array:
  """SimMIM's `MaskGenerator` on the ViT token grid, one draw per example.

  Args:
    key: PRNG key of this step.
    images: `[B, H, W, C]`; its batch size and sharding give one key per
      example, its size the grids.
    patch_size: p, the ViT patch. mask_patch_size: the masked square's side in
      pixels (a multiple of p dividing H and W).
    mask_ratio: fraction of the mask cells masked (ceil, `num_masked`).

  Returns:
    `[B, N]` bool, True = masked token, N = (H / p) (W / p) row-major (the
    ViT's token order).
  """
  b, h, w, _ = images.shape
  ch, cw = h // mask_patch_size, w // mask_patch_size
  scale = mask_patch_size // patch_size
  count = num_masked(ch * cw, mask_ratio)
  keys = sharding.example_keys(key, images)
  noise = jax.vmap(lambda k: jax.random.uniform(k, (ch * cw,)))(keys)
  rank = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
  cells = (rank < count).reshape(b, ch, cw)
  tokens = jnp.repeat(jnp.repeat(cells, scale, axis=1), scale, axis=2)
  return tokens.reshape(b, (h // patch_size) * (w // patch_size))


class SimMIMNet(nn.Module):
  """ViT with mask token over all tokens -> linear pixel head per patch."""
  encoder: nn.Module
  out_dim: int        # p * p * C

  @nn.compact
  def __call__(self, x, mask):
    feats = self.encoder(x, train=True, mask=mask)
    # The loss input: float32 (jssl.precision), like MAE's pixel predictor.
    pred = nn.Dense(self.out_dim, dtype=jnp.float32, kernel_init=XAVIER,
                    name="head")(feats["tokens"])
    return feats, pred


def _check(config) -> tuple[float, int]:
  """Config errors before tracing; returns (mask_ratio, mask_patch_size)."""
  if not models.is_vit(config.model):
    raise errors.ConfigError(
        f"SimMIM masks the patch tokens of a ViT encoder; config.model.name="
        f"{config.model.get('name')!r} is not a ViT (use one of "
        f"{', '.join(n for n in models.VIT_VARIANTS if n != 'vit_test')})")
  if config.views.num_views != 1:
    raise errors.ConfigError(f"SimMIM reconstructs one view per image; config.views.num_views="
                             f"{config.views.num_views} (set it to 1)")
  if "loss" not in config or "mask_ratio" not in config.loss \
      or "mask_patch_size" not in config.loss:
    raise errors.ConfigError("SimMIM needs config.loss.mask_ratio (0.6 in the paper) and "
                             "config.loss.mask_patch_size (32 px)")
  p = int(config.model.get("patch_size", 16))
  size = int(config.views.image_size)
  mp = int(config.loss.mask_patch_size)
  ratio = float(config.loss.mask_ratio)
  if mp <= 0 or mp % p:
    raise errors.ConfigError(f"SimMIM: config.loss.mask_patch_size={mp} must be a positive "
                             f"multiple of config.model.patch_size={p}")
  if size % mp:
    raise errors.ConfigError(f"SimMIM: config.loss.mask_patch_size={mp} does not divide "
                             f"config.views.image_size={size}")
  cells = (size // mp) ** 2
  if not 0 < num_masked(cells, ratio) < cells:
    raise errors.ConfigError(f"SimMIM: config.loss.mask_ratio={ratio} masks "
                             f"{num_masked(cells, ratio)} of the {cells} mask patches; it must "
                             f"leave at least one masked and one visible")
  return ratio, mp


def make(config, length=None) -> Method:
  """Builds SimMIM; the evaluated encoder is the ViT without its mask token."""
  del length  # No step-dependent schedule besides the learning rate.
  mask_ratio, mask_patch = _check(config)
  encoder = models.make_encoder(config.model)
  p = encoder.patch_size
  train_encoder = encoder.clone(use_mask_token=True)

  def net(channels: int) -> SimMIMNet:
    return SimMIMNet(encoder=train_encoder, out_dim=p * p * channels)

  def masks(key, x):
    return random_mask(key, x, patch_size=p, mask_patch_size=mask_patch,
                       mask_ratio=mask_ratio)

  def init(key, views):
    x = views[0]
    n = (x.shape[1] // p) * (x.shape[2] // p)
    variables = net(x.shape[-1]).init({"params": key, "dropout": jax.random.fold_in(key, 1)},
                                      x, jnp.zeros((x.shape[0], n), bool))
    return variables["params"], {"batch_stats": {}}   # no batch norm

  def loss(params, method_state, views, batch, key, step):
    del batch, step
    (x,) = views
    k_mask, k_drop = jax.random.split(key)
    mask = masks(k_mask, x)
    feats, pred = net(x.shape[-1]).apply({"params": params}, x, mask,
                                         rngs={"dropout": k_drop})
    target = losses.patchify(x, p)
    pred, target = precision.cast_to_f32((pred, target))
    value = losses.simmim(pred, target, mask, channels=x.shape[-1])
    h = feats["pre_logits"].astype(jnp.float32)
    metrics = {
        "repr_std": common.feature_std(h),
        # The masked input's features, as MAE (no second, unmasked pass).
        base.PROBE_FEATURES: h,
        "mask_fraction": jnp.mean(mask.astype(jnp.float32)),
    }
    return value, (method_state, metrics)

  def encoder_variables(params, method_state):
    """The trained ViT without the mask token (the exported encoder has none)."""
    del method_state
    enc = {k: v for k, v in params["encoder"].items() if k != "mask_token"}
    return {"params": enc}

  return Method(init=init, loss=loss, update_state=base.keep_state,
                encoder=encoder, encoder_variables=encoder_variables)
