"""Shared pieces of the image-text dual encoders (`clip`, `siglip`, `lit`).

Two towers map images and texts into one embedding space of width
`config.embed_dim` (Radford et al. 2021, Fig. 3; big_vision
`models/proj/image_text/two_towers.py`):

  image -> image tower (`jssl.models.make_encoder(config.model)`, kept at
           `params['encoder']` so `base.trunk_variables`, the export and
           `load_encoder` work on it unchanged) -> 'pre_logits' -> image_proj
  text  -> text tower (`jssl.models.make_text_encoder(config.text.model)`)
           -> pooled feature -> text_proj

Projections: linear maps without bias, as CLIP (openai/CLIP `model.py`:
`text_projection`, the visual `proj`, both `x @ W`; init normal with std
width^-0.5). big_vision instead ends each tower in a Dense *with* bias
(`num_classes=out_dim`, the towers' 'head'); the function class differs by a
constant shift that the L2 normalisation does not cancel, a minor deviation.
The embeddings are L2-normalised inside the losses.

Parameter tree (clip / siglip):
  params = {'encoder': image tower, 'text': text tower,
            'image_proj': {'kernel': [W_img, E]}, 'text_proj': {'kernel': [W_txt, E]},
            + the method's scalars: 'logit_scale' (clip) | 't_prime', 'bias' (siglip)}
  method_state = {'batch_stats': {'encoder': ...}} (ResNet) | {'batch_stats': {}} (ViT)

Multiple captions per image (`batch['text']` `[B, K, L]`, K =
`config.data.captions_per_image`): the texts are flattened image-major to
`[B*K, L]` (text t = i*K + k is a caption of image i), and each image has K
positives:
  CLIP: image -> text softmax over all B*K texts, the K positives' CE terms
        averaged (multi-positive InfoNCE, SupCon's L_out); text -> image the
        usual softmax over the B images (`jssl.losses.filip.symmetric_ce`).
  SigLIP: z = +1 for the K captions of the image, -1 for every other text;
        the sum over all B x B*K pairs divided by B (the images), i.e. the
        sum over k of the plain loss of (images, k-th captions).
K = 1 is the plain loss in both (tested).
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import errors, losses, models, precision
from jssl.losses.filip import filip as filip_loss, symmetric_ce
from jssl.methods import base, common
from jssl.methods.base import DualEncoder

BYTES_VOCAB = 259   # jssl.text.tokenizers 'bytes': 0 pad, 1 BOS, 2 EOS, byte b -> b + 3


def vocab_size(config) -> int:
  """`config.text.model.vocab_size`, or (0) the tokenizer's vocabulary size."""
  vocab = int(config.text.model.get("vocab_size", 0) or 0)
  if vocab > 0:
    return vocab
  tok = config.text.tokenizer
  if tok.get("name", "bytes") == "bytes":
    return BYTES_VOCAB
  # Reads the tokenizer's vocabulary file (SentencePiece, CLIP BPE).
  from jssl.text import tokenizers  # pylint: disable=import-outside-toplevel
  return int(tokenizers.make(tok).vocab_size)


def context_length(config) -> int:
  return int(config.text.tokenizer.context_length)


def captions_per_image(config) -> int:
  return int(config.data.get("captions_per_image", 1) or 1)


def proj_dense(embed_dim: int, width: int, name: str) -> nn.Dense:
  """A bias-free projection, init normal(width^-0.5) (openai CLIP), computed
  in float32 whatever the towers' dtype: its output is the loss input, scaled
  by up to 100 before the softmax (`jssl.precision`, point 3)."""
  return nn.Dense(embed_dim, use_bias=False, dtype=precision.LOSS_DTYPE,
                  param_dtype=precision.PARAM_DTYPE,
                  kernel_init=nn.initializers.normal(width ** -0.5), name=name)


class Towers(NamedTuple):
  """The modules of a dual encoder. `image_proj` is None for LiT without an
  image head (the text is projected to the locked tower's width)."""
  image: nn.Module
  text: nn.Module
  image_proj: Optional[nn.Module]
  text_proj: nn.Module
  embed_dim: int


def build_towers(config, *, image: Optional[nn.Module] = None,
                 image_head: bool = True) -> Towers:
  """Towers from `config.model` (or the given image module), `config.text.model`,
  `config.embed_dim`."""
  for field in ("text", "embed_dim"):
    if field not in config:
      raise errors.ConfigError(f"{config.method} needs config.{field} "
                               f"(see configs/{config.method}.py)")
  image = image if image is not None else models.make_encoder(config.model)
  try:
    text = models.make_text_encoder(config.text.model, vocab_size=vocab_size(config))
  except ValueError as e:
    raise errors.ConfigError(f"config.text.model: {e}") from e
  img_dim = image.feature_dim
  embed = int(config.embed_dim) if image_head else img_dim
  if embed < 1:
    raise errors.ConfigError(f"config.embed_dim={config.embed_dim}: must be >= 1")
  return Towers(image=image, text=text,
                image_proj=proj_dense(embed, img_dim, "image_proj") if image_head else None,
                text_proj=proj_dense(embed, text.feature_dim, "text_proj"),
                embed_dim=embed)


def init_towers(towers: Towers, key, image, text_len: int, *, init_image: bool = True):
  """(params, method_state) of the towers and projections (no scalars).

  With `init_image=False` (LiT) the image tower is not initialised and its
  width comes from the module.
  """
  k_img, k_txt, k_ip, k_tp = jax.random.split(key, 4)
  params, state = {}, {"batch_stats": {}}
  if init_image:
    variables = towers.image.init(k_img, image, train=True)
    params["encoder"] = variables["params"]
    if "batch_stats" in variables:
      state["batch_stats"] = {"encoder": variables["batch_stats"]}
  tokens = jnp.ones((1, text_len), jnp.int32)
  params["text"] = towers.text.init(k_txt, tokens)["params"]
  if towers.image_proj is not None:
    params["image_proj"] = towers.image_proj.init(
        k_ip, jnp.zeros((1, towers.image.feature_dim)))["params"]
  params["text_proj"] = towers.text_proj.init(
      k_tp, jnp.zeros((1, towers.text.feature_dim)))["params"]
  return params, state


def image_features(towers: Towers, variables: dict, images, *, train: bool):
  """(feature dict, new batch_stats or None) of the image tower."""
  if train and "batch_stats" in variables:
    feats, new = towers.image.apply(variables, images, train=True, mutable=["batch_stats"])
    return feats, new["batch_stats"]
  return towers.image.apply(variables, images, train=train), None


def flat_text(text) -> tuple[jax.Array, int]:
  """`batch['text']` `[B, K, L]` (or `[B, L]`) -> (`[B*K, L]` image-major, K)."""
  if text.ndim == 2:
    return text, 1
  if text.ndim != 3:
    raise ValueError(f"batch['text'] must be token ids [B, K, L], got shape {text.shape}")
  b, k, l = text.shape
  return text.reshape(b * k, l), k


def project(dense: Optional[nn.Module], params: dict, name: str, x):
  return x if dense is None else dense.apply({"params": params[name]}, x)


def forward(towers: Towers, params: dict, image_vars: dict, images, text, *,
            train: bool = True, tokens: bool = False) -> dict:
  """Both towers on a batch.

  Returns a dict: 'img' `[B, E]`, 'txt' `[B*K, E]` (unnormalised
  projections), 'k' (K), 'img_feats' (the image tower's dict), 'batch_stats'
  (new, or None); with `tokens=True` also 'img_tokens' `[B, N, E]`,
  'txt_tokens' `[B*K, L, E]` and 'txt_mask' `[B*K, L]` (FILIP).
  """
  feats, stats = image_features(towers, image_vars, images, train=train)
  flat, k = flat_text(text)
  tfeats = towers.text.apply({"params": params["text"]}, flat)
  out = {"img": project(towers.image_proj, params, "image_proj", feats["pre_logits"]),
         "txt": project(towers.text_proj, params, "text_proj", tfeats["pre_logits"]),
         "k": k, "img_feats": feats, "batch_stats": stats}
  if tokens:
    if "tokens" not in feats:
      raise errors.ConfigError(
          "config.loss.similarity='filip' needs image patch tokens; the image tower "
          f"{type(towers.image).__name__} has none (use a ViT: config.model.name='vit_*')")
    out["img_tokens"] = project(towers.image_proj, params, "image_proj",
                                feats["tokens"].astype(jnp.float32))
    out["txt_tokens"] = project(towers.text_proj, params, "text_proj",
                                tfeats["tokens"].astype(jnp.float32))
    out["txt_mask"] = tfeats["mask"]
  # Loss inputs in float32 (jssl.precision).
  for key in ("img", "txt", "img_tokens", "txt_tokens"):
    if key in out:
      out[key] = precision.cast_to_f32(out[key])
  return out


# ---------------------------------------------------------------------------
# Losses on the embeddings.

def clip_multi(img, txt, logit_scale, captions_per_image: int):
  """CLIP with K captions per image (module docstring); K = 1 calls
  `jssl.losses.clip` itself."""
  if captions_per_image == 1:
    return losses.clip(img, txt, logit_scale)
  x, y = common.unit(img), common.unit(txt)
  logits = jnp.exp(jnp.reshape(logit_scale, ()).astype(jnp.float32)) * x @ y.T
  return symmetric_ce(logits, logits, captions_per_image)


def max_log_scale(loss_cfg) -> float:
  cap = float(loss_cfg.get("max_logit_scale", 100.0) or 0.0)
  return math.log(cap) if cap > 0 else math.inf


def clamp_logit_scale(params: dict, cap_log: float) -> dict:
  """params with `logit_scale` clamped to <= log(cap): CLIP's
  `Method.project`, applied after each optimiser update (openai/CLIP's
  training code clamps the multiplier at 100 after each step; open_clip
  `training/train.py`: `logit_scale.clamp_(0, math.log(100))`)."""
  if "logit_scale" not in params or math.isinf(cap_log):
    return params
  return dict(params, logit_scale=jnp.minimum(params["logit_scale"], cap_log))


def clamp_for(config):
  """`Method.project` of a run trained with the CLIP loss (its logit-scale
  clamp); None for SigLIP, whose temperature is not clamped (Zhai et al.
  2023, Algorithm 1)."""
  if config.loss.get("name") != "clip":
    return None
  return functools.partial(clamp_logit_scale, cap_log=max_log_scale(config.loss))


def clip_loss_fn(config, mesh=None):
  """`(params, out) -> (loss, metrics)` of CLIP: `config.loss.similarity`
  'global' (cosine of the pooled embeddings) or 'filip' (token-wise), and
  `config.loss.impl` 'global' (`jssl.losses.clip` on the global arrays) or
  'ring' (`jssl.losses.ring.clip_ring` under `jax.shard_map` over the data
  axis: the texts travel around the devices, no device holds the global B x B
  logits or the global texts; one caption per image). Without a mesh, 'ring'
  computes 'global'."""
  cfg = config.loss
  similarity = cfg.get("similarity", "global")
  if similarity not in ("global", "filip"):
    raise errors.ConfigError(f"config.loss.similarity={similarity!r}: must be 'global' "
                             "or 'filip'")
  impl = cfg.get("impl", "global")
  if impl not in ("global", "ring"):
    raise errors.ConfigError(f"config.loss.impl={impl!r}: CLIP's loss is 'global' or "
                             "'ring' ('chunked' is a SigLIP option)")
  if impl == "ring" and similarity == "filip":
    raise errors.ConfigError("config.loss.impl='ring' with similarity='filip': FILIP's "
                             "token-wise loss runs on the global batch (impl='global')")
  k = int(config.data.get("captions_per_image", 1) or 1)
  if impl == "ring" and k > 1:
    raise errors.ConfigError(
        f"config.loss.impl='ring' with config.data.captions_per_image={k}: CLIP's ring loss "
        "takes one caption per image (impl='global' for K > 1)")
  chunk = int(cfg.get("chunk_size", 1024) or 1024)   # image rows per ring block
  ring_value = None
  if impl == "ring" and mesh is not None:
    from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel
    from jssl.losses import ring  # pylint: disable=import-outside-toplevel
    from jssl.sharding import DATA_AXIS  # pylint: disable=import-outside-toplevel
    ring_value = jax.shard_map(
        lambda img, txt, ls: ring.clip_ring(img, txt, ls, axis_name=DATA_AXIS,
                                            chunk_size=chunk), mesh=mesh,
        in_specs=(P(DATA_AXIS), P(DATA_AXIS), P()), out_specs=P())

  def loss(params, out):
    ls = params["logit_scale"]
    if similarity == "filip":
      value = filip_loss(out["img_tokens"], out["txt_tokens"], out["txt_mask"], ls,
                         captions_per_image=out["k"])
    elif ring_value is not None:
      value = ring_value(out["img"], out["txt"], ls)
    else:
      value = clip_multi(out["img"], out["txt"], ls, out["k"])
    return value, {"logit_scale": jnp.exp(ls)}

  return loss


def siglip_loss_fn(config, mesh):
  """`(params, out) -> (loss, metrics)` of SigLIP with `config.loss.impl`:
  'global' (`losses.siglip` on the global arrays; XLA inserts the
  collectives), 'chunked' (`losses.siglip_chunked` under `jax.shard_map` over
  the mesh's data axis: each device holds chunk_size x B logits, never the
  B x B matrix), 'ring' (`jssl.losses.ring.siglip_ring` under shard_map: texts
  passed around the devices). Without a mesh every impl computes 'global'.
  K captions: the sum over k of the loss of (images, k-th captions), which
  is the multi-positive loss of the module docstring."""
  cfg = config.loss
  impl = cfg.get("impl", "global")
  if impl not in ("global", "chunked", "ring"):
    raise errors.ConfigError(f"config.loss.impl={impl!r}: must be 'global', 'chunked' "
                             "or 'ring'")
  if cfg.get("similarity", "global") != "global":
    raise errors.ConfigError("config.loss.similarity='filip' is a CLIP option "
                             "(config.method='clip')")
  chunk = int(cfg.get("chunk_size", 1024) or 1024)
  if mesh is None:
    impl = "global"

  def per_slot(fn, img, txt, t, b, **kw):
    return sum(fn(img, txt[:, i], t, b, **kw) for i in range(txt.shape[1]))

  if impl == "global":
    def value(img, txt, t, b):
      return per_slot(losses.siglip, img, txt, t, b)
  else:
    from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel
    from jssl.sharding import DATA_AXIS  # pylint: disable=import-outside-toplevel
    if impl == "chunked":
      def local(img, txt, t, b):
        return per_slot(losses.siglip_chunked, img, txt, t, b, chunk_size=chunk,
                        axis_name=DATA_AXIS)
    else:
      # Lands with the ring losses; imported when a ring run is built.
      from jssl.losses import ring  # pylint: disable=import-outside-toplevel
      def local(img, txt, t, b):
        return per_slot(ring.siglip_ring, img, txt, t, b, axis_name=DATA_AXIS,
                        chunk_size=chunk)
    value = jax.shard_map(local, mesh=mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(), P()),
                          out_specs=P())

  def loss(params, out):
    t, b = params["t_prime"], params["bias"]
    txt = out["txt"].reshape(out["img"].shape[0], out["k"], -1)   # [B, K, E]
    return value(out["img"], txt, t, b), {"temperature": jnp.exp(t), "bias": b}

  return loss


def scalar_params(config) -> dict:
  """The learnable scalars of `config.loss.name` ('clip' | 'siglip')."""
  cfg = config.loss
  name = cfg.get("name", config.method)
  if name == "clip":
    return {"logit_scale": jnp.asarray(cfg.get("logit_scale_init", math.log(1 / 0.07)),
                                       jnp.float32)}
  if name == "siglip":
    return {"t_prime": jnp.asarray(cfg.get("t_prime_init", math.log(10.0)), jnp.float32),
            "bias": jnp.asarray(cfg.get("bias_init", -10.0), jnp.float32)}
  raise errors.ConfigError(f"config.loss.name={name!r}: must be 'clip' or 'siglip'")


def loss_fn(config, mesh):
  name = config.loss.get("name", config.method)
  if name == "clip":
    return clip_loss_fn(config, mesh)
  if name == "siglip":
    return siglip_loss_fn(config, mesh)
  raise errors.ConfigError(f"config.loss.name={name!r}: must be 'clip' or 'siglip'")


SCALARS = ("logit_scale", "t_prime", "bias")


def _mean_unit_tokens(tokens, mask=None):
  """unit(mean of the unit tokens) `[B, E]` (over `mask`ed tokens when given)."""
  u = common.unit(tokens)
  if mask is None:
    return common.unit(jnp.mean(u, axis=1))
  w = mask.astype(jnp.float32)[..., None]
  return common.unit(jnp.sum(u * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0))


def dual_encoder(towers: Towers, image_variables, *, filip: bool = False) -> DualEncoder:
  """`DualEncoder` over `variables(params, method_state)` =
  {'image': image tower variables ({'params', 'batch_stats'}), 'text':
  {'params'}, 'image_proj': {'kernel'} (absent for LiT without an image
  head), 'text_proj': {'kernel'}, 'scalars': {'logit_scale'} |
  {'t_prime', 'bias'}}.

  `filip=True`: FILIP trains token embeddings only, so the one-vector
  embeddings are the normalised mean of the unit projected tokens (patch
  tokens; non-pad text tokens), whose dot product is the mean token-pair
  cosine. FILIP's own zero-shot and retrieval score with the token-wise
  similarity (Sec. 3.1.1), which a `[B, D]` interface cannot express: a
  deviation.
  """

  def variables(params, method_state):
    out = {"image": image_variables(params, method_state),
           "text": {"params": params["text"]},
           "text_proj": params["text_proj"],
           "scalars": {k: params[k] for k in SCALARS if k in params}}
    if "image_proj" in params:
      out["image_proj"] = params["image_proj"]
    return out

  def embed_images(v, images):
    feats = towers.image.apply(v["image"], images, train=False)
    x = feats["tokens"].astype(jnp.float32) if filip else feats["pre_logits"]
    if towers.image_proj is not None:
      x = towers.image_proj.apply({"params": v["image_proj"]}, x)
    return _mean_unit_tokens(x) if filip else common.unit(x)

  def embed_texts(v, tokens):
    feats = towers.text.apply(v["text"], tokens)
    if filip:
      x = towers.text_proj.apply({"params": v["text_proj"]},
                                 feats["tokens"].astype(jnp.float32))
      return _mean_unit_tokens(x, feats["mask"])
    return common.unit(towers.text_proj.apply({"params": v["text_proj"]},
                                              feats["pre_logits"]))

  return DualEncoder(variables=variables, embed_images=embed_images, embed_texts=embed_texts)


def pair_metrics(out: dict) -> dict:
  """Mean cosine of each image with its first caption (rises as it trains)."""
  k = out["k"]
  return {"pos_cosine": common.mean_cosine(out["img"], out["txt"][::k])}


def make_trainable(config, mesh=None) -> base.Method:
  """The `Method` of CLIP / SigLIP: both towers trained (`config.loss.name`
  picks the loss; `config.loss.similarity='filip'` CLIP's token-wise one)."""
  common.require_fields(config, config.method, ("text", "embed_dim", "loss"))
  if config.views.num_views < 1:
    raise errors.ConfigError(f"config.views.num_views={config.views.num_views}: "
                             f"{config.method} uses the first view of each image")
  filip = config.loss.get("similarity", "global") == "filip"
  towers = build_towers(config)
  if filip and not models.is_vit(config.model):
    raise errors.ConfigError(
        "config.loss.similarity='filip' needs image patch tokens, which only a ViT image "
        f"tower gives; config.model.name={config.model.name!r}")
  score = loss_fn(config, mesh)
  text_len = context_length(config)

  def init(key, views):
    params, state = init_towers(towers, key, views[0], text_len)
    params.update(scalar_params(config))
    return params, state

  def loss(params, method_state, views, batch, key, step):
    del key, step
    out = forward(towers, params, base.trunk_variables(params, method_state), views[0],
                  batch["text"], train=True, tokens=filip)
    value, metrics = score(params, out)
    new_state = method_state
    if out["batch_stats"] is not None:
      new_state = dict(method_state, batch_stats={"encoder": out["batch_stats"]})
    metrics.update(pair_metrics(out))
    metrics[base.PROBE_FEATURES] = out["img_feats"]["pre_logits"]
    return value, (new_state, metrics)

  return base.Method(init=init, loss=loss, update_state=base.keep_state,
                     encoder=towers.image, encoder_variables=base.trunk_variables,
                     dual=dual_encoder(towers, base.trunk_variables, filip=filip),
                     project=clamp_for(config))
