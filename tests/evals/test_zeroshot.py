"""Zero-shot classifier weights and accuracy (jssl/evals/zeroshot.py), hand-checked."""
import numpy as np
import pytest

from jssl import errors
from jssl.evals import zeroshot
from jssl.text import tokenizers

TOK = tokenizers.make(dict(name="bytes", path="", context_length=16))


def _decode(row):
  """Inverse of the bytes tokenizer: the text between BOS and EOS."""
  row = list(row)
  return bytes(i - 3 for i in row[1:row.index(2)]).decode()


def _embedder(table, calls=None):
  def embed(tokens):
    assert tokens.dtype == np.int32
    if calls is not None:
      calls.append(tokens.shape)
    return np.stack([np.asarray(table[_decode(r)], np.float32) for r in tokens])
  return embed


TABLE = {"a cat": [3, 4], "the cat": [0, 2], "a dog": [-1, 0], "the dog": [-5, 0]}


def test_class_embeddings_by_hand():
  calls = []
  w = zeroshot.class_embeddings(_embedder(TABLE, calls), TOK, ["cat", "dog"],
                                ["a {}", "the {}"], batch_size=3)
  # cat: normalise([3,4]) = [.6,.8], normalise([0,2]) = [0,1]; mean [.3,.9]; / sqrt(.9).
  # dog: both normalise to [-1, 0]; mean [-1, 0].
  np.testing.assert_allclose(w, [[0.3 / np.sqrt(0.9), 0.9 / np.sqrt(0.9)], [-1, 0]], rtol=1e-6)
  assert w.dtype == np.float32
  # 4 prompts in batches of 3: the last batch is padded to 3 rows (one shape to jit).
  assert calls == [(3, 16), (3, 16)]
  calls.clear()
  w2 = zeroshot.class_embeddings(_embedder(TABLE, calls), TOK, ["cat", "dog"],
                                 ["a {}", "the {}"], batch_size=3, pad_batches=False)
  assert calls == [(3, 16), (1, 16)]
  np.testing.assert_allclose(w2, w, rtol=1e-6)


def test_class_embeddings_errors():
  embed = _embedder(TABLE)
  with pytest.raises(errors.ConfigError, match="class names are empty"):
    zeroshot.class_embeddings(embed, TOK, [], ["a {}"])
  with pytest.raises(errors.ConfigError, match="'a photo'.*exactly one"):
    zeroshot.class_embeddings(embed, TOK, ["cat"], ["a {}", "a photo"])
  with pytest.raises(errors.ConfigError, match="templates are empty"):
    zeroshot.class_embeddings(embed, TOK, ["cat"], [])
  with pytest.raises(errors.DataError, match=r"embed_texts returned shape \(2,\)"):
    zeroshot.class_embeddings(lambda t: np.zeros(2), TOK, ["cat", "dog"], ["a {}"])


def test_accuracy_by_hand_with_pessimistic_ties():
  classes = np.eye(3)
  images = np.array([[1.0, 0.0, 0.0],    # label 0: best -> rank 0
                     [0.5, 0.6, 0.0],    # label 0: class 1 scores higher -> rank 1
                     [0.2, 0.2, 0.9]])   # label 1: class 0 TIES (counts above), 2 above -> rank 2
  labels = np.array([0, 0, 1])
  acc = zeroshot.zeroshot_accuracy(images, classes, labels, ks=(1, 2, 5))
  assert acc == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}  # no top5: 5 >= C
  assert zeroshot.zeroshot_accuracy(images, classes, labels, ks=(1, 2), block_size=1) == acc
  # A constant model is not rewarded by ties.
  const = zeroshot.zeroshot_accuracy(np.ones((4, 3)), np.ones((3, 3)), np.array([0, 1, 2, 0]),
                                     ks=(1, 2))
  assert const == {"top1": 0.0, "top2": 0.0}


def test_accuracy_errors():
  with pytest.raises(errors.DataError, match="label 3 is outside"):
    zeroshot.zeroshot_accuracy(np.ones((2, 3)), np.eye(3), np.array([0, 3]))
  with pytest.raises(errors.DataError, match="label -1 is outside"):
    zeroshot.zeroshot_accuracy(np.ones((2, 3)), np.eye(3), np.array([-1, 0]))
  with pytest.raises(errors.DataError, match="same D"):
    zeroshot.zeroshot_accuracy(np.ones((2, 4)), np.eye(3), np.array([0, 0]))
  with pytest.raises(errors.DataError, match="shape"):
    zeroshot.zeroshot_accuracy(np.ones((2, 3)), np.eye(3), np.array([0, 0, 0]))
  with pytest.raises(errors.ConfigError, match="class names are empty"):
    zeroshot.zeroshot_accuracy(np.ones((2, 3)), np.zeros((0, 3)), np.array([0, 0]))


def test_end_to_end_with_shipped_templates():
  """CIFAR-10 names x CLIP's 18 templates through a text 'model' that knows
  which class name a prompt contains: every image of class c is classified c."""
  from jssl.text import templates
  names = templates.class_names("cifar10")
  tok = tokenizers.make(dict(name="bytes", path="", context_length=64))
  rng = np.random.default_rng(0)
  basis = rng.normal(size=(10, 8))

  def embed(tokens):
    out = []
    for r in tokens:
      text = _decode(list(r))
      c = next(i for i, n in enumerate(names) if f" {n}." in text)
      out.append(basis[c] + 0.1 * rng.normal(size=8))
    return np.stack(out)

  w = zeroshot.class_embeddings(embed, tok, names, templates.templates("cifar10"), batch_size=64)
  np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1, rtol=1e-5)
  labels = np.repeat(np.arange(10), 3)
  images = basis[labels] + 0.05 * rng.normal(size=(30, 8))
  assert zeroshot.zeroshot_accuracy(images, w, labels)["top1"] == 1.0
