"""Image-caption data (issue 15): caption choice, exact resume, process shards,
the digits caption generator, folder / npz loading and one error per bad input."""
import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from jssl import errors
from jssl.data import caption_sets, captions, loader

L = 24


def tok(texts):
  """Stand-in tokenizer: the byte-level ids of the shared interface (0 pad, 1 BOS,
  2 EOS, byte b -> b + 3), truncated to L with the EOS kept."""
  out = np.zeros((len(texts), L), np.int32)
  for i, t in enumerate(texts):
    ids = [1] + [b + 3 for b in t.encode()][:L - 2] + [2]
    out[i, :len(ids)] = ids
  return out


def untok(row):
  return bytes(int(x) - 3 for x in row if x > 2).decode()


def _take(it, n):
  return [next(it) for _ in range(n)]


def _coded(n, size=4):
  """Images whose pixel (0, 0, 0) is their index; captions 'img i cap c'."""
  images = np.zeros((n, size, size, 3), np.uint8)
  images[:, 0, 0, 0] = np.arange(n)
  caps = [[f"img {i} cap {c}" for c in range(1 + i % 4)] for i in range(n)]
  return images, caps


def _config(**data):
  return ml_collections.ConfigDict(dict(
      seed=3, batch_size=8, data=dict(dict(workers=2, captions_per_image=1), **data),
      eval=dict(image_size=6, crop_fraction=1.0), views=dict(image_size=5)))


# --- caption choice ----------------------------------------------------------

def test_caption_picks_rank_then_cycle():
  counts = np.array([1, 3, 5, 2])
  p = captions.caption_picks(counts, np.array([10, 11, 12, 13]), seed=0, epoch=0, k=3)
  assert p.shape == (4, 3)
  assert p[0].tolist() == [0, 0, 0]                   # one caption: repeated
  assert sorted(p[1].tolist()) == [0, 1, 2]            # n == k: each once
  assert len(set(p[2].tolist())) == 3 and p[2].max() < 5  # n > k: distinct
  assert sorted(p[3, :2].tolist()) == [0, 1] and p[3, 2] == p[3, 0]  # n < k: cycle
  # A pure function of (seed, epoch, example): not of the batch it sits in.
  alone = captions.caption_picks(counts[2:3], np.array([12]), seed=0, epoch=0, k=3)
  np.testing.assert_array_equal(alone[0], p[2])
  # Over epochs every caption of an example gets used (K = 1).
  seen = {int(captions.caption_picks([5], [12], seed=0, epoch=e, k=1)[0, 0])
          for e in range(40)}
  assert seen == set(range(5))
  other = [captions.caption_picks([5], [12], seed=s, epoch=0, k=5)[0].tolist()
           for s in range(6)]
  assert len({tuple(o) for o in other}) > 1            # the seed matters
  with pytest.raises(ValueError, match="needs a caption"):
    captions.caption_picks([2, 0], [0, 1], seed=0, epoch=0, k=1)


# --- order, resume, processes --------------------------------------------------

def _spec(b, **kw):
  return loader.LoaderSpec(b, seed=3, workers=2, **kw)


def _check_batches(batches, src, k):
  for bt in batches:
    idx = bt["image"][:, 0, 0, 0]
    assert bt["text"].shape == (len(idx), k, L) and bt["text"].dtype == np.int32
    for i, rows in zip(idx, bt["text"]):
      texts = [untok(r) for r in rows]
      assert all(t in src.captions[i] for t in texts)  # captions of that image
      n = len(src.captions[i])
      assert len(set(texts)) == min(n, k)              # repeats only when n < k
    if src.labels is not None:
      np.testing.assert_array_equal(bt["label"], src.labels[idx])


@pytest.mark.parametrize("k", [1, 3])
def test_resume_equals_uninterrupted_run(k):
  images, caps = _coded(30)
  src = captions.CaptionSource(images, caps, np.arange(30) % 4)
  full = _take(src.train_batches(_spec(8), k=k, tokenize=tok), 9)  # 3 steps/epoch: 3 epochs
  _check_batches(full, src, k)
  resumed = _take(src.train_batches(_spec(8), k=k, tokenize=tok, start_step=4), 5)
  for a, b in zip(full[4:], resumed):
    for key in ("image", "text", "label"):
      np.testing.assert_array_equal(a[key], b[key])
  # An epoch holds distinct images; epochs differ in order and in captions drawn.
  ep0 = np.concatenate([b["image"][:, 0, 0, 0] for b in full[:3]])
  assert len(set(ep0.tolist())) == 24
  text_of = lambda bs: {int(i): tuple(untok(r) for r in t)  # noqa: E731
                        for b in bs for i, t in zip(b["image"][:, 0, 0, 0], b["text"])}
  e0, e1 = text_of(full[:3]), text_of(full[3:6])
  both = [i for i in e0 if i in e1 and len(caps[i]) > k]
  assert any(e0[i] != e1[i] for i in both)


def test_two_processes_split_the_global_batch():
  images, caps = _coded(30)
  src = captions.CaptionSource(images, caps)
  one = _take(src.train_batches(_spec(8), k=2, tokenize=tok, start_step=2), 3)
  parts = [_take(src.train_batches(_spec(4, process_index=p, process_count=2), k=2,
                                   tokenize=tok, start_step=2), 3) for p in range(2)]
  for s in range(3):
    a, b = parts[0][s], parts[1][s]
    assert not set(a["image"][:, 0, 0, 0]) & set(b["image"][:, 0, 0, 0])  # disjoint
    # Together exactly the global batch, rows in order, captions included.
    for key in ("image", "text"):
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), one[s][key])
  assert "label" not in one[0]


def _write_folder(root, n, *, per_image=2, seed=0, sub=True):
  rng = np.random.default_rng(seed)
  os.makedirs(root / "a", exist_ok=True)
  rows = []
  for i in range(n):
    h, w = rng.integers(6, 14, 2)
    arr = np.full((h, w, 3), i * 7 % 256, np.uint8)
    name = f"a/im{i}.png" if sub and i % 2 else f"im{i}.png"
    Image.fromarray(arr).save(root / name)
    rows += [{"file": name, "caption": f"picture {i} number {c}"} for c in range(per_image)]
  (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(root)


def test_folder_resume_and_processes(tmp_path):
  src_folder, caps = captions.load_folder(_write_folder(tmp_path / "d", 12))
  src = captions.CaptionSource(src_folder, caps, size=5)
  assert src.image_shape == (5, 5, 3) and src.num_examples == 12
  full = _take(src.train_batches(_spec(4), k=2, tokenize=tok), 5)
  assert full[0]["image"].shape == (4, 5, 5, 3)
  for b in full:  # each image (grey level 7i) comes with its own captions
    for im, t in zip(b["image"], b["text"]):
      i = int(im[0, 0, 0]) // 7
      assert {untok(r) for r in t} == {f"picture {i} number 0", f"picture {i} number 1"}
  resumed = _take(src.train_batches(_spec(4), k=2, tokenize=tok, start_step=3), 2)
  for a, b in zip(full[3:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["text"], b["text"])
  parts = [next(src.train_batches(_spec(2, process_index=p, process_count=2), k=2,
                                  tokenize=tok)) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([p["text"] for p in parts]), full[0]["text"])


# --- the digits caption set -----------------------------------------------------

def test_digits_caption_sets():
  a, b = caption_sets.TRAIN_TEMPLATES, caption_sets.HELDOUT_TEMPLATES
  assert not set(a) & set(b)
  labels = np.arange(40) % 10
  images = np.random.default_rng(0).integers(0, 255, (40, 4, 4, 3)).astype(np.uint8)
  tr = caption_sets.digits_captions(labels, images)
  te = caption_sets.digits_captions(labels, images, heldout=True)
  assert tr == caption_sets.digits_captions(labels, images)  # pure function of the seed
  assert tr != caption_sets.digits_captions(labels, images, seed=1)
  train_strings = {c for cs in tr for c in cs}
  all_train = {caption_sets.fill(t, c, numeral=n, thick=w) for t in a for c in range(10)
               for n in (0, 1) for w in (0, 1)}
  assert train_strings <= all_train and not {c for cs in te for c in cs} & all_train
  for label, cs in zip(labels, tr):
    assert len(cs) == 5 == len(set(cs))
    # Every caption names its class, as a word or a numeral.
    words = [(caption_sets.DIGIT_WORDS[label] in c.replace(",", " ").split()
              or str(label) in c.replace(",", " ").split()) for c in cs]
    assert all(words), cs
  both = [c for cs in tr for c in cs]
  assert any("seven" in c for c in both) and any(" 7" in c for c in both)
  assert caption_sets.fill("a {n}", 8, numeral=False, thick=True) == "an eight"
  assert caption_sets.fill("an {n}", 7, numeral=True, thick=True) == "a 7"
  for t in caption_sets.ZERO_SHOT_TEMPLATES:  # prompts: one '{}', no article before it
    assert t.count("{}") == 1 and " a {}" not in t and " an {}" not in t
    assert t.replace("{}", "{n}") in b


def test_build_digits_captions():
  c = _config(source="digits_captions", kwargs=dict(size=8), captions_per_image=2)
  c.eval.image_size = 6
  d = captions.build(c, 8, 16, tok)
  assert d.num_train == 1347 and d.num_classes == 10 and d.image_shape == (8, 8, 3)
  assert d.batch_spec["text"].shape == (8, 2, L) and d.batch_spec["label"].shape == (8,)
  assert d.captions_per_image == 2
  h = d.heldout
  assert h.images.shape == (450, 6, 6, 3) and h.labels.shape == (450,) and not h.skipped
  assert h.class_names[7] == "seven" and len(h.captions) == 450
  assert h.templates == list(caption_sets.ZERO_SHOT_TEMPLATES)
  b = next(d.train_batches(0))
  assert b["image"].shape == (8, 8, 8, 3) and b["text"].shape == (8, 2, L)
  word = caption_sets.DIGIT_WORDS[int(b["label"][0])]
  assert any(word in untok(r) or str(int(b["label"][0])) in untok(r) for r in b["text"][0])
  with pytest.raises(errors.ConfigError, match="captions_per_image=0"):
    captions.build(_config(source="digits_captions", captions_per_image=0), 8, 8, tok)
  with pytest.raises(errors.ConfigError, match="data.source='shapes'"):
    captions.build(_config(source="shapes"), 8, 8, tok)


# --- folder and npz -----------------------------------------------------------

def test_build_folder_with_and_without_eval(tmp_path):
  train = _write_folder(tmp_path / "tr", 10)
  d = captions.build(_config(source="folder", path=train), 4, 4, tok)
  assert d.num_train == 10 and d.num_classes is None and d.image_shape == (5, 5, 3)
  assert set(d.batch_spec) == {"image", "text"}
  assert d.heldout.num_examples == 0 and "eval_path" in d.heldout.skipped
  ev = _write_folder(tmp_path / "ev", 3, per_image=1, seed=1)
  d = captions.build(_config(source="folder", path=train, eval_path=ev), 4, 4, tok)
  h = d.heldout
  assert h.images.shape == (3, 6, 6, 3) and not h.skipped and h.labels is None
  by_grey = {int(im[0, 0, 0]) // 7: cs for im, cs in zip(h.images, h.captions)}
  assert by_grey == {i: [f"picture {i} number 0"] for i in range(3)}


def _rows(root, lines):
  (root / "captions.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("lines,match", [
    (['{"file": "im0.png", "caption": "x"}', '{"file": "im1.png", "caption": "y"'],
     r"line 2: not valid JSON"),
    (['{"file": "im0.png", "caption": "x"}', '["im1.png", "y"]'], r"line 2: expected"),
    (['{"file": "im0.png", "caption": "x"}', '{"file": "im1.png", "caption": "  "}'],
     r"line 2: empty caption for 'im1.png'"),
    (['{"file": "im0.png", "caption": "x"}', '{"file": "nope.png", "caption": "y"}'],
     r"line 2: names 'nope.png', which is not"),
    (['{"file": "im0.png", "caption": "x"}'], r"1 image\(s\) .* no caption .*im1.png"),
    ([''], r"has no caption rows"),
])
def test_folder_errors_name_file_and_line(tmp_path, lines, match):
  root = tmp_path / "d"
  root.mkdir()
  for i in range(2):
    Image.new("RGB", (4, 4)).save(root / f"im{i}.png")
  _rows(root, lines)
  with pytest.raises(errors.DataError, match=match) as e:
    captions.load_folder(str(root))
  assert "\n" not in str(e.value) and str(root) in str(e.value)


def test_folder_without_captions_file(tmp_path):
  with pytest.raises(errors.DataNotFoundError, match="no such directory"):
    captions.load_folder(str(tmp_path / "missing"))
  Image.new("RGB", (4, 4)).save(tmp_path / "im.png")
  with pytest.raises(errors.DataNotFoundError, match="has no captions.jsonl") as e:
    captions.load_folder(str(tmp_path))
  assert "\n" not in str(e.value)


def test_npz_sources(tmp_path):
  images, _ = _coded(12, size=6)
  p = tmp_path / "k.npz"
  caps = np.array([[f"a {i}", f"b {i}" if i % 3 else ""] for i in range(12)])
  np.savez(p, images=images, captions=caps, labels=np.arange(12) % 3,
           class_names=np.array(["cat", "dog", "emu"]))
  im, labels, cs, names = captions.load_npz(str(p))
  assert cs[0] == ["a 0"] and cs[1] == ["a 1", "b 1"]  # '' is padding
  assert names == ["cat", "dog", "emu"] and labels.tolist() == (np.arange(12) % 3).tolist()
  ev = tmp_path / "ev.npz"
  np.savez(ev, images=images[:5, :4, :4], captions=np.array([f"e {i}" for i in range(5)]))
  d = captions.build(_config(source="npz", path=str(p), eval_path=str(ev),
                             captions_per_image=2), 4, 4, tok)
  assert d.num_classes == 3 and d.image_shape == (6, 6, 3)   # npz trains at its own size
  assert d.batch_spec["label"].shape == (8,)
  h = d.heldout
  assert h.images.shape == (5, 6, 6, 3) and h.captions == [[f"e {i}"] for i in range(5)]
  assert h.class_names == ["cat", "dog", "emu"] and h.labels is None
  b = next(d.train_batches(0))
  for i, t in zip(b["image"][:, 0, 0, 0], b["text"]):
    assert [untok(r) for r in t][:1][0] in cs[i]


@pytest.mark.parametrize("arrays,match", [
    (dict(), r"has no array 'captions'"),
    (dict(captions=np.array(["x"] * 3)), r"'captions' is \[3\]; expected \[N\] or \[N, K\]"),
    (dict(captions=np.array(["x", "", "y", "z"])), r"image 1 has an empty caption"),
    (dict(captions=np.array([["x", ""], ["", ""], ["y", ""], ["z", ""]])),
     r"image 1 has no caption"),
    (dict(captions=np.array(["x", 1, "y", "z"], dtype=object)), r"is an object array"),
    (dict(captions=np.arange(4)), r"expected a str array"),
])
def test_npz_errors(tmp_path, arrays, match):
  p = tmp_path / "bad.npz"
  np.savez(p, images=np.zeros((4, 3, 3, 3), np.uint8), **arrays)
  with pytest.raises(errors.DataError, match=match) as e:
    captions.load_npz(str(p), field="config.data.eval_path")
  assert str(p) in str(e.value) and "config.data.eval_path" in str(e.value)
  assert "\n" not in str(e.value)


def test_unset_path_and_too_large_batch(tmp_path):
  with pytest.raises(errors.ConfigError, match="config.data.path is unset"):
    captions.build(_config(source="folder", path=None), 4, 4, tok)
  train = _write_folder(tmp_path / "tr", 5)
  with pytest.raises(errors.ConfigError, match="batch_size=8 > the 5"):
    captions.build(_config(source="folder", path=train), 8, 8, tok)


# --- shapes_captions ------------------------------------------------------------

_OBJ = r"(?:(small|large) )?(red|green|blue|yellow|purple|white) (circle|square|triangle)"


def _blob(image, colour, region=None):
  """(area, bbox fill ratio) of the pixels of `colour` (in `region` slices)."""
  im = image if region is None else image[region]
  mask = (im == np.array(caption_sets.COLOURS[colour], np.uint8)).all(-1)
  ys, xs = np.nonzero(mask)
  box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
  return int(mask.sum()), mask.sum() / box


def _shape_of(fill):
  return "square" if fill > 0.97 else "circle" if fill > 0.6 else "triangle"


def test_shapes_captions_deterministic_and_name_what_is_drawn():
  import re
  sets = caption_sets
  a = sets.shapes_captions(60, seed=1)
  b = sets.shapes_captions(60, seed=1)
  np.testing.assert_array_equal(a[0], b[0])
  assert a[1] == b[1] and a[0].shape == (60, 32, 32, 3) and a[0].dtype == np.uint8
  assert not np.array_equal(sets.shapes_captions(60, seed=2)[0], a[0])
  images, caps, labels, scenes = a
  singles = 0
  for im, cs, label, scene in zip(images, caps, labels, scenes):
    objs = scene["objects"]
    assert len(cs) == 3 and len(set(cs)) == 3
    for c in cs:
      named = re.findall(_OBJ, c)
      assert len(named) == len(objs), c
      if len(objs) == 1:
        size, colour, shape = named[0]
        o = objs[0]
        # The centre pixel has the named colour; area and outline give size and shape.
        assert tuple(im[o["cy"], o["cx"]]) == sets.COLOURS[colour], c
        area, fill = _blob(im, colour)
        assert _shape_of(fill) == shape, (c, fill)
        assert size in ("", "large" if area > 80 else "small"), (c, area)
        assert sets.SHAPE_CLASSES[label] == f"{colour} {shape}"
        continue
      rel = next(r for r in sets.RELATIONS if f" {r} " in c)
      ok = False
      for oa, ob in ((objs[0], objs[1]), (objs[1], objs[0])):
        colours = (tuple(im[oa["cy"], oa["cx"]]), tuple(im[ob["cy"], ob["cx"]]))
        dy, dx = oa["cy"] - ob["cy"], oa["cx"] - ob["cx"]
        where = {"above": dy < 0, "below": dy > 0, "to the left of": dx < 0,
                 "to the right of": dx > 0}[rel]
        ok |= (where and colours == (sets.COLOURS[named[0][1]], sets.COLOURS[named[1][1]])
               and (oa["shape"], ob["shape"]) == (named[0][2], named[1][2])
               and all(n[0] in ("", o["size"]) for n, o in zip(named, (oa, ob))))
      assert ok, (c, scene)
    singles += len(objs) == 1
    assert (label >= 0) == (len(objs) == 1)
  assert 10 < singles < 50
  # Two shapes sit in different halves and both are visible.
  two = [(im, s) for im, s in zip(images, scenes) if len(s["objects"]) == 2]
  assert all(tuple(im[o["cy"], o["cx"]]) == sets.COLOURS[o["colour"]]
             for im, s in two for o in s["objects"])


def test_shapes_heldout_combinations_are_new():
  import re
  sets = caption_sets
  _, train_caps, _, train_scenes = sets.shapes_captions(400, seed=0)
  images, caps, labels, scenes = sets.shapes_captions(24, seed=0, heldout=True)
  seen = {(o["shape"], o["colour"]) for s in train_scenes for o in s["objects"]}
  assert seen == set(sets.TRAIN_PAIRS) and not seen & set(sets.HELDOUT_PAIRS)
  assert {s for s, _ in seen} == set(sets.SHAPES) and {c for _, c in seen} == set(sets.COLOURS)
  named_train = {(s, c) for cs in train_caps for t in cs for _, c, s in re.findall(_OBJ, t)}
  assert named_train == seen
  held = {(o["shape"], o["colour"], o["size"]) for s in scenes for o in s["objects"]}
  assert held == {(s, c, z) for s, c in sets.HELDOUT_PAIRS for z in sets.SIZES}
  assert all(len(s["objects"]) == 1 for s in scenes)
  assert {sets.SHAPE_CLASSES[i] for i in labels} == {f"{c} {s}" for s, c in sets.HELDOUT_PAIRS}
  for im, label, s in zip(images, labels, scenes):
    o = s["objects"][0]
    assert tuple(im[o["cy"], o["cx"]]) == sets.COLOURS[o["colour"]]
  # Held-out wording: no held-out caption or prompt is a training string or template.
  flat_train = {t for cs in train_caps for t in cs}
  assert not flat_train & {t for cs in caps for t in cs}
  prompts = [t.format(n) for t in sets.SHAPES_ZERO_SHOT_TEMPLATES for n in sets.SHAPE_CLASSES]
  assert not flat_train & set(prompts)
  assert not set(sets.SHAPES_HELDOUT_TEMPLATES) & set(sets.SHAPES_TRAIN_TEMPLATES)
  with pytest.raises(ValueError, match="per_image=9"):
    sets.shapes_captions(2, per_image=9)


def test_build_shapes_captions():
  c = _config(source="shapes_captions", captions_per_image=2,
              kwargs=dict(num_train=40, num_test=12, size=16))
  c.batch_size = 8
  d = captions.build(c, 8, 8, tok)
  assert d.num_train == 40 and d.num_classes is None and d.image_shape == (16, 16, 3)
  assert set(d.batch_spec) == {"image", "text"} and d.batch_spec["text"].shape == (8, 2, L)
  bt = next(d.train_batches(0))
  assert bt["image"].shape == (8, 16, 16, 3) and bt["text"].shape == (8, 2, L)
  h = d.heldout
  assert h.images.shape == (12, 6, 6, 3) and h.class_names == list(caption_sets.SHAPE_CLASSES)
  assert h.templates == list(caption_sets.SHAPES_ZERO_SHOT_TEMPLATES) and not h.skipped
  assert [h.class_names[i] for i in h.labels[:6]] == [
      f"{col} {s}" for s, col in caption_sets.HELDOUT_PAIRS]
  c.data.kwargs = dict(num_train=40, colours=3)
  with pytest.raises(errors.ConfigError, match=r"\['colours'\]"):
    captions.build(c, 8, 8, tok)
  c.data.kwargs = dict(num_train=40, size=8)
  with pytest.raises(errors.ConfigError, match="size=8"):
    captions.build(c, 8, 8, tok)
