r"""CLIP (Radford et al. 2021) run book: an image and a text tower trained with
the symmetric InfoNCE loss (`jssl.methods.clip`).

Presets (`--config=clip:<preset>`):

quickstart  Offline: scikit-learn's digits at 16 px with captions written from
            varied templates (data.source 'digits_captions'), byte-level
            tokenizer (context 48 bytes: the longest caption fits), half-width ResNet-10 image tower, tiny
            text tower (width 32, depth 2), 64-d embeddings, one lightly
            augmented view per image, AdamW. Meant for <= 5 minutes on 2 CPU
            cores.
              python -m jssl.main --config=clip:quickstart --workdir=/tmp/jssl_clip
            FILIP's token-wise similarity (config.loss.similarity='filip',
            with config.loss.impl='global') needs a ViT image tower (config.model = {name: 'vit_test',
            patch_size: 4} in a notebook, or a config file of your own).

vit_b32     CLIP ViT-B/32 as published (Radford et al. 2021, App. F, the
            common and the CLIP-ViT hyperparameter tables): batch 32,768, 32 epochs, AdamW (beta2 0.98, eps 1e-6), weight decay
            0.2, lr 5e-4, 2000 warm-up iterations, cosine; embed dim 512; text
            transformer width 512, 12 layers, 8 heads, context 77, BPE vocab
            49,408; input 224 px, random square crop only. Published: 63.2%
            ImageNet zero-shot top-1 for ViT-B/32 (openai/CLIP model card).
            The paper's 400M-pair WIT data is not public: point
            --config.data.name at an image-text TFDS dataset (default
            'coco_captions', --config.data.text_feature) or use
            --config.data.source=folder with a captions.jsonl. Hardware: the
            paper's largest ViT (L/14) took 12 days on 256 V100 GPUs
            (Sec. 2.5); B/32 is several times cheaper. Batch 32k needs a
            TPU pod slice or a multi-host GPU cluster (launch/README.md); on one
            GPU lower --config.batch_size (the loss is then weaker: CLIP relies
            on a large batch of negatives).

smoke       Tiny towers, 6 steps of 32 images: for tests (seconds on CPU).

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import math

import ml_collections

from jssl import runbook
from jssl.data import recipes

PRESETS = ("quickstart", "vit_b32", "smoke")


def text_config(*, size: str = "tiny", context_length: int = 48, tokenizer: str = "bytes",
                path: str = "", causal: bool = True,
                pool: str = "eos") -> ml_collections.ConfigDict:
  """`config.text`: the tokenizer (`jssl.text.tokenizers`) and the text tower
  (`jssl.models.make_text_encoder`; vocab_size 0 = the tokenizer's)."""
  return ml_collections.ConfigDict(dict(
      tokenizer=dict(name=tokenizer, path=path, context_length=context_length),
      model=dict(name=size, vocab_size=0, causal=causal, pool=pool, dtype="float32")))


def light_views(c: ml_collections.ConfigDict) -> None:
  """One view, light augmentation: a mild random resized crop, no flip (a
  flipped digit is another symbol), no colour ops."""
  c.views.num_views = 1
  c.views.crop.scale = (0.6, 1.0)
  c.views.flip.p = 0.0
  c.views.color_jitter.p = 0.0
  c.views.grayscale.p = 0.0
  c.views.blur.p = 0.0


def image_text_config(method: str, preset: str, presets: tuple[str, ...]
                      ) -> ml_collections.ConfigDict:
  """Fields every image-text run book shares; quickstart and smoke data."""
  preset = runbook.check_preset(preset, presets, method)
  c = runbook.base_config(method)
  c.embed_dim = 64
  c.text = text_config()
  c.loss = ml_collections.ConfigDict(dict(
      # impl 'ring': the loss with texts passed around the devices
      # (jssl.losses.ring; no device holds the global B x B logits); 'global':
      # the plain loss (FILIP and K > 1 captions need it). chunk_size: image
      # rows per logits block of the ring (and of SigLIP's 'chunked').
      name=method if method != "lit" else "clip", impl="ring", chunk_size=1024,
      similarity="global", logit_scale_init=math.log(1 / 0.07), max_logit_scale=100.0,
      t_prime_init=math.log(10.0), bias_init=-10.0))
  c.optimizer.update(name="adamw", base_lr=1e-3, lr_scaling="none", weight_decay=0.1,
                     b1=0.9, b2=0.98, warmup_epochs=1.0, trust_coefficient=0.001)
  if preset in ("quickstart", "smoke"):
    runbook.digits_data(c, recipes.simclr_recipe, smoke=preset == "smoke")
    c.data.source = "digits_captions"
    c.data.captions_per_image = 1
    light_views(c)
    if preset == "smoke":
      c.embed_dim = 16
      c.text = text_config()
  else:
    c.data.captions_per_image = 1
  c.data.text_feature = "captions/text"
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = image_text_config("clip", arg or "quickstart", PRESETS)
  if (arg or "quickstart") == "vit_b32":
    runbook.imagenet_data(c, recipes.simclr_recipe)
    c.data.update(source="tfds", name="coco_captions", test_split="validation")
    light_views(c)
    c.views.crop.scale = (0.9, 1.0)   # CLIP: a random square crop only
    c.model = ml_collections.ConfigDict(dict(name="vit_base", patch_size=32, dtype="bfloat16"))
    c.text = text_config(size="B", context_length=77, tokenizer="clip_bpe",
                         path="bpe_simple_vocab_16e6.txt.gz")
    c.text.model.vocab_size = 49408   # openai CLIP BPE (builds without the vocab file)
    c.embed_dim = 512
    c.batch_size = 32768
    c.total_epochs = 32.0
    c.optimizer.update(base_lr=5e-4, weight_decay=0.2, b2=0.98, warmup_epochs=0.16)  # 2000 of ~12k steps/epoch
  return c
