"""Retrieval Recall@K both ways (jssl/evals/retrieval.py), hand-checked."""
import numpy as np
import pytest

from jssl import errors
from jssl.evals import retrieval

IMAGES = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
TEXTS = np.array([[1.0, 0.0],    # t0 -> image 0
                  [0.8, 0.6],    # t1 -> image 0
                  [0.0, 1.0],    # t2 -> image 1
                  [0.6, 0.8],    # t3 -> image 1
                  [1.0, 0.0]])   # t4 -> image 2
TEXT_IMAGE = np.array([0, 0, 1, 1, 2])


def test_recall_by_hand():
  # Scores image x text:
  #   i0: t0 1.0, t1 .8, t2 0, t3 .6, t4 1.0 -> best own text t0 = 1.0; t4 TIES -> rank 1
  #   i1: t0 0, t1 .6, t2 1.0, t3 .8, t4 0   -> best own t2 = 1.0 -> rank 0
  #   i2: t0 .6, t1 .96, t2 .8, t3 1.0, t4 .6 -> own t4 = .6; t0 ties, t1 t2 t3 above -> rank 4
  # Scores text x image (own image starred):
  #   t0: *1, 0, .6 -> 0     t1: *.8, .6, .96 -> 1    t2: 0, *1, .8 -> 0
  #   t3: .6, *.8, 1 -> 1    t4: 1, 0, *.6 -> 1
  r = retrieval.recall_at_k(IMAGES, TEXTS, TEXT_IMAGE, ks=(1, 2, 5))
  assert r == pytest.approx({
      "i2t_R@1": 1 / 3, "i2t_R@2": 2 / 3, "i2t_R@5": 1.0,
      "t2i_R@1": 2 / 5, "t2i_R@2": 1.0, "t2i_R@5": 1.0})
  for block in (1, 2, 3, 1000):
    assert retrieval.recall_at_k(IMAGES, TEXTS, TEXT_IMAGE, ks=(1, 2, 5), block_size=block) == r


def test_any_of_the_images_texts_counts():
  # Image 0 has two texts: only the second is its nearest; R@1 still counts it.
  images = np.array([[1.0, 0.0], [0.0, 1.0]])
  texts = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9]])
  r = retrieval.recall_at_k(images, texts, np.array([0, 0, 1]), ks=(1,))
  # i0: t1 (own) = 1 best -> hit; i1: t2 (own) .9 < t0 1.0 -> miss.
  # t0 -> image 0 but image 1 scores higher -> miss; t1 hit; t2 hit.
  assert r == pytest.approx({"i2t_R@1": 0.5, "t2i_R@1": 2 / 3})


def test_constant_model_is_not_perfect():
  """All-equal embeddings: every candidate ties with the right one, and ties
  count against the query, so recall is 0 (not 1) below the candidate count."""
  n = 20
  r = retrieval.recall_at_k(np.ones((n, 4)), np.ones((2 * n, 4)),
                            np.repeat(np.arange(n), 2), ks=(1, 5, 10))
  assert all(v == 0.0 for v in r.values()), r
  # Degenerate (zero) embeddings too.
  r0 = retrieval.recall_at_k(np.zeros((n, 4)), np.zeros((n, 4)), np.arange(n), ks=(1, 5))
  assert all(v == 0.0 for v in r0.values()), r0


def test_matches_plain_topk_without_ties_and_blocks_agree():
  rng = np.random.default_rng(0)
  n, m = 37, 90
  images = rng.normal(size=(n, 16)).astype(np.float32)
  text_image = rng.integers(0, n, size=m)
  texts = images[text_image] + 1.5 * rng.normal(size=(m, 16)).astype(np.float32)
  ks = (1, 5, 10)
  scores = images.astype(np.float64) @ texts.T.astype(np.float64)   # no ties (random floats)
  order_i2t = np.argsort(-scores, axis=1)
  order_t2i = np.argsort(-scores.T, axis=1)
  has_text = np.isin(np.arange(n), text_image)
  expect = {}
  for k in ks:
    hits = [np.isin(order_i2t[i, :k], np.nonzero(text_image == i)[0]).any()
            for i in range(n) if has_text[i]]
    expect[f"i2t_R@{k}"] = float(np.mean(hits))
  for k in ks:
    expect[f"t2i_R@{k}"] = float(np.mean([text_image[j] in order_t2i[j, :k] for j in range(m)]))
  assert 0 < expect["i2t_R@1"] < 1 and 0 < expect["t2i_R@1"] < 1
  for block in (1, 7, 256):
    got = retrieval.recall_at_k(images, texts, text_image, ks=ks, block_size=block)
    assert got == pytest.approx(expect), block


def test_errors():
  with pytest.raises(errors.DataError, match="text_image has 3, outside"):
    retrieval.recall_at_k(IMAGES, TEXTS, np.array([0, 0, 1, 1, 3]))
  with pytest.raises(errors.DataError, match="shape"):
    retrieval.recall_at_k(IMAGES, TEXTS, np.array([0, 1]))
  with pytest.raises(errors.DataError, match="same D"):
    retrieval.recall_at_k(IMAGES, np.ones((5, 3)), TEXT_IMAGE)
  with pytest.raises(errors.DataError, match="0 images"):
    retrieval.recall_at_k(np.zeros((0, 2)), TEXTS, TEXT_IMAGE)
  with pytest.raises(errors.ConfigError, match="K=0"):
    retrieval.recall_at_k(IMAGES, TEXTS, TEXT_IMAGE, ks=(0,))


def test_a_text_shared_by_two_images_is_a_hit_for_either():
  # Images 0 and 1 both have caption 0; image 2 has caption 1.
  images = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
  texts = np.array([[0.0, 1.0], [1.0, 0.0]])  # text 0 looks like image 2: wrong
  pairs = np.array([[0, 0], [1, 0], [2, 1]])
  got = retrieval.recall_at_k(images, texts, pairs=pairs, ks=(1, 2))
  # t2i: text 0's best correct image (1: score 0.1) has image 2 (1.0) above
  # it -> rank 1; text 1's only image (2: score 0) has images 0 (1.0) and
  # 1 (0.9) above -> rank 2.
  assert got["t2i_R@1"] == 0.0 and got["t2i_R@2"] == 0.5
  # i2t: image 0's text 0 scores 0 < text 1 (1) -> rank 1; image 1: 0.1 < 0.9
  # -> rank 1; image 2: text 1 scores 0 < text 0 (1) -> rank 1.
  assert got["i2t_R@1"] == 0.0 and got["i2t_R@2"] == 1.0
  # One copy of text 0 per image instead (the text_image form): the copy
  # belonging to image 0 (score 0) now has images 1 and 2 above it -> a miss
  # at K=2; only image 1's copy (rank 1) is a hit.
  one = retrieval.recall_at_k(images, texts[[0, 0, 1]], np.array([0, 1, 2]), ks=(1, 2))
  assert one["t2i_R@2"] == 1 / 3


def test_pairs_must_cover_every_text_and_stay_in_range():
  x = np.eye(2)
  with pytest.raises(errors.DataError, match="at least one image"):
    retrieval.recall_at_k(x, x, pairs=np.array([[0, 0]]))
  with pytest.raises(errors.DataError, match="outside"):
    retrieval.recall_at_k(x, x, pairs=np.array([[0, 0], [2, 1]]))
  with pytest.raises(errors.ConfigError, match="exactly one"):
    retrieval.recall_at_k(x, x, np.array([0, 1]), pairs=np.array([[0, 0], [1, 1]]))
