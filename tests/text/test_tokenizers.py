"""Tokenizers on fixed strings with hand-checked ids (jssl/text/tokenizers.py)."""
import gzip
import io
import json
import logging
import os

import numpy as np
import pytest

from jssl import errors
from jssl.text import tokenizers


def _make(name, path="", length=12, **kw):
  return tokenizers.make(dict(name=name, path=str(path), context_length=length, **kw))


# --------------------------------------------------------------------------
# bytes


def test_bytes_ids_by_hand():
  tok = _make("bytes", length=6)
  assert tok.vocab_size == 259 and tok.context_length == 6
  out = tok(["hi", "é", ""])
  assert out.dtype == np.int32 and out.shape == (3, 6)
  # 'h' = 104 -> 107, 'i' = 105 -> 108; BOS 1, EOS 2, pad 0.
  assert out[0].tolist() == [1, 107, 108, 2, 0, 0]
  # 'é' is UTF-8 C3 A9 = 195, 169 -> 198, 172.
  assert out[1].tolist() == [1, 198, 172, 2, 0, 0]
  assert out[2].tolist() == [1, 2, 0, 0, 0, 0]
  assert tok([]).shape == (0, 6) and tok([]).dtype == np.int32
  # TFDS gives bytes: same ids.
  assert tok([b"hi"]).tolist() == out[:1].tolist()


def test_truncation_keeps_eos_last_and_logs_once(caplog):
  caplog.set_level(logging.WARNING)
  tok = _make("bytes", length=4)
  out = tok(["abcdef", "xyz12345"])
  # [BOS, 'a', 'b', EOS]: first L-1 ids, then EOS.
  assert out[0].tolist() == [1, 97 + 3, 98 + 3, 2]
  assert out[1].tolist() == [1, 120 + 3, 121 + 3, 2]
  tok(["a much longer text"])
  lines = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
  assert len(lines) == 1, lines
  assert "8 tokens" in lines[0] and "context_length=4" in lines[0]


def test_last_nonzero_is_eos_for_every_row():
  tok = _make("bytes", length=5)
  out = tok(["", "a", "abc", "abcdefgh", "\x00\x00"])
  for row in out:
    assert row[np.nonzero(row)[0][-1]] == tok.eos_id


def test_errors_name_the_problem(tmp_path):
  with pytest.raises(errors.ConfigError, match="'wordpiece'"):
    _make("wordpiece")
  with pytest.raises(errors.ConfigError, match="context_length=1"):
    _make("bytes", length=1)
  with pytest.raises(errors.ConfigError, match="context_length"):
    tokenizers.make(dict(name="bytes", path=""))
  with pytest.raises(errors.ConfigError, match="lowr"):
    _make("bytes", lowr=True)
  with pytest.raises(errors.ConfigError, match="reads no file"):
    _make("bytes", path="x.model")
  missing = tmp_path / "nope.model"
  for name in ("sentencepiece", "clip_bpe"):
    with pytest.raises(errors.DataNotFoundError, match="nope.model"):
      _make(name, missing)
    with pytest.raises(errors.ConfigError, match="path is empty"):
      _make(name, "")
  with pytest.raises(TypeError, match="list"):
    _make("bytes")("one string")


# --------------------------------------------------------------------------
# sentencepiece

CORPUS = ["a red circle above a blue square", "a small green triangle",
          "the digit seven drawn by hand", "a photo of a cat", "a photo of a dog"] * 4


def _train_sp(tmp_path, name, **kw):
  spm = pytest.importorskip("sentencepiece")
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CORPUS), model_writer=buf, model_type="char",
      character_coverage=1.0, num_threads=1, minloglevel=2, **kw)
  path = tmp_path / name
  path.write_bytes(buf.getvalue())
  return path, spm.SentencePieceProcessor(model_proto=buf.getvalue())


def test_sentencepiece_default_layout_is_shifted(tmp_path):
  # The trainer's default: unk 0, bos 1, eos 2, no pad. Id 0 is a real piece,
  # so jssl shifts every id by one and keeps 0 for padding.
  path, sp = _train_sp(tmp_path, "tiny.model")
  assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (-1, 0, 1, 2)
  tok = _make("sentencepiece", path, length=14)
  assert tok.vocab_size == sp.GetPieceSize() + 1
  assert tok.eos_id == 3 and tok.bos_id == 2
  row = tok(["A Red cat!"])[0]
  # Lower-cased (big_vision's default), char model: '▁' starts each word;
  # '!' is not in the corpus -> <unk>; then </s>, then padding.
  pieces = ["▁", "a", "▁", "r", "e", "d", "▁", "c", "a", "t", "<unk>", "</s>"]
  assert [tok.piece(i) for i in row[:12]] == pieces
  assert row[:12].tolist() == [sp.PieceToId(p) + 1 for p in pieces]
  assert row[10] == 1  # <unk> (raw id 0) is 1 here: never taken for padding.
  assert row[12:].tolist() == [0, 0]
  # Truncation keeps </s> last (big_vision's eos="sticky").
  short = _make("sentencepiece", path, length=4)(["a red cat"])[0]
  assert [tok.piece(i) for i in short] == ["▁", "a", "▁", "</s>"]
  # add_bos uses the model's <s>.
  bos = _make("sentencepiece", path, length=5, add_bos=True)(["a"])[0]
  assert [tok.piece(i) for i in bos[:4]] == ["<s>", "▁", "a", "</s>"] and bos[4] == 0


def test_sentencepiece_t5_layout_keeps_model_ids(tmp_path):
  # T5's vocabularies (big_vision's c4_en / mc4): pad 0, eos 1, unk 2, no bos.
  path, sp = _train_sp(tmp_path, "t5like.model", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
  tok = _make("sentencepiece", path, length=8)
  assert tok.vocab_size == sp.GetPieceSize() and tok.eos_id == 1 and tok.bos_id is None
  row = tok(["a dog"])[0]
  pieces = ["▁", "a", "▁", "d", "o", "g", "</s>"]
  assert [sp.IdToPiece(int(i)) for i in row[:7]] == pieces
  assert row.tolist() == [sp.PieceToId(p) for p in pieces] + [0]
  assert row[6] == 1
  with pytest.raises(errors.ConfigError, match="no BOS"):
    _make("sentencepiece", path, add_bos=True)
  # lower=False keeps the case: 'D' is not in the corpus -> <unk> (2).
  assert _make("sentencepiece", path, length=8, lower=False)(["a Dog"])[0, 3] == 2


def test_sentencepiece_wrong_files(tmp_path):
  pytest.importorskip("sentencepiece")
  rnd = tmp_path / "random.model"
  rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
  with pytest.raises(errors.DataError, match="random.model.*not a SentencePiece model"):
    _make("sentencepiece", rnd)
  clip_vocab = tmp_path / "bpe_vocab.txt.gz"
  clip_vocab.write_bytes(gzip.compress(MERGES.encode()))
  with pytest.raises(errors.DataError, match="bpe_vocab.txt.gz.*not a SentencePiece model"):
    _make("sentencepiece", clip_vocab)
  plain = tmp_path / "merges.txt"
  plain.write_text(MERGES)
  empty = tmp_path / "empty.model"
  empty.write_bytes(b"")
  for path in (plain, empty):
    with pytest.raises(errors.DataError, match=f"{path.name}.*not a SentencePiece model"):
      _make("sentencepiece", path)


# --------------------------------------------------------------------------
# clip_bpe
#
# Vocabulary of this file, by CLIP's construction (hand-derived):
#   ids 0..255: bytes_to_unicode characters; '!'..'~' first, so a printable
#     ASCII character c has id ord(c) - 33: '!' 0, "'" 6, '&' 5, '2' 17,
#     '4' 19, 'a' 64, 'b' 65, 'c' 66, 'e' 68, 'h' 71, 'i' 72, 's' 82, 't' 83.
#     Then '¡'..'¬' (bytes 161..172) = ids 94..105, '®'..'ÿ' (174..255) =
#     ids 106..187, then the 68 other bytes (0..32, 127..160, 173) = 188..255.
#   ids 256..511: the same + '</w>' (id + 256): '!</w>' 256, '&</w>' 261,
#     '2</w>' 273, '4</w>' 275, 's</w>' 338, 't</w>' 339.
#   ids 512..: one per merge, in file order (rank = id - 512):
#     'hi</w>' 512, 'th' 513, 'the</w>' 514, 'ca' 515, 'cat</w>' 516, 'at</w>' 517
#   <|startoftext|> 518, <|endoftext|> 519; vocab_size 520.
MERGES = "#version: 0.2\nh i</w>\nt h\nth e</w>\nc a\nca t</w>\na t</w>\n"
SOT, EOT = 518, 519


@pytest.fixture
def clip_files(tmp_path):
  plain = tmp_path / "merges.txt"
  plain.write_text(MERGES, encoding="utf-8")
  gz = tmp_path / "merges.txt.gz"
  gz.write_bytes(gzip.compress(MERGES.encode()))
  return plain, gz


def test_bytes_to_unicode_table():
  table = tokenizers.bytes_to_unicode()
  assert len(table) == 256 and len(set(table.values())) == 256
  assert list(table)[:3] == [33, 34, 35] and table[ord("a")] == "a"
  assert table[32] == "Ġ" and table[0] == "Ā"  # chr(256 + 32), chr(256)


def test_clip_bpe_ids_by_hand(clip_files):
  for path in clip_files:
    tok = _make("clip_bpe", path, length=12)
    assert tok.vocab_size == 520 and tok.bos_id == SOT and tok.eos_id == EOT
    out = tok(["The  cat! bat hi", "it's 42", "é", "!!", "&amp; <|endoftext|>", ""])
    # 'the' -> th+e</w> -> 'the</w>'; 'cat': (c,a) rank 3 beats (a,t</w>) rank 5,
    # then (ca,t</w>) -> 'cat</w>'; '!' alone -> '!</w>'; 'bat': only (a,t</w>)
    # -> ['b', 'at</w>']; 'hi' -> 'hi</w>'.
    assert out[0].tolist() == [SOT, 514, 516, 256, 65, 517, 512, EOT, 0, 0, 0, 0]
    # "it's" -> 'it' + "'s" (CLIP's contraction rule); '42' -> '4', '2' (one digit each).
    assert out[1].tolist() == [SOT, 72, 339, 6, 338, 275, 273, EOT, 0, 0, 0, 0]
    # 'é' = bytes C3 A9 -> 'Ã' (195: id 106 + 21 = 127), '©' (169: 94 + 8 = 102) + '</w>'.
    assert out[2].tolist() == [SOT, 127, 102 + 256, EOT] + [0] * 8
    # '!!' is one token -> '!', '!</w>': id 0 inside the text (CLIP's pad id too).
    assert out[3].tolist() == [SOT, 0, 256, EOT] + [0] * 8
    # HTML unescaped ('&amp;' -> '&'); the literal <|endoftext|> is the special id.
    assert out[4].tolist() == [SOT, 261, EOT, EOT] + [0] * 8
    assert out[5].tolist() == [SOT, EOT] + [0] * 10
    for row in out:  # the last non-zero id is EOS even with '!' = 0 inside
      assert row[np.nonzero(row)[0][-1]] == EOT


def test_clip_bpe_truncation(clip_files):
  tok = _make("clip_bpe", clip_files[0], length=5)
  assert tok(["the cat bat hi"]).tolist() == [[SOT, 514, 516, 65, EOT]]


def test_clip_bpe_wrong_files(tmp_path, clip_files):
  rnd = tmp_path / "random.bin"
  rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
  with pytest.raises(errors.DataError, match="random.bin.*not a CLIP BPE merges file"):
    _make("clip_bpe", rnd)
  badgz = tmp_path / "bad.gz"
  badgz.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
  with pytest.raises(errors.DataError, match="bad.gz.*gzip"):
    _make("clip_bpe", badgz)
  noheader = tmp_path / "noheader.txt"
  noheader.write_text("h i\n")
  with pytest.raises(errors.DataError, match="noheader.txt.*#version"):
    _make("clip_bpe", noheader)
  three = tmp_path / "three.txt"
  three.write_text("#version: 0.2\nh i j\n")
  with pytest.raises(errors.DataError, match="three.txt', line 2: a merge is two"):
    _make("clip_bpe", three)
  sp_model, _ = _train_sp(tmp_path, "sp.model")  # a SentencePiece model is binary
  with pytest.raises(errors.DataError, match="sp.model.*not a CLIP BPE merges file"):
    _make("clip_bpe", sp_model)


def test_clip_pattern_splits():
  pat = tokenizers.clip_pattern()
  assert pat.findall("don't stop-2019 ünïcode 日本 ½") == [
      "don", "'t", "stop", "-", "2", "0", "1", "9", "ünïcode", "日本", "½"]


# --------------------------------------------------------------------------
# config / files / save: an export carries its vocabulary


@pytest.mark.parametrize("name", ["bytes", "sentencepiece", "clip_bpe"])
def test_config_and_save_rebuild_the_same_tokenizer(tmp_path, clip_files, name):
  path = ""
  if name == "sentencepiece":
    path, _ = _train_sp(tmp_path, "tiny.model")
  elif name == "clip_bpe":
    path = clip_files[1]
  tok = _make(name, path, length=10)
  texts = ["The cat hi", "a red circle", "it's"]
  cfg = tok.config()
  assert json.loads(json.dumps(cfg)) == cfg
  assert tokenizers.make(cfg)(texts).tolist() == tok(texts).tolist()
  files = tok.files()
  expected_files = {} if name == "bytes" else {os.path.basename(path): path.read_bytes()}
  assert files == expected_files
  export = tmp_path / "export" / "tokenizer"
  saved = tok.save(export)
  assert json.loads(json.dumps(saved)) == saved
  if name != "bytes":
    assert saved["path"] == os.path.basename(path)
    os.remove(path)  # the export must not need the original file
  rebuilt = tokenizers.make(saved, root=export)
  assert rebuilt(texts).tolist() == tok(texts).tolist()
  assert rebuilt.vocab_size == tok.vocab_size


def test_make_accepts_config_dict():
  ml_collections = pytest.importorskip("ml_collections")
  cfg = ml_collections.ConfigDict(dict(name="bytes", path="", context_length=3))
  cfg.lock()
  assert tokenizers.make(cfg)(["a"]).tolist() == [[1, 100, 2]]


def test_no_jax_import():
  import subprocess
  import sys
  code = ("import sys; import jssl.text.tokenizers, jssl.text.templates; "
          "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)")
  env = dict(os.environ)
  subprocess.run([sys.executable, "-c", code], check=True, env=env)
