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


def _ranks(query_emb, cand_emb, pair_query, pair_cand, block_size):
  """Per query: #{wrong candidates scored >= its best correct one}, or -1 for
  a query with no correct candidate. (pair_query[p], pair_cand[p]) are the
  correct pairs."""
  n = query_emb.shape[0]
  order = np.argsort(pair_query, kind="stable")
  pq, pc = pair_query[order], pair_cand[order]
  starts = np.searchsorted(pq, np.arange(n + 1))
  t = cand_emb.T
  out = []
  for s in range(0, n, block_size):
    scores = query_emb[s:s + block_size] @ t                       # [b, M]
    positive = np.zeros(scores.shape, bool)
    lo, hi = starts[s], starts[min(s + block_size, n)]
    positive[pq[lo:hi] - s, pc[lo:hi]] = True
    best = np.where(positive, scores, -np.inf).max(axis=1, keepdims=True)
    rank = ((scores >= best) & ~positive).sum(axis=1)
    out.append(np.where(positive.any(axis=1), rank, -1))
  return np.concatenate(out)


def recall_at_k(image_emb, text_emb, text_image=None, ks: Sequence[int] = (1, 5, 10), *,
                pairs=None, block_size: int = 256) -> dict[str, float]:
  """Recall@K, as fractions in [0, 1]: {'i2t_R@1', ..., 't2i_R@1', ...}.

  Args:
    image_emb: [N, D] image embeddings.
    text_emb: [M, D] text embeddings (same D).
    text_image: [M] int, the index in [0, N) of the image each text describes.
    ks: K values (every K is reported; K >= the number of candidates gives 1).
    pairs: instead of `text_image`, `[P, 2]` int (image, text) pairs when a
      text may describe several images (the same caption string on several
      images): a text query is a hit when ANY of its images is in the top K
      (ranked against the images it does not describe), and an image query
      when any of its texts is.
    block_size: queries scored at once.
  """
  image_emb = np.asarray(image_emb)
  text_emb = np.asarray(text_emb)
  if (text_image is None) == (pairs is None):
    raise errors.ConfigError("retrieval: pass exactly one of text_image and pairs")
  if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
    raise errors.DataError(
        f"retrieval: image embeddings {image_emb.shape} and text embeddings "
        f"{text_emb.shape} must be [N, D] and [M, D] with the same D")
  n, m = image_emb.shape[0], text_emb.shape[0]
  if n == 0 or m == 0:
    raise errors.DataError(f"retrieval needs images and texts, got {n} images and {m} texts")
  if pairs is None:
    text_image = np.asarray(text_image)
    if text_image.shape != (m,) or not np.issubdtype(text_image.dtype, np.integer):
      raise errors.DataError(
          f"retrieval: text_image must be integers of shape ({m},), got "
          f"{text_image.dtype} {text_image.shape}")
    if text_image.min() < 0 or text_image.max() >= n:
      bad = text_image[(text_image < 0) | (text_image >= n)][0]
      raise errors.DataError(
          f"retrieval: text_image has {int(bad)}, outside [0, {n}) ({n} images)")
    pairs = np.stack([text_image, np.arange(m)], axis=1)
  pairs = np.asarray(pairs)
  if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
    raise errors.DataError(f"retrieval: pairs must be integers of shape [P, 2], got "
                           f"{pairs.dtype} {pairs.shape}")
  if ((pairs < 0) | (pairs >= np.asarray([n, m]))).any():
    raise errors.DataError(f"retrieval: a pair is outside the {n} images x {m} texts")
  if len(np.unique(pairs[:, 1])) != m:
    raise errors.DataError("retrieval: every text must describe at least one image")
  ks = list(ks)
  for k in ks:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise errors.ConfigError(f"recall K={k!r} must be a positive integer")
  if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
    raise errors.ConfigError(f"block_size={block_size!r} must be a positive integer")
  image_emb = image_emb.astype(np.float64)
  text_emb = text_emb.astype(np.float64)
  pairs = pairs.astype(np.int64)
  i2t = _ranks(image_emb, text_emb, pairs[:, 0], pairs[:, 1], block_size)
  i2t = i2t[i2t >= 0]  # images without texts are only distractors
  t2i = _ranks(text_emb, image_emb, pairs[:, 1], pairs[:, 0], block_size)
  out = {}
  for k in ks:
    out[f"i2t_R@{int(k)}"] = float(np.mean(i2t < k))
  for k in ks:
    out[f"t2i_R@{int(k)}"] = float(np.mean(t2i < k))
  return out
