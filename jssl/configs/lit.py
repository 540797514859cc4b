r"""LiT (Zhai et al. 2022) run book: a locked, jssl-pretrained image tower and a
text tower trained to match it (`jssl.methods.lit`).

`config.lit.image_tower` names the locked tower: a jssl export directory or a
training workdir whose export/ exists (e.g. the SimCLR quickstart's).

Presets (`--config=lit:<preset>`):

quickstart  Offline: first train the SimCLR quickstart (its export is the
            locked tower), then LiT on the digits with captions (byte-level
            tokenizer, tiny text tower, no image head: texts map to the
            tower's 64-d features):
              python -m jssl.main --config=simclr:quickstart --workdir=/tmp/jssl_quickstart
              python -m jssl.main --config=lit:quickstart --workdir=/tmp/jssl_lit \
                  --config.lit.image_tower=/tmp/jssl_quickstart
            Meant for <= 5 minutes on 2 CPU cores (after the SimCLR run).

resnet50    LiT on a jssl SimCLR ResNet-50 (`simclr:imagenet`'s export),
            contrastive loss, the LiT paper's text side (Zhai et al. 2022,
            Sec. 4: B-size text transformer, batch 16k, Adafactor/Adam lr
            1e-3, weight decay 1e-4, cosine; big_vision `lit_coco.py`: 224 px,
            no image head). Published: LiT-B16B_2 (ViT-B/16 locked, BERT-base
            text) 73.9% ImageNet zero-shot (big_vision README_lit.md); the
            paper's best, ViT-g/14, 85.2% (abstract). A self-supervised
            ResNet-50 tower is expected well below these (no number
            published). Needs an accelerator: the locked tower only runs
            forward, so one 8-GPU host or a TPU v3-8 handles batch 4k-16k.

smoke       Tiny towers, 6 steps of 32 images: for tests (needs
            --config.lit.image_tower of a smoke-sized export).

Every field can be overridden with --config.<field>=<value>; a misspelled
field fails with an error naming it (the config is locked).
"""
from __future__ import annotations

import ml_collections

from jssl import runbook
from jssl.configs.clip import image_text_config, light_views, text_config
from jssl.data import recipes

PRESETS = ("quickstart", "resnet50", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "quickstart"
  c = image_text_config("lit", preset, PRESETS)
  # image_tower: export dir or workdir with export/. image_head: a trainable
  # image projection to embed_dim (default off, as big_vision's LiT).
  c.lit = ml_collections.ConfigDict(dict(image_tower="", image_head=False))
  if preset == "resnet50":
    runbook.imagenet_data(c, recipes.simclr_recipe)
    c.data.update(source="tfds", name="coco_captions", test_split="validation")
    light_views(c)
    c.text = text_config(size="B", context_length=16)
    c.embed_dim = 2048
    c.batch_size = 16384
    c.total_epochs = 10.0
    c.optimizer.update(base_lr=1e-3, weight_decay=1e-4, warmup_epochs=0.5)
  return c
