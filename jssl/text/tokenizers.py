"""Text tokenizers: strings -> fixed-length int32 ids, on host, deterministic.

`make(cfg)` builds one from `config.text.tokenizer`:

  name            'bytes' | 'sentencepiece' | 'clip_bpe'
  path            model / vocabulary file ('' for bytes); local, gs:// or any
                  scheme jssl.storage serves. A relative path is resolved
                  against `root` when `make(cfg, root=DIR)` is given one.
  context_length  L >= 2: every row has exactly L ids.
  lower           optional; None (default) = the tokenizer's convention
                  (bytes: keep case; sentencepiece: lower, as big_vision's
                  `tokenize` op; clip_bpe: lower, as CLIP).
  add_bos         optional; None (default) = the tokenizer's convention
                  (bytes: yes; sentencepiece: no, as big_vision; clip_bpe:
                  yes, <|startoftext|>).

Ids, for every tokenizer (the shared interface of the text tower):
  * `tok(texts)` is `np.ndarray int32 [N, L]`; N = len(texts) (0 is fine).
  * A row is `[BOS?] + ids of the text + [EOS]`, padded on the right with 0.
  * Longer rows are truncated to `ids[:L-1] + [EOS]`: the EOS stays last
    (big_vision's `eos="sticky"`, CLIP's `truncate=True`). The first
    truncation logs one line with the length; later ones are silent.
  * EOS is non-zero, so the EOS position of a row is its last non-zero id.

Export: `tok.config()` is a JSON-able dict that rebuilds the tokenizer with
`make(config)`; `tok.files()` is `{file name: bytes}` of the model/vocab file
it read ({} for bytes); `tok.save(dir)` writes those files into `dir` and
returns the config with `path` relative to it, so `make(saved, root=dir)`
rebuilds the same tokenizer anywhere (an export directory carries its own
vocabulary).

No jax here: this module imports numpy, the standard library and (for
'sentencepiece' only, lazily) the `sentencepiece` package
(`pip install 'jssl[text]'`).
"""
from __future__ import annotations

import functools
import gzip
import html
import os
import re
import sys
import unicodedata
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import numpy as np

from jssl import errors
from jssl import storage

NAMES = ("bytes", "sentencepiece", "clip_bpe")
_KEYS = ("name", "path", "context_length", "lower", "add_bos")
PAD_ID = 0


# --------------------------------------------------------------------------
# Base class.


class Tokenizer:
  """Common part: padding, sticky-EOS truncation, the one-line truncation log,
  config/files for exports. Subclasses implement `_ids(text) -> list[int]`
  (the text's own ids, no BOS/EOS) and set `vocab_size`, `eos_id`, `bos_id`.
  """
  name: str = ""
  vocab_size: int
  eos_id: int
  bos_id: Optional[int]

  def __init__(self, *, context_length: int, lower: bool, add_bos: bool,
               path: str = "", data: bytes = b""):
    self.context_length = context_length
    self.lower = lower
    self.add_bos = add_bos
    self.path = path
    self._data = data
    self._warned_truncation = False

  # Subclass hooks.
  def _clean(self, text: str) -> str:
    return text.lower() if self.lower else text

  def _ids(self, text: str) -> list[int]:
    raise NotImplementedError

  def encode(self, text: str) -> list[int]:
    """All ids of one text, BOS/EOS included, neither padded nor truncated."""
    ids = self._ids(self._clean(text))
    head = [self.bos_id] if self.add_bos else []
    return head + ids + [self.eos_id]

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    """`texts` (a sequence of str, or UTF-8 bytes as TFDS gives) -> int32 [N, L]."""
    if isinstance(texts, (str, bytes)):
      raise TypeError(
          f"{self.name} tokenizer: expected a sequence of strings, got one "
          f"{type(texts).__name__}; wrap it in a list")
    length = self.context_length
    texts = list(texts)
    out = np.zeros((len(texts), length), np.int32)
    for row, text in enumerate(texts):
      ids = self.encode(_as_str(text, self.name, row))
      if len(ids) > length:
        if not self._warned_truncation:
          self._warned_truncation = True
          logging.warning(
              "%s tokenizer: a text of %d tokens is longer than context_length=%d; "
              "truncated to its first %d tokens + EOS (further truncations are not logged)",
              self.name, len(ids), length, length - 1)
        ids = ids[:length - 1] + [ids[-1]]
      out[row, :len(ids)] = ids
    return out

  # Export.
  def config(self) -> dict[str, Any]:
    """JSON-able config that `make` rebuilds this tokenizer from."""
    return {"name": self.name, "path": self.path, "context_length": self.context_length,
            "lower": self.lower, "add_bos": self.add_bos}

  def files(self) -> dict[str, bytes]:
    """{file name: contents} of the file this tokenizer read ({} when none)."""
    if not self.path:
      return {}
    return {_basename(self.path): self._data}

  def save(self, directory: storage.PathLike) -> dict[str, Any]:
    """Writes `files()` into `directory`; returns the config to rebuild this
    tokenizer with `make(config, root=directory)`."""
    cfg = self.config()
    files = self.files()
    if files:
      d = storage.path(directory, what="tokenizer directory", error=errors.ExportError)
      d.mkdir(parents=True, exist_ok=True)
      for name, data in files.items():
        storage.write_atomic(d / name, data)
      cfg["path"] = next(iter(files))
    return cfg

  def __repr__(self):
    return (f"{type(self).__name__}(vocab_size={self.vocab_size}, "
            f"context_length={self.context_length}, path={self.path!r})")


def _as_str(text, name: str, row: int) -> str:
  if isinstance(text, str):
    return text
  if isinstance(text, (bytes, np.bytes_)):
    try:
      return bytes(text).decode("utf-8")
    except UnicodeDecodeError as e:
      raise errors.DataError(f"{name} tokenizer: text {row} is not valid UTF-8 ({e})") from None
  raise TypeError(f"{name} tokenizer: text {row} is a {type(text).__name__}, not a str")


def _basename(path: str) -> str:
  return path.rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------
# bytes: no files.


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes: 0 pad, 1 BOS, 2 EOS, byte b -> b + 3; vocab_size 259."""
  name = "bytes"
  vocab_size = 259
  bos_id = 1
  eos_id = 2
  OFFSET = 3

  def _ids(self, text: str) -> list[int]:
    return [b + self.OFFSET for b in text.encode("utf-8")]


# --------------------------------------------------------------------------
# SentencePiece (big_vision's tokenizer files: a serialized ModelProto).


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model file, read through jssl.storage (gs:// works).

  Convention of big_vision's `tokenize` op (big_vision/pp/ops_text.py,
  `get_pp_tokenize`, as its SigLIP/LiT configs call it: `eos="sticky"`,
  `lower=True`, `add_bos=False`): the text is lower-cased, encoded with
  `EncodeAsIds`, followed by the model's EOS (`</s>`); no BOS; a text longer
  than L keeps its first L-1 ids and the EOS. Padding: big_vision's SigLIP
  configs pad with `pad_value=1` (the EOS of its T5 vocabularies); jssl pads
  with 0 (the shared interface: the tower finds EOS as the last non-zero id),
  which is `<pad>` in those vocabularies, so the ids up to the EOS are
  big_vision's and only the padding differs.

  Id conflicts: the ids are the model's own when its pad id is 0 (T5's
  c4_en / mc4 vocabularies: pad 0, eos 1, unk 2). A model whose id 0 is not
  `<pad>` (SentencePiece's trainer default: unk 0, bos 1, eos 2, no pad) would
  make a real piece look like padding, so every id is shifted by +1 and 0 is
  left free for padding: `vocab_size` is then the model's piece count + 1,
  and `piece(i)` undoes the shift. A model without an EOS piece (eos_id -1)
  is refused, as is `add_bos` with a model without a BOS piece.
  """
  name = "sentencepiece"

  def __init__(self, *, data: bytes, path: str, **kw):
    super().__init__(data=data, path=path, **kw)
    try:
      import sentencepiece  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise errors.ConfigError(
          "text.tokenizer.name='sentencepiece' needs the sentencepiece package: "
          "pip install 'jssl[text]' (or pip install sentencepiece)") from None
    sp = sentencepiece.SentencePieceProcessor()
    try:
      sp.LoadFromSerializedProto(data)
      size = sp.GetPieceSize()
    except Exception:  # pylint: disable=broad-except
      raise errors.DataError(
          f"text.tokenizer.path {path!r} is not a SentencePiece model file (it does not parse "
          "as a serialized ModelProto)") from None
    if size <= 0:
      raise errors.DataError(f"text.tokenizer.path {path!r}: SentencePiece model has no pieces")
    self._sp = sp
    self.offset = 0 if sp.pad_id() == 0 else 1
    self.vocab_size = size + self.offset
    if sp.eos_id() < 0:
      raise errors.DataError(
          f"text.tokenizer.path {path!r}: the SentencePiece model has no EOS piece "
          "(eos_id=-1); jssl ends every row with EOS")
    self.eos_id = sp.eos_id() + self.offset
    if sp.bos_id() >= 0:
      self.bos_id = sp.bos_id() + self.offset
    elif self.add_bos:
      raise errors.ConfigError(
          f"text.tokenizer.add_bos=True but the SentencePiece model {path!r} has no BOS "
          "piece (bos_id=-1)")
    else:
      self.bos_id = None

  def _ids(self, text: str) -> list[int]:
    return [i + self.offset for i in self._sp.EncodeAsIds(text)]

  def piece(self, i: int) -> str:
    """The piece string of jssl id `i` ('' for the padding id when shifted)."""
    if self.offset and i == 0:
      return ""
    return self._sp.IdToPiece(int(i) - self.offset)


# --------------------------------------------------------------------------
# CLIP's byte-level BPE (openai/CLIP clip/simple_tokenizer.py).

# Number of merges CLIP uses from its 262k-line merges file:
# `merges[1:49152-256-2+1]` (header line skipped), so that 256 bytes + 256
# bytes with '</w>' + 48894 merges + 2 specials = 49408 = CLIP's vocab_size.
CLIP_NUM_MERGES = 49152 - 256 - 2
_SOT, _EOT = "<|startoftext|>", "<|endoftext|>"

# Unicode White_Space (PropList.txt), which the `regex` package's \s matches
# in CLIP's patterns; Python's `re` \s would add U+001C..U+001F.
_WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000")


def bytes_to_unicode() -> dict[int, str]:
  """CLIP's (and GPT-2's) reversible byte -> printable character table.

  Bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') map to
  themselves, in that order; the 68 others, in increasing byte order, map to
  chr(256), chr(257), ... The dict's order is the vocabulary order.
  """
  keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
  table = {b: chr(b) for b in keep}
  extra = 0
  for b in range(256):
    if b not in table:
      table[b] = chr(256 + extra)
      extra += 1
  return table


def _ranges(predicate) -> str:
  """A regex character-class body of all code points where `predicate(category)`."""
  parts = []
  start = None
  for cp in range(sys.maxunicode + 2):
    inside = cp <= sys.maxunicode and predicate(unicodedata.category(chr(cp)))
    if inside and start is None:
      start = cp
    elif not inside and start is not None:
      end = cp - 1
      parts.append(f"\\U{start:08x}" if start == end else f"\\U{start:08x}-\\U{end:08x}")
      start = None
  return "".join(parts)


@functools.lru_cache(maxsize=None)
def clip_pattern() -> re.Pattern:
  """CLIP's pre-tokenisation pattern with the standard `re` module.

  CLIP (simple_tokenizer.py) uses the `regex` package:
    <\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+
  with IGNORECASE. `re` has no \\p{...}, so \\p{L} / \\p{N} are spelled out as
  the code points whose `unicodedata` category starts with L / N (the same
  property, in Python's Unicode version), and \\s as Unicode White_Space.
  IGNORECASE is dropped: the text is lower-cased first, as in CLIP, so it
  changes nothing. Checked against `regex` 2026.11: the same splits on every
  code point assigned in Python's Unicode database (3.11: Unicode 14); code
  points assigned only in later Unicode versions may split differently.
  Built once (well under a second).
  """
  letters = _ranges(lambda c: c[0] == "L")
  numbers = _ranges(lambda c: c[0] == "N")
  return re.compile(
      r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
      rf"|[{letters}]+|[{numbers}]|[^{_WHITE_SPACE}{letters}{numbers}]+")


class ClipBpeTokenizer(Tokenizer):
  """CLIP's tokenizer from its merges file (openai/CLIP clip/simple_tokenizer.py,
  `bpe_simple_vocab_16e6.txt.gz`; Radford et al. 2021, Sec. 2.4: "lower-cased
  byte pair encoding (BPE) representation of the text with a 49,152 vocab
  size ... bracketed with [SOS] and [EOS] tokens").

  File: UTF-8 text, gzip'd or plain (detected by content, not by name); the
  first line is a '#version: ...' header, then one merge per line, two
  space-separated symbols. The first `CLIP_NUM_MERGES` merges are used.
  Vocabulary, in id order: the 256 byte characters of `bytes_to_unicode`, the
  same 256 with '</w>' appended (end of word), one entry per merge (the two
  symbols joined), then <|startoftext|> (BOS) and <|endoftext|> (EOS). With
  CLIP's file: 49408 ids, BOS 49406, EOS 49407.

  Text: HTML entities unescaped twice, stripped, runs of whitespace replaced
  by one space, lower-cased; then split with `clip_pattern`, each piece's
  UTF-8 bytes mapped through `bytes_to_unicode`, its last character marked
  '</w>', and merged by BPE: repeatedly, the adjacent pair with the lowest
  merge rank is merged everywhere in the word (left to right), until no pair
  has a rank. The literal strings <|startoftext|> / <|endoftext|> in a text
  become those special ids, as in CLIP.

  Deviation: CLIP first runs `ftfy.fix_text` (mojibake repair, curly quotes
  -> straight, ligatures, full-width forms). jssl does not depend on ftfy; it
  applies Unicode NFC (which ftfy also does) and nothing else, so text that
  ftfy would change can tokenize differently from CLIP.

  Padding: CLIP pads with 0, which is also the id of '!' (the first byte
  character). jssl pads with 0 too, so ids equal CLIP's `clip.tokenize`; the
  invariant "the last non-zero id of a row is EOS" still holds because EOS is
  non-zero and every row has it, but `ids != 0` is NOT a padding mask here
  ("hi!" contains a 0): mask with the positions up to the EOS instead.
  """
  name = "clip_bpe"

  def __init__(self, *, data: bytes, path: str, **kw):
    super().__init__(data=data, path=path, **kw)
    merges = _parse_merges(data, path)
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += [_SOT, _EOT]
    self._encoder = {piece: i for i, piece in enumerate(vocab)}
    self._vocab = vocab
    self._ranks = {m: r for r, m in enumerate(merges)}
    self._byte_char = bytes_to_unicode()
    self.vocab_size = len(vocab)
    self.bos_id = self._encoder[_SOT]
    self.eos_id = self._encoder[_EOT]
    self._cache: dict[str, list[int]] = {}
    self._pattern = clip_pattern()

  def piece(self, i: int) -> str:
    return self._vocab[int(i)]

  def _bpe(self, word: str) -> list[str]:
    """BPE merges of one pre-token (already mapped to byte characters)."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    while len(symbols) > 1:
      best = None
      for pair in zip(symbols, symbols[1:]):
        rank = self._ranks.get(pair)
        if rank is not None and (best is None or rank < best[0]):
          best = (rank, pair)
      if best is None:
        break
      first, second = best[1]
      merged = []
      i = 0
      while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
          merged.append(first + second)
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    return symbols

  def _clean(self, text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text)).strip()
    text = re.sub(f"[{_WHITE_SPACE}]+", " ", text).strip()
    return text.lower() if self.lower else text  # after the cleanup, as CLIP

  def _ids(self, text: str) -> list[int]:
    ids = []
    for token in self._pattern.findall(text):
      cached = self._cache.get(token)
      if cached is None:
        if token in (_SOT, _EOT):
          cached = [self._encoder[token]]
        else:
          word = "".join(self._byte_char[b] for b in token.encode("utf-8"))
          cached = [self._encoder[s] for s in self._bpe(word)]
        if len(self._cache) >= 200_000:
          self._cache.clear()
        self._cache[token] = cached
      ids.extend(cached)
    return ids


def _parse_merges(data: bytes, path: str) -> list[tuple[str, str]]:
  if data[:2] == b"\x1f\x8b":
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError) as e:
      raise errors.DataError(f"text.tokenizer.path {path!r}: damaged gzip file ({e})") from None
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError:
    raise errors.DataError(
        f"text.tokenizer.path {path!r} is not a CLIP BPE merges file (not UTF-8 text)") from None
  lines = text.split("\n")
  if not lines[0].startswith("#version"):
    raise errors.DataError(
        f"text.tokenizer.path {path!r} is not a CLIP BPE merges file (its first line "
        f"should be a '#version: ...' header, got {lines[0][:40]!r})")
  merges = []
  for n, line in enumerate(lines[1:], start=2):
    if len(merges) == CLIP_NUM_MERGES:
      break
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 2:
      raise errors.DataError(
          f"text.tokenizer.path {path!r}, line {n}: a merge is two space-separated "
          f"symbols, got {line[:60]!r}")
    merges.append((parts[0], parts[1]))
  return merges


# --------------------------------------------------------------------------
# Factory.


def _get(cfg: Mapping[str, Any], key: str, default=None):
  try:
    value = cfg[key]
  except (KeyError, AttributeError):
    return default
  return default if value is None else value


def _read(path: str, name: str) -> bytes:
  p = storage.path(path, what="text.tokenizer.path", error=errors.DataError)
  try:
    exists = p.exists()
    is_dir = exists and p.is_dir()
  except OSError as e:
    raise errors.DataError(f"text.tokenizer.path {path!r} cannot be read: {e}") from None
  if not exists:
    raise errors.DataNotFoundError(
        f"text.tokenizer.path {path!r} does not exist (the {name} tokenizer's file)")
  if is_dir:
    raise errors.DataError(f"text.tokenizer.path {path!r} is a directory, not the {name} file")
  return p.read_bytes()


def make(cfg: Mapping[str, Any], root: Optional[storage.PathLike] = None) -> Tokenizer:
  """Builds the tokenizer `cfg` (a mapping, e.g. `config.text.tokenizer`) names.

  `root`: directory a relative `cfg['path']` is resolved against (an export's
  tokenizer directory, see `Tokenizer.save`).
  """
  if hasattr(cfg, "to_dict"):
    cfg = cfg.to_dict()
  cfg = dict(cfg)
  unknown = sorted(set(cfg) - set(_KEYS))
  if unknown:
    raise errors.ConfigError(
        f"text.tokenizer has unknown field(s) {unknown}; allowed: {list(_KEYS)}")
  name = _get(cfg, "name", "")
  if name not in NAMES:
    raise errors.ConfigError(
        f"text.tokenizer.name={name!r} is not a tokenizer; choose one of {list(NAMES)}")
  length = _get(cfg, "context_length")
  if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
    raise errors.ConfigError(
        f"text.tokenizer.context_length={length!r}: must be an integer >= 2 "
        "(room for at least one id and the EOS)")
  length = int(length)
  path = os.fspath(_get(cfg, "path", ""))
  defaults = {"bytes": (False, True), "sentencepiece": (True, False),
              "clip_bpe": (True, True)}[name]
  lower = bool(_get(cfg, "lower", defaults[0]))
  add_bos = bool(_get(cfg, "add_bos", defaults[1]))
  kw = dict(context_length=length, lower=lower, add_bos=add_bos)
  if name == "bytes":
    if path:
      raise errors.ConfigError(
          f"text.tokenizer.path={path!r}: the bytes tokenizer reads no file; set path=''")
    return ByteTokenizer(**kw)
  if not path:
    raise errors.ConfigError(
        f"text.tokenizer.path is empty: the {name} tokenizer needs its "
        f"{'model' if name == 'sentencepiece' else 'vocabulary (merges)'} file")
  if root is not None and not storage.is_remote(path) and not os.path.isabs(path):
    root_s = os.fspath(root)
    path = root_s.rstrip("/") + "/" + path if storage.is_remote(root_s) else os.path.join(
        root_s, path)
  data = _read(path, name)
  cls = SentencePieceTokenizer if name == "sentencepiece" else ClipBpeTokenizer
  return cls(data=data, path=path, **kw)
