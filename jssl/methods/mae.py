"""MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners",
CVPR; facebookresearch/mae `models_mae.py`, `main_pretrain.py`).

One view x. Its N patches are masked at random per example (ratio r = 0.75):
the ViT encoder sees only the N_keep = round(N (1 - r)) visible patches
(position embeddings added before the selection), a lightweight decoder gets
the encoded tokens plus a shared mask token at every removed patch, and
predicts every patch's pixels. The loss (Sec. 3, "Reconstruction target") is
the mean squared error on the removed patches only, with per-patch normalised
pixel targets (`norm_pix_loss`, Table 1d):

  L = sum_{b,n} m_bn mean_P (pred_bn - t_bn)^2 / sum_{b,n} m_bn,
  t_bn = (x_bn - mean(x_bn)) / sqrt(var(x_bn) + 1e-6),    m_bn = 1: removed,

computed by `jssl.losses.mae` on `jssl.losses.patchify(x)` (the normalised view,
as MAE reconstructs its normalised input tensor).

Masking (`models_mae.py::random_masking`): uniform noise per patch, argsort;
the N_keep patches with the smallest noise stay visible. Each example draws its
noise from its own key (`jssl.sharding.example_keys` + `vmap`, as the device
views do), so the masks do not depend on how the batch is sharded (tested 1 vs 8
devices). MAE uses int(N (1 - r)); round() is the same for every paper setting
(N = 196, 64, 16 at r = 0.75) and avoids 0.9999 -> 0 surprises.

Evaluation / export: the encoder alone (the decoder is discarded, Sec. 3), on
the full, unmasked image. Its 'pre_logits' is the cls token after the final
LayerNorm (`config.model.pool='cls'`), what the paper's linear probe uses
(FINETUNE.md `--cls_token`; the probe's BatchNorm without affine is matched by
jssl's standardised linear probe). No batch norm: 'batch_stats' is empty.

Deviations: none in the objective. The encoder's cls token is trained through
the decoder (it attends to it) as in MAE; no drop-path (MAE pre-training has
none). The ViT's attention has no key bias (`jssl.models.vit.SelfAttention`:
softmax cancels it). The quickstart preset uses many small steps and a larger
lr than the paper's 1.5e-4 x B/256 (tuned; see configs/mae.py).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import errors, losses, models, precision, sharding
from jssl.methods import base, common
from jssl.methods.base import Method
from jssl.models.vit import MAEDecoder

_DECODER_KEYS = ("width", "depth", "num_heads", "mlp_ratio")


def num_keep(num_patches: int, mask_ratio: float) -> int:
  """N_keep = round(N (1 - r)): visible patches per example."""
  return int(round(num_patches * (1.0 - mask_ratio)))


def random_masking(key, num_examples_like: jax.Array, num_patches: int,
                   mask_ratio: float) -> tuple[jax.Array, jax.Array]:
  """Per-example random masking by argsort of uniform noise.

  Args:
    key: PRNG key of this step.
    num_examples_like: any `[B, ...]` array; its batch size and sharding give
      one key per example, sharded like it.
    num_patches: N.
    mask_ratio: r, the fraction of patches removed.

  Returns:
    keep_indices `[B, N_keep]` int32 (visible patches, in noise order) and
    mask `[B, N]` float32 (1 = removed; the loss is computed there).
  """
  n_keep = num_keep(num_patches, mask_ratio)
  keys = sharding.example_keys(key, num_examples_like)
  noise = jax.vmap(lambda k: jax.random.uniform(k, (num_patches,)))(keys)
  ids_shuffle = jnp.argsort(noise, axis=1)      # ascending: small noise is kept
  ids_restore = jnp.argsort(ids_shuffle, axis=1)  # rank of each patch
  keep = ids_shuffle[:, :n_keep].astype(jnp.int32)
  mask = (ids_restore >= n_keep).astype(jnp.float32)
  return keep, mask


class MAENet(nn.Module):
  """ViT encoder on the visible patches -> MAE decoder over all patches."""
  encoder: nn.Module
  decoder: nn.Module

  def __call__(self, x, keep_indices):
    p = self.encoder.patch_size
    feats = self.encoder(x, train=True, keep_indices=keep_indices)
    encoded = jnp.concatenate([feats["cls"][:, None], feats["tokens"]], axis=1)
    grid = (x.shape[1] // p, x.shape[2] // p)
    return feats, self.decoder(encoded, keep_indices, grid)


def _check(config) -> tuple[float, dict]:
  if not models.is_vit(config.model):
    raise errors.ConfigError(
        f"MAE masks the patch tokens of a ViT encoder; config.model.name="
        f"{config.model.get('name')!r} is not a ViT (use one of "
        f"{', '.join(n for n in models.VIT_VARIANTS if n != 'vit_test')}, "
        f"with config.model.patch_size)")
  if config.views.num_views != 1:
    raise errors.ConfigError(f"MAE reconstructs one view per image; config.views.num_views="
                             f"{config.views.num_views} (set it to 1)")
  p = int(config.model.get("patch_size", 16))
  size = int(config.views.image_size)
  if size % p:
    raise errors.ConfigError(f"MAE: config.views.image_size={size} is not divisible by "
                             f"config.model.patch_size={p}")
  if "loss" not in config or "mask_ratio" not in config.loss:
    raise errors.ConfigError("MAE needs config.loss.mask_ratio (0.75 in the paper) and "
                             "config.loss.norm_pix_loss")
  ratio = float(config.loss.mask_ratio)
  n = (size // p) ** 2
  if not 0.0 <= ratio < 1.0 or num_keep(n, ratio) < 1:
    raise errors.ConfigError(f"MAE: config.loss.mask_ratio={ratio} must leave at least one of "
                             f"the {n} patches visible")
  if "decoder" not in config:
    raise errors.ConfigError("MAE needs config.decoder with width, depth, num_heads "
                             "(paper: 512, 8, 16)")
  dec = config.decoder
  dec = dict(dec.to_dict() if hasattr(dec, "to_dict") else dec)
  unknown = sorted(set(dec) - set(_DECODER_KEYS))
  if unknown:
    raise errors.ConfigError(
        f"unknown config.decoder keys {unknown}; allowed: {list(_DECODER_KEYS)}")
  if dec["width"] % dec["num_heads"]:
    raise errors.ConfigError(f"MAE decoder width {dec['width']} not divisible by num_heads "
                             f"{dec['num_heads']}")
  return ratio, dec


def make_net(config, channels: int) -> MAENet:
  """The encoder + decoder network of `config` for images with `channels`
  channels (the decoder predicts p*p*C pixels per patch); params
  `{'encoder', 'decoder'}`. Exposed for tests and reconstruction plots."""
  _, dec = _check(config)
  encoder = models.make_encoder(config.model)
  p = encoder.patch_size
  decoder = MAEDecoder(width=int(dec["width"]), depth=int(dec["depth"]),
                       num_heads=int(dec["num_heads"]),
                       mlp_ratio=float(dec.get("mlp_ratio", 4.0)),
                       out_dim=p * p * channels, dtype=encoder.dtype,
                       attention_impl=encoder.attention_impl, remat=encoder.remat)
  return MAENet(encoder=encoder, decoder=decoder)


def make(config, length=None) -> Method:
  """Builds MAE; the evaluated encoder is the (only) ViT encoder."""
  del length  # No step-dependent schedule besides the learning rate.
  mask_ratio, _ = _check(config)
  norm_pix = bool(config.loss.get("norm_pix_loss", True))
  encoder = models.make_encoder(config.model)
  p = encoder.patch_size

  def net(channels: int) -> MAENet:
    return make_net(config, channels)

  def _num_patches(x):
    return (x.shape[1] // p) * (x.shape[2] // p)

  def init(key, views):
    x = views[0]
    n = _num_patches(x)
    keep = jnp.broadcast_to(jnp.arange(num_keep(n, mask_ratio), dtype=jnp.int32),
                            (x.shape[0], num_keep(n, mask_ratio)))
    variables = net(x.shape[-1]).init(key, x, keep)
    # No batch norm in a ViT or its decoder: nothing but params.
    return variables["params"], {"batch_stats": {}}

  def loss(params, method_state, views, batch, key, step):
    del batch, step
    (x,) = views
    keep, mask = random_masking(key, x, _num_patches(x), mask_ratio)
    feats, pred = net(x.shape[-1]).apply({"params": params}, x, keep)
    target = losses.patchify(x, p)
    pred, target = precision.cast_to_f32((pred, target))   # loss inputs in float32
    value = losses.mae(pred, target, mask, norm_pix_loss=norm_pix)
    h = feats["pre_logits"].astype(jnp.float32)
    metrics = {
        # Collapse alarm: per-dimension std of L2-normalised representations
        # (of the masked input here); ~1/sqrt(D) when spread, -> 0 if collapsed.
        "repr_std": common.feature_std(h),
        # The probe sees the masked input's features: no second, unmasked
        # encoder pass (solo-learn runs one; it costs ~4x the masked pass).
        base.PROBE_FEATURES: h,
    }
    return value, (method_state, metrics)

  return Method(init=init, loss=loss, update_state=base.keep_state,
                encoder=encoder, encoder_variables=base.trunk_variables)
