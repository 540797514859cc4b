"""Helpers for the image-text method tests: synthetic batches {'image', 'text',
'label'} (random images, token rows ending in a non-zero EOS, 0 padding)."""
from __future__ import annotations

import numpy as np

from jssl_testing import load_config, set_fields


def synthetic_batches(config, n: int, *, seed: int = 0, k: int | None = None) -> list[dict]:
  """`n` host batches at the config's batch size, image size and context
  length; `k` captions per image (default `config.data.captions_per_image`).
  Captions depend on the label, so the towers have something to match."""
  rng = np.random.default_rng(seed)
  b = config.batch_size
  size = int(config.views.image_size)
  length = int(config.text.tokenizer.context_length)
  k = int(k or config.data.get("captions_per_image", 1))
  out = []
  for _ in range(n):
    label = rng.integers(0, 10, size=b).astype(np.int32)
    image = rng.integers(0, 256, size=(b, size, size, 3)).astype(np.uint8)
    image[..., 0] = (label[:, None, None] * 25).astype(np.uint8)   # class in red
    text = np.zeros((b, k, length), np.int32)
    for i in range(b):
      for j in range(k):
        n_tok = int(rng.integers(2, length - 1))
        row = rng.integers(3, 259, size=n_tok)
        row[0] = 1                       # BOS
        row[1] = 3 + label[i]            # the class as a token
        text[i, j, :n_tok] = row
        text[i, j, n_tok] = 2            # EOS
    out.append({"image": image, "text": text, "label": label})
  return out


def smoke_config(name: str, **overrides):
  """The run book's smoke preset, unlocked, with tiny shapes for tests."""
  config = load_config(f"{name}:smoke")
  config.batch_size = 16
  return set_fields(config, **overrides)
