"""Zero-shot classification and retrieval of a dual encoder on a held-out set.

The evaluation of the image-text methods (CLIP, SigLIP, LiT), run by the
training loop at the end (trained model and the same model at its random
initialisation) and by `python -m jssl.evaluate --export=DIR` on an export.

  zero-shot   class embeddings = mean of the L2-normalised embeddings of
              `template.format(class name)` over the templates, re-normalised
              (CLIP's `zeroshot_classifier`, openai/CLIP
              notebooks/Prompt_Engineering_for_ImageNet.ipynb); top-1 / top-5
              of the images' labels (`jssl.evals.zeroshot`).
  retrieval   image->text and text->image Recall@1/5/10 over the held-out
              images and all their distinct captions (a caption shared by
              several images is correct for each of them), ties counted
              against the model (`jssl.evals.retrieval`).

Embeddings are computed by one jitted function per tower over the mesh
(images and token rows split over the data axis, weights replicated); every
process holds the whole held-out set and takes its share of each batch, so
the results are the same on every process.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

from jssl import sharding as shd


def embed_rows(fn: Callable[[Any, jax.Array], jax.Array], variables: Any,
               rows: np.ndarray, mesh, *, batch_size: int) -> np.ndarray:
  """`fn(variables, rows[i:i+batch])` over all `rows` -> `[N, D]` float32 numpy.

  `rows` (images or token ids) are the same on every process; each global
  batch of `batch_size` rows (a multiple of the data-axis size and of the
  process count) is split over processes and devices; the last one is padded
  with copies of row 0 and the padding dropped.
  """
  n = len(rows)
  if n == 0:
    raise ValueError("nothing to embed: the held-out set is empty")
  procs, me = jax.process_count(), jax.process_index()
  per_proc = batch_size // procs
  out = []
  for start in range(0, n, batch_size):
    chunk = rows[start:start + batch_size]
    if len(chunk) < batch_size:
      pad = np.repeat(chunk[:1], batch_size - len(chunk), axis=0)
      chunk = np.concatenate([chunk, pad])
    local = chunk[me * per_proc:(me + 1) * per_proc]
    emb = fn(variables, shd.to_global(local, mesh))
    out.append(np.asarray(multihost_utils.process_allgather(emb, tiled=True)
                          if procs > 1 else jax.device_get(emb), np.float32))
  return np.concatenate(out)[:n]


def make_embed_fns(dual, preprocess: dict, mesh):
  """(embed_images(variables, uint8 [B,H,W,C]), embed_texts(variables, int32
  [B,L])), jitted over `mesh`; images get the inference transform
  (`jssl.data.eval_transform.eval_preprocess`: resize, centre crop,
  normalise) of `preprocess` first."""
  from jssl.data import eval_transform  # pylint: disable=import-outside-toplevel
  size, mean, std = int(preprocess["size"]), preprocess["mean"], preprocess["std"]
  crop = float(preprocess.get("crop_fraction", 1.0))
  shardings = dict(in_shardings=(shd.replicated(mesh), shd.data_sharding(mesh)),
                   out_shardings=shd.data_sharding(mesh))

  def images_fn(variables, images):
    x = eval_transform.eval_preprocess(images, size=size, mean=mean, std=std,
                                       crop_fraction=crop)
    return dual.embed_images(variables, x)

  return (jax.jit(images_fn, **shardings), jax.jit(dual.embed_texts, **shardings))


def evaluate(dual, variables, heldout, tokenizer, preprocess: dict, mesh, *,
             batch_size: int, ks: Sequence[int] = (1, 5, 10), embed_fns=None) -> dict:
  """Zero-shot top-1/top-5 and Recall@K of `dual` (a `DualEncoder`) at
  `variables` on `heldout` (`jssl.data.captions.HeldOut`).

  Zero-shot runs when the held-out set has labels and class names (with its
  own templates, else CLIP's 80 ImageNet ones); retrieval when it has
  captions. `heldout.images` are already at the eval size, centre-cropped. Returns flat metrics: `zeroshot_top1`,
  `zeroshot_top5`, `i2t_R@K`, `t2i_R@K`, `num_images`, `num_texts`.
  `embed_fns`: `make_embed_fns(dual, preprocess, mesh)`, made once by a caller
  that evaluates several times (the trained and the random-init model), so
  they compile once.
  """
  from jssl.evals import retrieval, zeroshot  # pylint: disable=import-outside-toplevel
  from jssl.text import templates as templates_lib  # pylint: disable=import-outside-toplevel
  images_fn, texts_fn = embed_fns or make_embed_fns(dual, preprocess, mesh)
  embed_tokens = lambda tokens: embed_rows(  # noqa: E731
      texts_fn, variables, np.asarray(tokens, np.int32), mesh, batch_size=batch_size)
  image_emb = embed_rows(images_fn, variables, np.asarray(heldout.images), mesh,
                         batch_size=batch_size)
  out: dict = {"num_images": int(len(image_emb))}
  names = heldout.class_names
  # Sets without their own prompts: CLIP's 80 ImageNet templates.
  templates = heldout.templates or templates_lib.templates("imagenet")
  if heldout.labels is not None and names and templates:
    class_emb = zeroshot.class_embeddings(embed_tokens, tokenizer, names, templates)
    acc = zeroshot.zeroshot_accuracy(image_emb, class_emb, np.asarray(heldout.labels))
    out.update({f"zeroshot_{k}": float(v) for k, v in acc.items()})
  texts, pairs = flatten_captions(heldout.captions)
  if texts:
    text_emb = embed_tokens(tokenizer(texts))
    recall = retrieval.recall_at_k(image_emb, text_emb, pairs=pairs, ks=tuple(ks))
    out.update({k: float(v) for k, v in recall.items()})
    out["num_texts"] = len(texts)
  return out


def flatten_captions(captions: Optional[Sequence[Sequence[str]]]
                     ) -> tuple[list[str], np.ndarray]:
  """Per-image caption lists -> (distinct captions, (image, caption) pairs
  `[P, 2]`).

  Identical caption strings are one text, correct for every image it
  describes: scored once, it cannot tie with itself (two copies of one
  string score the same against every image, so under the pessimistic tie
  rule each copy would rank the other above it). Sets with distinct captions
  (COCO, Flickr30k) are unchanged; the quickstart's digit captions repeat
  across images of a class.
  """
  index: dict[str, int] = {}
  pairs = []
  for i, caps in enumerate(captions or ()):
    for c in dict.fromkeys(caps):
      pairs.append((i, index.setdefault(c, len(index))))
  return list(index), np.asarray(pairs, np.int64).reshape(-1, 2)


HEADLINE = ("zeroshot_top1", "i2t_R@1", "t2i_R@1")


def summary(res: dict, rnd: Optional[dict] = None) -> str:
  """One line of the headline metrics (`rnd`: the random-init baseline)."""
  parts = []
  for k in HEADLINE + ("i2t_R@5", "t2i_R@5"):
    if k in res:
      base = f" (random init {rnd[k]:.4f})" if rnd and k in rnd else ""
      parts.append(f"{k} {res[k]:.4f}{base}")
  return " | ".join(parts) if parts else "no zero-shot or retrieval metrics"
