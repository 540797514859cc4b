"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision", ICML; openai/CLIP `clip/model.py`, open_clip
`training/train.py`).

An image tower and a text tower (`jssl.methods.dual`) trained with the
symmetric InfoNCE loss over the global batch (Fig. 3; `jssl.losses.clip`):
the B x B cosine similarities scaled by a learnable multiplier exp(t), cross-
entropy over texts for each image and over images for each text, averaged.
t is learned in log space, init log(1/0.07) (`config.loss.logit_scale_init`),
and the multiplier is clamped at 100 (`config.loss.max_logit_scale`; Sec.
2.5: "clipped to prevent scaling the logits by more than 100").

The clamp: as openai's and open_clip's training code, the parameter is
clamped to <= log 100 after each optimiser step (`Method.project`,
`dual.clamp_logit_scale`), so the loss sees t itself and its gradient is the
plain one; a later gradient pointing down lowers t from the cap at once.

Options:
  config.loss.similarity='filip'  FILIP's token-wise late interaction (Yao et
      al. 2021, Sec. 3.1.1; `jssl.losses.filip`): ViT image towers only
      (patch tokens, projected by the image projection), padding tokens
      excluded. Memory O(B^2 n1 n2).
  config.data.captions_per_image=K > 1: K positives per image (`dual` module
      docstring: multi-positive InfoNCE image -> text, the usual text -> image).

Config: `config.model` (image tower), `config.text` (tokenizer, model),
`config.embed_dim`, `config.loss` = {name 'clip', impl 'global',
similarity, logit_scale_init, max_logit_scale}, `config.views.num_views` 1.
Parameters: see `jssl.methods.dual` (`params['logit_scale']`, scalar).
"""
from __future__ import annotations

from jssl import errors
from jssl.methods import dual
from jssl.methods.base import Method


def make(config, length=None, *, mesh=None) -> Method:
  del length  # no step-dependent schedule besides the LR
  name = config.loss.get("name", "clip")
  if name != "clip":
    raise errors.ConfigError(f"config.loss.name={name!r}: the clip method trains with "
                             "the 'clip' loss (config.method='siglip' for the sigmoid one)")
  return dual.make_trainable(config, mesh)
