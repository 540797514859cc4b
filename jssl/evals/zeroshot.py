"""Zero-shot classification with a dual encoder: class names x prompt templates.

Protocol (Radford et al. 2021, Sec. 3.1.4; openai/CLIP
notebooks/Prompt_Engineering_for_ImageNet.ipynb, `zeroshot_classifier` and
`accuracy`):

1. For each class c, fill every template with its name ("a photo of a {}." ->
   "a photo of a dog."), tokenize, embed with the text tower.
2. L2-normalise each prompt embedding, average them over the templates, and
   L2-normalise the mean: the class embedding w_c (the "ensemble" of prompts,
   averaged in embedding space).
3. An image with embedding x is scored s_c = <x, w_c>; it is a top-k hit when
   its label is among the k best scores.

Tie rule (jssl's, stated because CLIP's `torch.topk` leaves it to the kernel):
pessimistic. A class whose score EQUALS the label's score counts as ranked
above it, so the label's rank is #{c != label: s_c >= s_label} and a hit at k
means rank < k. A constant model (all scores equal) thus scores 0, never 1.
The same rule as `jssl.evals.retrieval`.

Everything is host-side numpy: `embed_texts` (the caller's jitted text tower)
is the only device work. Scores are float64 dot products computed in blocks
of `block_size` images (memory O(block_size x C)).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from jssl import errors
from jssl.text import templates as templates_lib


def _normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
  norm = np.linalg.norm(x, axis=axis, keepdims=True)
  return x / np.maximum(norm, 1e-12)


def class_embeddings(embed_texts: Callable[[np.ndarray], np.ndarray], tokenizer,
                     class_names: Sequence[str], templates: Sequence[str], *,
                     batch_size: int = 256, pad_batches: bool = True) -> np.ndarray:
  """Zero-shot classifier weights, float32 [C, D] (rows unit-norm).

  Row c = normalise(mean_t normalise(embed_texts(tokenizer([t.format(c)])))),
  CLIP's `zeroshot_classifier`.

  Args:
    embed_texts: int32 tokens [n, L] -> embeddings [n, D] (numpy or jax).
    tokenizer: a `jssl.text.tokenizers.Tokenizer` (any callable texts -> int32 [n, L]).
    class_names: C names, in label order.
    templates: T templates, each with exactly one '{}'.
    batch_size: prompts per `embed_texts` call (C*T prompts, class-major order).
    pad_batches: pad the last batch to `batch_size` rows (copies of its first
      row, dropped afterwards) so a jitted `embed_texts` sees one shape.
  """
  class_names = list(class_names)
  templates = list(templates)
  if not class_names:
    raise errors.ConfigError("zero-shot class names are empty: give at least one class")
  for name in class_names:
    if not isinstance(name, str) or not name.strip():
      raise errors.ConfigError(f"zero-shot class name {name!r} must be a non-empty string")
  templates_lib.check_templates(templates)
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise errors.ConfigError(f"batch_size={batch_size!r} must be a positive integer")
  prompts = [templates_lib.fill(t, c) for c in class_names for t in templates]
  outs = []
  for start in range(0, len(prompts), batch_size):
    tokens = np.asarray(tokenizer(prompts[start:start + batch_size]), np.int32)
    n = tokens.shape[0]
    if pad_batches and n < batch_size:
      tokens = np.concatenate([tokens, np.repeat(tokens[:1], batch_size - n, axis=0)])
    emb = np.asarray(embed_texts(tokens), np.float32)
    if emb.ndim != 2 or emb.shape[0] != tokens.shape[0]:
      raise errors.DataError(
          f"embed_texts returned shape {emb.shape} for {tokens.shape[0]} prompts; "
          "expected [n, D]")
    outs.append(emb[:n])
  emb = _normalize(np.concatenate(outs).astype(np.float64))
  emb = emb.reshape(len(class_names), len(templates), -1).mean(axis=1)
  return _normalize(emb).astype(np.float32)


def ranks(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
  """Pessimistic rank of column `correct[i]` in row i: #{j != correct: s_ij >= s_i,correct}."""
  target = np.take_along_axis(scores, correct[:, None], axis=1)
  ahead = scores >= target
  ahead[np.arange(len(correct)), correct] = False
  return ahead.sum(axis=1)


def zeroshot_accuracy(image_emb, class_emb, labels, ks: Sequence[int] = (1, 5), *,
                      block_size: int = 1024) -> dict[str, float]:
  """Top-k zero-shot accuracy, as fractions in [0, 1].

  Args:
    image_emb: [N, D] image embeddings (the norm does not change a row's ranking).
    class_emb: [C, D] class embeddings (`class_embeddings`).
    labels: [N] int, in [0, C).
    ks: k values; 'top{k}' is reported only for k < C (k >= C is always 1).
    block_size: images scored at once.
  Returns:
    {'top1': ..., 'top5': ...}.
  """
  image_emb = np.asarray(image_emb)
  class_emb = np.asarray(class_emb)
  labels = np.asarray(labels)
  if image_emb.ndim != 2 or class_emb.ndim != 2 or image_emb.shape[1] != class_emb.shape[1]:
    raise errors.DataError(
        f"zero-shot: image embeddings {image_emb.shape} and class embeddings "
        f"{class_emb.shape} must be [N, D] and [C, D] with the same D")
  n, c = image_emb.shape[0], class_emb.shape[0]
  if c == 0:
    raise errors.ConfigError("zero-shot class names are empty: give at least one class")
  if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
    raise errors.DataError(
        f"zero-shot labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}")
  if n == 0:
    raise errors.DataError("zero-shot: no images to score")
  if labels.min() < 0 or labels.max() >= c:
    bad = labels[(labels < 0) | (labels >= c)][0]
    raise errors.DataError(f"zero-shot label {int(bad)} is outside [0, {c}) ({c} classes)")
  ks = _check_ks(ks)
  w = class_emb.astype(np.float64)
  rank = np.concatenate([
      ranks(image_emb[s:s + block_size].astype(np.float64) @ w.T, labels[s:s + block_size])
      for s in range(0, n, block_size)])
  return {f"top{k}": float(np.mean(rank < k)) for k in ks if k < c or k == 1}


def _check_ks(ks) -> list[int]:
  ks = list(ks)
  for k in ks:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise errors.ConfigError(f"k={k!r} must be a positive integer")
  return [int(k) for k in ks]
