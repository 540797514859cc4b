r"""SigLIP (Zhai et al. 2023) run book: an image and a text tower trained with
the pairwise sigmoid loss (`jssl.methods.siglip`).

Presets (`--config=siglip:<preset>`):

quickstart  Offline: the digits with captions (data.source 'digits_captions'),
            byte-level tokenizer (context 48 bytes: the longest caption fits), half-width ResNet-10 image
            tower, tiny text tower, 64-d embeddings, one lightly augmented view,
            AdamW; the loss computed as the paper's chunked implementation
            (impl 'ring': each device scores its images against one device's
            texts at a time while the texts travel around the devices; on one
            device it is the plain loss). Meant for <= 5 minutes on 2 CPU
            cores.
              python -m jssl.main --config=siglip:quickstart --workdir=/tmp/jssl_siglip

b16         SigLIP ViT-B/16 at 224 px as big_vision trains it (Zhai et al.
            2023, Sec. 4 and App.; big_vision `trainers/proj/image_text/
            siglip.py`, `models/proj/image_text/two_towers.py`): batch 32k,
            ViT-B/16 image tower with 'map' pooling in big_vision ('cls'
            here), big_vision's B text tower (width 768, 12 layers, 12 heads;
            bidirectional, 'last'-token pooling in big_vision, 'eos' here),
            SentencePiece vocabulary of 32k, 16 tokens, embed dim 768,
            t' = log 10, b = -10, Adam (beta2 0.95) lr 1e-3, weight decay
            1e-4, warm-up then cosine, 40B examples seen at the top of the
            paper's scale. Published: the big_vision SigLIP demo colab lists
            B/16 224 px WebLI at 76.2% ImageNet zero-shot (quoted, not
            re-checked against the colab here; not reproduced by jssl). WebLI is private: use an image-text TFDS dataset or a
            folder with captions.jsonl. Hardware: the paper trains B/16 on
            TPUv4 pods (32k batch); the ring loss (default) keeps each
            device's loss memory linear in its own batch and flat in the
            number of devices (README "Image-text": memory table), so a GPU
            cluster works too. impl 'chunked' all-gathers the texts and scans
            anchor chunks; 'global' is the plain B x B loss.

smoke       Tiny towers, 6 steps of 32 images: for tests (seconds on CPU).

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.configs.clip import image_text_config, light_views, text_config
from jssl.data import recipes

PRESETS = ("quickstart", "b16", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "quickstart"
  c = image_text_config("siglip", preset, PRESETS)
  c.loss.impl = "ring"
  c.loss.chunk_size = 256   # image rows per block of the ring / chunked loss
  if preset == "b16":
    runbook.imagenet_data(c, recipes.simclr_recipe)
    c.data.update(source="tfds", name="coco_captions", test_split="validation")
    light_views(c)
    c.views.crop.scale = (0.9, 1.0)
    c.model = ml_collections.ConfigDict(dict(name="vit_base", patch_size=16, dtype="bfloat16"))
    c.text = text_config(size="B", context_length=16, tokenizer="sentencepiece",
                         path="c4_en.model", causal=False, pool="eos")
    c.text.model.update(width=768, num_heads=12, vocab_size=32000)
    c.embed_dim = 768
    c.batch_size = 32768
    c.total_epochs = 10.0
    c.optimizer.update(base_lr=1e-3, weight_decay=1e-4, b2=0.95, warmup_epochs=0.5)
    c.loss.chunk_size = 1024
  return c
