"""Image-text retrieval Recall@K in both directions.

Protocol (CLIP, Radford et al. 2021, Table 13: Flickr30k / MSCOCO zero-shot
retrieval; as LAION-AI/CLIP_benchmark clip_benchmark/metrics/zeroshot_retrieval.py
computes it, which open_clip's users report): images and texts are scored by
the dot product of their embeddings; several texts may describe one image
(COCO: 5 captions each).

* image -> text (i2t_R@K): an image is a hit when ANY of its texts is among
  the K best-scored texts; averaged over the images that have at least one
  text (an image without texts is only a distractor for t2i).
* text -> image (t2i_R@K): a text is a hit when its image is among the K
  best-scored images; averaged over all texts.

Tie rule (pessimistic, jssl's; CLIP_benchmark leaves ties to `torch.topk`): a
wrong candidate whose score EQUALS the best correct one's counts as ranked
above it. The rank of a query is #{wrong candidates with score >= the best
correct score}, and a hit at K means rank < K. A constant model (all scores
equal) therefore gets recall 0 for every K below the number of wrong
candidates, never 1 (breaking ties in the query's favour would give 1;
breaking them at random would give K/N in expectation).

Memory: queries are scored in blocks of `block_size` rows, so the largest
array is [block_size, max(N, M)] (float64 scores), never [N, M]. Host numpy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jssl import errors


def _i2t_ranks(image_emb, text_emb, text_image, block_size):
  n = image_emb.shape[0]
  t = text_emb.T
  out = []
  for s in range(0, n, block_size):
    scores = image_emb[s:s + block_size] @ t                       # [b, M]
    positive = text_image[None, :] == np.arange(s, s + scores.shape[0])[:, None]
    best = np.where(positive, scores, -np.inf).max(axis=1, keepdims=True)
    out.append(((scores >= best) & ~positive).sum(axis=1))
  return np.concatenate(out)


def _t2i_ranks(image_emb, text_emb, text_image, block_size):
  m = text_emb.shape[0]
  t = image_emb.T
  out = []
  for s in range(0, m, block_size):
    scores = text_emb[s:s + block_size] @ t                        # [b, N]
    correct = text_image[s:s + block_size]
    rows = np.arange(scores.shape[0])
    ahead = scores >= scores[rows, correct][:, None]
    ahead[rows, correct] = False
    out.append(ahead.sum(axis=1))
  return np.concatenate(out)


def recall_at_k(image_emb, text_emb, text_image, ks: Sequence[int] = (1, 5, 10), *,
                block_size: int = 256) -> dict[str, float]:
  """Recall@K, as fractions in [0, 1]: {'i2t_R@1', ..., 't2i_R@1', ...}.

  Args:
    image_emb: [N, D] image embeddings.
    text_emb: [M, D] text embeddings (same D).
    text_image: [M] int, the index in [0, N) of the image each text describes.
    ks: K values (every K is reported; K >= the number of candidates gives 1).
    block_size: queries scored at once.
  """
  image_emb = np.asarray(image_emb)
  text_emb = np.asarray(text_emb)
  text_image = np.asarray(text_image)
  if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
    raise errors.DataError(
        f"retrieval: image embeddings {image_emb.shape} and text embeddings "
        f"{text_emb.shape} must be [N, D] and [M, D] with the same D")
  n, m = image_emb.shape[0], text_emb.shape[0]
  if n == 0 or m == 0:
    raise errors.DataError(f"retrieval needs images and texts, got {n} images and {m} texts")
  if text_image.shape != (m,) or not np.issubdtype(text_image.dtype, np.integer):
    raise errors.DataError(
        f"retrieval: text_image must be integers of shape ({m},), got "
        f"{text_image.dtype} {text_image.shape}")
  if text_image.min() < 0 or text_image.max() >= n:
    bad = text_image[(text_image < 0) | (text_image >= n)][0]
    raise errors.DataError(f"retrieval: text_image has {int(bad)}, outside [0, {n}) ({n} images)")
  ks = list(ks)
  for k in ks:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise errors.ConfigError(f"recall K={k!r} must be a positive integer")
  if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
    raise errors.ConfigError(f"block_size={block_size!r} must be a positive integer")
  image_emb = image_emb.astype(np.float64)
  text_emb = text_emb.astype(np.float64)
  text_image = text_image.astype(np.int64)
  i2t = _i2t_ranks(image_emb, text_emb, text_image, block_size)
  has_text = np.bincount(text_image, minlength=n) > 0
  i2t = i2t[has_text]
  t2i = _t2i_ranks(image_emb, text_emb, text_image, block_size)
  out = {}
  for k in ks:
    out[f"i2t_R@{int(k)}"] = float(np.mean(i2t < k))
  for k in ks:
    out[f"t2i_R@{int(k)}"] = float(np.mean(t2i < k))
  return out
