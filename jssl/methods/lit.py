"""LiT, locked-image text tuning (Zhai et al. 2022, "LiT: Zero-Shot Transfer
with Locked-image text Tuning", CVPR; big_vision
`configs/proj/image_text/lit_coco.py`, `siglip_lit_coco.py`).

A pre-trained image tower is locked and only a text tower is trained to match
it (the paper's "Lu" setting, Sec. 3-4): here the image tower is a jssl
export (`jssl.export.export_encoder`, e.g. the SimCLR quickstart's
`<workdir>/export`) named by `config.lit.image_tower` (the export directory, or
a training workdir whose `export/` exists). The loss is `config.loss.name`
'clip' (the paper's contrastive loss) or 'siglip' (Zhai et al. 2023 train LiT
with it too).

Locked means: the tower's variables live in `method_state['image_tower']`
({'params', 'batch_stats'} as exported), not in `params`, so the optimiser
neither updates them nor keeps state for them (exactly zero update, tested
bit-identical to the export), and the tower runs in inference mode (batch-norm
running statistics, no batch statistics), as the paper's locked tower.

Image head: none by default, as big_vision's LiT configs (no image head `img_head=False`: `out_dim = (None, dim)`), whose README
reports the head-free LiT-B16B_2 better than LiT-B16B with a 768-d image head
(README_lit.md, 73.9 vs 72.1 ImageNet zero-shot, with 60k vs 30k steps). The
text projection then maps to the locked tower's width and `config.embed_dim`
is not used; `config.lit.image_head=True` adds a trainable bias-free image
projection to `config.embed_dim`.

The image tower's architecture and preprocessing come from the export
(`export.json`); `config.model` is not read. Its input size must equal
`config.views.image_size` and `config.eval.image_size`, and its channels the
views' (one-line `ConfigError` otherwise).

Parameters: params = {'text', 'text_proj', ['image_proj'], 'logit_scale' |
't_prime', 'bias'}; method_state = {'image_tower': {'params', 'batch_stats'}}.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl import errors
from jssl import storage
from jssl.methods import base, common, dual
from jssl.methods.base import Method


def export_dir(path) -> str:
  """The export directory `path` names: itself, or its `export/`."""
  if not path:
    raise errors.ConfigError("config.lit.image_tower is empty: LiT needs the path of a jssl "
                             "export (or a training workdir with export/) of an image tower")
  p = storage.path(str(path), what="LiT image tower", error=errors.ConfigError)
  if (p / "export.json").exists():
    return str(p)
  if (p / "export" / "export.json").exists():
    return str(p / "export")
  raise errors.ExportNotFoundError(
      f"config.lit.image_tower={path!r} is not a jssl export: neither {path}/export.json nor "
      f"{path}/export/export.json exists (train an image method first; its export is "
      "written to <workdir>/export)")


def load_tower(config):
  """(module, host variables, preprocess) of the locked tower, checked
  against the config's view and eval sizes."""
  from jssl import export  # pylint: disable=import-outside-toplevel
  path = export_dir(config.lit.get("image_tower", ""))
  enc = export.load_encoder(path)
  size = int(enc.preprocess_config["size"])
  for field, want in (("views.image_size", config.views.image_size),
                      ("eval.image_size", config.eval.get("image_size", size))):
    if int(want) != size:
      raise errors.ConfigError(
          f"config.{field}={want}: the locked image tower at {path} was exported for "
          f"{size} px inputs; set it to {size}")
  return enc.module, jax.device_get(enc.variables), dict(enc.preprocess_config)


def make(config, length=None, *, mesh=None) -> Method:
  del length
  common.require_fields(config, "lit", ("text", "embed_dim", "loss", "lit"))
  image_module, tower_vars, preprocess = load_tower(config)
  channels = int(preprocess.get("channels", 3))
  head = bool(config.lit.get("image_head", False))
  towers = dual.build_towers(config, image=image_module, image_head=head)
  if config.loss.get("similarity", "global") != "global":
    raise errors.ConfigError("config.loss.similarity='filip' is not a LiT option")
  score = dual.loss_fn(config, mesh)
  text_len = dual.context_length(config)

  def tower(method_state):
    return method_state["image_tower"]

  def init(key, views):
    if views[0].shape[-1] != channels:
      raise errors.ConfigError(
          f"the views have {views[0].shape[-1]} channels but the locked image tower was "
          f"exported for {channels}")
    params, _ = dual.init_towers(towers, key, views[0], text_len, init_image=False)
    params.update(dual.scalar_params(config))
    locked = jax.tree.map(jnp.asarray, tower_vars)
    return params, {"image_tower": locked}

  def loss(params, method_state, views, batch, key, step):
    del key, step
    locked = jax.lax.stop_gradient(tower(method_state))
    out = dual.forward(towers, params, locked, views[0], batch["text"], train=False)
    value, metrics = score(params, out)
    metrics.update(dual.pair_metrics(out))
    metrics[base.PROBE_FEATURES] = out["img_feats"]["pre_logits"]
    return value, (method_state, metrics)

  def encoder_variables(params, method_state):
    del params
    return tower(method_state)

  return Method(init=init, loss=loss, update_state=base.keep_state,
                encoder=image_module, encoder_variables=encoder_variables,
                dual=dual.dual_encoder(towers, encoder_variables),
                project=dual.clamp_for(config))
