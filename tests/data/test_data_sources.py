"""ArraySource (resumable train order, padded eval), prefetch, digits, TF-free import."""
import subprocess
import sys

import numpy as np
import pytest

from jssl.data import ArraySource, digits, prefetch


def _source(n=50, **kw):
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
  return ArraySource(images, np.arange(n) % 7, **kw)


def _take(it, k):
  return [next(it) for _ in range(k)]


def test_train_batches_resume_exactly():
  src = _source()
  full = _take(src.train_batches(8, seed=3), 14)  # 6 steps per epoch: crosses 2 epochs
  resumed = _take(src.train_batches(8, seed=3, start_step=9), 5)
  for a, b in zip(full[9:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  b0 = full[0]
  assert b0["image"].shape == (8, 2, 2, 1) and b0["image"].dtype == np.uint8
  assert b0["label"].dtype == np.int32
  np.testing.assert_array_equal(b0["label"], b0["image"][:, 0, 0, 0] % 7)
  # Each epoch visits distinct examples (drop remainder: 48 of 50), epochs differ.
  epoch0 = np.concatenate([b["image"][:, 0, 0, 0] for b in full[:6]])
  epoch1 = np.concatenate([b["image"][:, 0, 0, 0] for b in full[6:12]])
  assert len(set(epoch0)) == 48 and not np.array_equal(epoch0, epoch1)
  other = next(src.train_batches(8, seed=4))
  assert not np.array_equal(other["image"], b0["image"])


def test_train_processes_split_the_global_batch():
  one = next(_source().train_batches(8, seed=0))["image"][:, 0, 0, 0]
  parts = [next(_source(process_index=p, process_count=2).train_batches(4, seed=0))
           for p in range(2)]
  got = np.concatenate([p["image"][:, 0, 0, 0] for p in parts])
  np.testing.assert_array_equal(np.sort(got), np.sort(one))  # same global batch


@pytest.mark.parametrize("count", [1, 3])
def test_eval_batches_pad_and_mask(count):
  seen, lengths = [], []
  for p in range(count):
    batches = list(_source(n=23, process_index=p, process_count=count).eval_batches(4))
    lengths.append(len(batches))
    for b in batches:
      assert b["image"].shape == (4, 2, 2, 1) and b["mask"].dtype == bool
      assert (b["image"][~b["mask"]] == 0).all()
      seen.extend(b["image"][b["mask"], 0, 0, 0].tolist())
  assert len(set(lengths)) == 1  # every process yields the same number of batches
  assert sorted(seen) == list(range(23))  # every example exactly once


def test_prefetch_preserves_order_and_errors():
  assert list(prefetch(iter(range(10)), 2)) == list(range(10))

  def broken():
    yield 1
    raise RuntimeError("boom")

  it = prefetch(broken(), 2)
  assert next(it) == 1
  with pytest.raises(RuntimeError, match="boom"):
    next(it)
  src = prefetch(_source().train_batches(8, seed=0), 3)
  np.testing.assert_array_equal(next(src)["image"],
                                next(_source().train_batches(8, seed=0))["image"])
  src.close()


def test_digits():
  tr_x, tr_y, te_x, te_y = digits.load_digits(size=16)
  assert tr_x.shape == (1347, 16, 16, 3) and te_x.shape == (450, 16, 16, 3)
  assert tr_x.dtype == np.uint8 and tr_x.max() == 255 and tr_x.min() == 0
  assert (tr_x[..., 0] == tr_x[..., 2]).all()
  assert set(np.unique(tr_y)) == set(range(10)) and np.bincount(te_y).min() >= 43  # stratified
  again = digits.load_digits(size=16)
  np.testing.assert_array_equal(again[2], te_x)
  ds = digits.load_arrays("digits", size=8)
  assert ds.train_images.shape[1:] == (8, 8, 3) and ds.num_classes == 10
  assert 0.2 < ds.mean[0] < 0.4 and len(ds.std) == 3
  with pytest.raises(ValueError, match="digits"):
    digits.load_arrays("imagenet")


def test_import_without_tensorflow():
  code = """
import sys
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
      raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import jssl.data, jssl.data.tf_ops, jssl.data.offline, jssl.data.tfds_source
src = jssl.data.ArraySource(jssl.data.load_digits(8)[0], jssl.data.load_digits(8)[1])
next(src.train_batches(4, seed=0))
assert not [m for m in sys.modules if m.startswith('tensorflow')]
"""
  subprocess.run([sys.executable, "-c", code], check=True)


def test_digits_resize_matches_jax_image_resize_without_starting_jax():
  import jax
  from jssl.data import digits
  x = np.random.default_rng(0).uniform(0, 255, (3, 8, 8)).astype(np.float32)
  for size in (5, 16, 24):
    np.testing.assert_allclose(
        digits._resize_bilinear(x, size),  # pylint: disable=protected-access
        np.asarray(jax.image.resize(x, (3, size, size), "linear", antialias=True)),
        atol=2e-3)


def test_closing_prefetch_waits_for_its_thread():
  """A producer still making a batch when the consumer closes must be joined:
  left running, it calls into XLA while the interpreter exits (SIGABRT)."""
  import threading  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from jssl.data import sources  # pylint: disable=import-outside-toplevel

  def slow():
    yield 0
    time.sleep(0.5)  # the producer is busy here when the consumer closes
    yield 1

  before = set(threading.enumerate())
  it = sources.prefetch(slow(), size=1)
  assert next(it) == 0
  time.sleep(0.05)
  it.close()
  assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
