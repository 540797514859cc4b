"""Image-caption TFDS source on mock data: shapes, exact resume, process shards.

Training runs on laion400m/images (variable-size images, one scalar 'caption'):
the mock of coco_captions' nested caption sequence is inconsistent when images
are read undecoded (the mock draws different lengths for 'captions/text' and
'captions/id' and fails its own encoding), so its nested 'captions/text' is
tested through the held-out set, which reads decoded examples."""
import ml_collections
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from jssl import errors  # noqa: E402
from jssl.data import captions, tfds_source  # noqa: E402

L = 20


def tok(texts):
  out = np.zeros((len(texts), L), np.int32)
  for i, t in enumerate(texts):
    ids = [1] + [b + 3 for b in t.encode()][:L - 2] + [2]
    out[i, :len(ids)] = ids
  return out


def _take(it, n):
  return [next(it) for _ in range(n)]


KW = dict(data_dir=None, text_feature="caption", image_size=8, k=2, tokenize=tok, seed=5)
DS = "laion400m/images"


def test_tfds_caption_batches_resume_and_shards(monkeypatch):
  with tfds.testing.mock_data(num_examples=10):
    full = _take(captions.tfds_train_batches(DS, "train",
                                             batch_size_per_process=4, **KW), 7)
    b = full[0]
    assert b["image"].shape == (4, 8, 8, 3) and b["image"].dtype == np.uint8
    assert b["text"].shape == (4, 2, L) and b["text"].dtype == np.int32
    assert set(b) == {"image", "text"}
    # One caption per image, K = 2: the caption is repeated (only then).
    assert all(np.array_equal(r[0], r[1]) for bt in full for r in bt["text"])
    assert (b["text"][:, 0, 0] == 1).all() and (b["text"][:, 0] > 2).sum() >= 4 * 10
    # Resume at step 3 (mid-epoch 1 of 2-step epochs) = the uninterrupted run.
    resumed = _take(captions.tfds_train_batches(DS, "train", start_step=3,
                                                batch_size_per_process=4, **KW), 4)
    for a, r in zip(full[3:], resumed):
      np.testing.assert_array_equal(a["image"], r["image"])
      np.testing.assert_array_equal(a["text"], r["text"])
    # Two processes: each reads its own half of the split (the mock serves the
    # same examples for any slice, so the slice asked for is what is checked).
    asked = []
    real = tfds_source._as_dataset  # pylint: disable=protected-access

    def spy(name, data_dir, **kw):
      asked.append(str(kw["split"]))
      return real(name, data_dir, **kw)

    monkeypatch.setattr(tfds_source, "_as_dataset", spy)
    for p in range(2):
      asked.clear()
      part = _take(captions.tfds_train_batches(
          DS, "train", batch_size_per_process=2, process_index=p, process_count=2, **KW), 2)
      assert asked[0] == str(tfds.split_for_jax_process("train", process_index=p,
                                                        process_count=2))
      assert "index=%d, count=2" % p in asked[0] and part[0]["text"].shape == (2, 2, L)
    # The caption stays with its image across epochs and shuffles.
    by_image = {}
    for bt in full:
      for im, t in zip(bt["image"], bt["text"]):
        by_image.setdefault(im.tobytes(), set()).add(t.tobytes())
    assert all(len(v) == 1 for v in by_image.values()) and len(by_image) > 4


def test_build_tfds_captions():
  c = ml_collections.ConfigDict(dict(
      seed=0, batch_size=4, data=dict(source="tfds", name="coco_captions", data_dir=None,
                                      train_split="train", test_split="val",
                                      text_feature="captions/text", captions_per_image=1),
      eval=dict(image_size=6, crop_fraction=1.0), views=dict(image_size=8)))
  with tfds.testing.mock_data(num_examples=6):
    d = captions.build(c, 4, 4, tok)
    assert d.num_train == 6 and d.num_classes is None and d.image_shape == (8, 8, 3)
    assert d.batch_spec["text"].shape == (4, 1, L)
    h = d.heldout
    assert h.images.shape == (6, 6, 6, 3) and len(h.captions) == 6
    # Every caption of the nested sequence (the mock draws 5 to 49 per image).
    assert all(len(cs) >= 5 and all(isinstance(t, str) and t.strip() for t in cs)
               for cs in h.captions)
    assert h.labels is None and h.class_names is None and not h.skipped
    c.data.text_feature = "captions/words"
    with pytest.raises(errors.ConfigError, match="text_feature='captions/words'"):
      captions.build(c, 4, 4, tok)


def test_unprepared_tfds_dataset_is_one_clear_error(tmp_path):
  c = ml_collections.ConfigDict(dict(
      seed=0, batch_size=4, data=dict(source="tfds", name="coco_captions",
                                      data_dir=str(tmp_path), train_split="train",
                                      test_split="val", text_feature="captions/text"),
      eval=dict(image_size=6, crop_fraction=1.0), views=dict(image_size=8)))
  with pytest.raises(errors.DataNotFoundError, match="'coco_captions' is not prepared") as e:
    captions.build(c, 4, 4, tok)
  assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
