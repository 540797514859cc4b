"""Your own data without TF: folder and npz sources, host crops, exact order on
resume, and one clear error per kind of bad input."""
import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from jssl import errors
from jssl.data import folder, host, loader

SPEC = host.HostCrops(image_size=8, num_views=2)


def make_images(root, *, classes=("cat", "dog", "emu"), per_class=5, flat=False, seed=0):
  """Tiny PNG/JPEG files of varied sizes; class c has mean brightness ~60c."""
  rng = np.random.default_rng(seed)
  for c, name in enumerate(classes):
    d = root if flat else os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    for k in range(per_class):
      h, w = rng.integers(10, 30, 2)
      arr = (rng.integers(0, 40, (h, w, 3)) + 60 * c).astype(np.uint8)
      Image.fromarray(arr).save(os.path.join(d, f"{name}_{k}{'.png' if k % 2 else '.JPG'}"))
  return str(root)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_folder_layouts(tmp_path):
  src = folder.scan_folder(make_images(tmp_path / "lab"))
  assert src.class_names == ("cat", "dog", "emu") and src.num_examples == 15
  np.testing.assert_array_equal(src.labels, np.repeat([0, 1, 2], 5))
  assert all("/dog/" in f for f, l in zip(src.files, src.labels) if l == 1)
  flat = folder.scan_folder(make_images(tmp_path / "flat", flat=True))
  assert flat.labels is None and flat.num_examples == 15
  one = folder.scan_folder(make_images(tmp_path / "one", classes=("images",)))
  assert one.labels is None and one.num_examples == 5  # one class is no label
  # An eval folder takes the training folder's classes by name.
  ev = folder.scan_folder(make_images(tmp_path / "ev", classes=("emu",)),
                          class_names=src.class_names)
  assert set(ev.labels) == {2}


def test_folder_errors_name_the_path(tmp_path):
  def err(kind, path, match, **kw):
    with pytest.raises(kind, match=match) as e:
      folder.scan_folder(str(path), **kw)
    assert str(path) in str(e.value) and "\n" not in str(e.value)

  err(errors.DataNotFoundError, tmp_path / "missing", "no such directory")
  (tmp_path / "empty").mkdir()
  err(errors.DataError, tmp_path / "empty", "is empty")
  (tmp_path / "text").mkdir()
  (tmp_path / "text" / "notes.txt").write_text("x")
  (tmp_path / "text" / "sub").mkdir()
  err(errors.DataError, tmp_path / "text", "no .jpg/.jpeg/.png images")
  mixed = make_images(tmp_path / "mixed")
  Image.new("RGB", (4, 4)).save(os.path.join(mixed, "loose.png"))
  err(errors.DataError, mixed, "mixes images at its top level")
  err(errors.DataError, os.path.join(mixed, "loose.png"), "is a file")
  make_images(tmp_path / "train")
  err(errors.DataError, make_images(tmp_path / "other", classes=("yak",)),
      r"class folders \['yak'\]", class_names=("cat", "dog"))


def test_npz_errors_name_the_field(tmp_path):
  def err(kind, match, **arrays):
    p = tmp_path / f"{len(os.listdir(tmp_path))}.npz"
    if arrays:
      np.savez(p, **arrays)
    with pytest.raises(kind, match=match) as e:
      folder.load_npz(str(p), field="config.data.eval_path")
    assert str(p) in str(e.value) and "config.data.eval_path" in str(e.value)

  good = np.zeros((4, 6, 6, 3), np.uint8)
  err(errors.DataNotFoundError, "no such file")
  err(errors.DataError, r"no array 'images' \(it has \['x'\]\)", x=good)
  err(errors.DataError, "'labels' is int64 \\[3\\]; expected integers \\[N\\] with N = 4",
      images=good, labels=np.arange(3))
  err(errors.DataError, "'images' is float32", images=good.astype(np.float32))
  err(errors.DataError, "'images' is uint8 \\[4, 6, 6\\]", images=good[..., 0])
  err(errors.DataError, "'images' is uint8 \\[4, 6, 6, 2\\]", images=good[..., :2])
  (tmp_path / "bad.npz").write_bytes(b"not a zip")
  with pytest.raises(errors.DataError, match="not a readable .npz"):
    folder.load_npz(str(tmp_path / "bad.npz"))
  images, labels = folder.load_npz(_save(tmp_path / "grey.npz", images=good[..., :1]))
  assert images.shape == (4, 6, 6, 3) and labels is None  # grey repeated to RGB


def _save(p, **arrays):
  np.savez(p, **arrays)
  return str(p)


def test_crop_batches_are_a_function_of_seed_and_step(tmp_path):
  src = folder.scan_folder(make_images(tmp_path))
  spec = loader.LoaderSpec(4, seed=1, workers=2, process_index=0, process_count=1)
  full = _take(loader.crop_batches(src, SPEC, spec), 6)  # 3 steps per epoch: 2 epochs
  resumed = _take(loader.crop_batches(src, SPEC, spec, start_step=4), 2)
  for a, b in zip(full[4:], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  b0 = full[0]
  assert b0["views"].shape == (4, 2, 8, 8, 3) and b0["views"].dtype == np.uint8
  assert b0["label"].dtype == np.int32
  assert not np.array_equal(b0["views"][:, 0], b0["views"][:, 1])  # two different crops
  ev = [list(loader.eval_batches(src, range(15), size=8, crop_fraction=1.0, spec=loader.LoaderSpec(
      4, workers=2, process_index=p, process_count=2))) for p in range(2)]
  assert [len(e) for e in ev] == [2, 2] and ev[0][0]["image"].shape == (4, 8, 8, 3)
  labels = [b["label"][b["mask"]] for e in ev for b in e]
  np.testing.assert_array_equal(np.concatenate(labels), src.labels)  # each once, padded
  # Two processes hold the two halves of the same global batch.
  halves = [next(loader.crop_batches(src, SPEC, loader.LoaderSpec(
      2, seed=1, workers=1, process_index=p, process_count=2))) for p in range(2)]
  for k in b0:
    np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), b0[k])


def test_unreadable_images_are_skipped_with_a_count(tmp_path, caplog):
  root = make_images(tmp_path, flat=True, classes=("a",), per_class=6)
  buf = io.BytesIO()
  Image.fromarray(np.full((40, 40, 3), 9, np.uint8)).save(buf, "JPEG")
  with open(os.path.join(root, "a_2.JPG"), "wb") as f:
    f.write(buf.getvalue()[:200])  # truncated JPEG
  with open(os.path.join(root, "a_3.png"), "wb") as f:
    f.write(b"not an image")
  src = folder.scan_folder(root)
  spec = loader.LoaderSpec(3, seed=0, workers=2, process_index=0, process_count=1)
  with caplog.at_level(logging.WARNING):
    batches = _take(loader.crop_batches(src, SPEC, spec), 4)  # every file read
  assert src.skipped == 2
  warned = [r.getMessage() for r in caplog.records if "skipped unreadable" in r.getMessage()]
  assert len(warned) == 2 and any("a_2.JPG" in m for m in warned)
  assert "2 skipped so far" in warned[-1]
  # A fresh process (resume) replaces them the same way: same batches.
  again = _take(loader.crop_batches(folder.scan_folder(root), SPEC, spec), 4)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a["views"], b["views"])


def test_mixed_channel_counts_become_rgb(tmp_path):
  root = tmp_path / "m"
  root.mkdir()
  Image.fromarray(np.full((9, 12), 7, np.uint8), "L").save(root / "grey.png")
  Image.fromarray(np.full((11, 9, 4), 200, np.uint8), "RGBA").save(root / "alpha.png")
  Image.fromarray(np.full((10, 10, 3), 50, np.uint8)).save(root / "rgb.jpg")
  Image.new("P", (8, 13)).save(root / "palette.png")
  src = folder.scan_folder(str(root))
  b = next(loader.crop_batches(src, SPEC, loader.LoaderSpec(
      4, workers=1, process_index=0, process_count=1)))
  assert b["views"].shape == (4, 2, 8, 8, 3) and "label" not in b


def test_all_images_unreadable_is_one_error(tmp_path):
  for k in range(3):
    (tmp_path / f"{k}.png").write_bytes(b"junk")
  src = folder.scan_folder(str(tmp_path))
  with pytest.raises(errors.DataError, match="no readable image in"):
    next(loader.crop_batches(src, SPEC, loader.LoaderSpec(
        2, workers=1, process_index=0, process_count=1)))


def test_host_crop_geometry():
  """Full-scale, ratio-1 crops of a square image are the image itself, and
  a large JPEG decoded at reduced scale (draft) still gives full-size crops."""
  rng = np.random.default_rng(0)
  arr = rng.integers(0, 255, (16, 16, 3)).astype(np.uint8)
  whole = host.HostCrops(16, 1, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  out = host.crop_views(host.array_image(arr), rng, whole)["views"][0]
  np.testing.assert_array_equal(out, arr)
  buf = io.BytesIO()
  Image.fromarray(np.full((400, 300, 3), 128, np.uint8)).save(buf, "JPEG")
  im = Image.open(buf)
  got = host.crop_views(im, rng, host.HostCrops(16, 2, num_local=3, local_size=6))
  assert im.size[0] < 300 and im.size[1] < 400  # decoded at 1/2^k scale (draft)
  assert got["views"].shape == (2, 16, 16, 3) and got["local_views"].shape == (3, 6, 6, 3)
  assert np.abs(got["views"].astype(int) - 128).max() <= 3
  ev = host.resize_center_crop(Image.fromarray(arr[:, :12]), 8, crop_fraction=1.0)
  assert ev.shape == (8, 8, 3)


def test_train_order_is_the_array_source_order():
  """Folder and in-memory sources share one order rule (so both resume alike)."""
  from jssl.data.sources import ArraySource, TrainOrder  # pylint: disable=import-outside-toplevel
  arrays = ArraySource(np.zeros((50, 1, 1, 1), np.uint8), None, process_index=1,
                       process_count=2)
  order = TrainOrder(50, 8, seed=3, process_index=1, process_count=2)
  for step in range(7):  # 3 steps per epoch: crosses epochs
    np.testing.assert_array_equal(order.indices(step),
                                  arrays.batch_indices(8, seed=3, step=step))
