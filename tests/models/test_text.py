"""The text tower: shapes, EOS pooling, causal vs bidirectional masks, padding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import models
from jssl.models import text


def _tokens():
  # rows: [BOS, ..., EOS, 0 ...]; lengths 5 and 3 (EOS at 4 and 2).
  return jnp.array([[1, 7, 8, 9, 2, 0, 0, 0], [1, 5, 2, 0, 0, 0, 0, 0]], jnp.int32)


def _model(**kw):
  return models.make_text_encoder(dict(name="tiny", vocab_size=20, **kw))


def test_shapes_and_eos_pooling():
  m = _model(causal=True, pool="eos")
  tok = _tokens()
  v = m.init(jax.random.key(0), tok)
  out = m.apply(v, tok)
  assert out["pre_logits"].shape == (2, 32) and out["tokens"].shape == (2, 8, 32)
  np.testing.assert_array_equal(text.eos_index(tok), [4, 2])
  np.testing.assert_allclose(out["pre_logits"], out["tokens"][jnp.arange(2), jnp.array([4, 2])])
  np.testing.assert_array_equal(out["mask"], tok != 0)


def test_causal_position_ignores_later_tokens():
  m = _model(causal=True)
  tok = _tokens()
  v = m.init(jax.random.key(0), tok)
  changed = tok.at[0, 3].set(11)
  a, b = m.apply(v, tok)["tokens"], m.apply(v, changed)["tokens"]
  np.testing.assert_allclose(a[0, :3], b[0, :3], atol=1e-6)   # before the change: same
  assert not np.allclose(a[0, 3:], b[0, 3:])                   # at and after: differs


def test_bidirectional_sees_the_whole_text_but_not_the_padding():
  m = _model(causal=False, pool="mean")
  tok = _tokens()
  v = m.init(jax.random.key(0), tok)
  out = m.apply(v, tok)
  changed = m.apply(v, tok.at[0, 3].set(11))
  assert not np.allclose(out["tokens"][0, 0], changed["tokens"][0, 0])  # position 0 sees 3
  # Longer padding (same prefix, larger context is another model; same L here):
  # only the pad ids' embeddings differ if the pad token were read: it is masked,
  # so changing the pad rows' positions' embedding leaves the pooled feature alone.
  v2 = jax.tree.map(lambda x: x, v)
  emb = v2["params"]["token_embed"]["embedding"]
  v2["params"]["token_embed"]["embedding"] = emb.at[0].set(emb[0] + 5.0)
  np.testing.assert_allclose(m.apply(v2, tok)["pre_logits"], out["pre_logits"], atol=1e-5)
  # Mean pooling over the non-pad tokens only.
  w = (tok != 0)[..., None]
  want = (out["tokens"] * w).sum(1) / w.sum(1)
  np.testing.assert_allclose(out["pre_logits"], want, rtol=1e-5, atol=1e-6)


def test_cls_pool_and_sizes():
  m = _model(causal=False, pool="cls")
  tok = _tokens()
  v = m.init(jax.random.key(0), tok)
  out = m.apply(v, tok)
  np.testing.assert_allclose(out["pre_logits"], out["tokens"][:, 0])
  b = models.make_text_encoder(dict(name="B", vocab_size=100))
  assert (b.width, b.depth, b.num_heads) == (512, 12, 8)
  s = models.make_text_encoder(dict(name="S", vocab_size=100, width=768, num_heads=12))
  assert (s.width, s.num_heads) == (768, 12)


def test_bfloat16_compute_float32_pooled():
  m = _model(dtype="bfloat16")
  tok = _tokens()
  v = m.init(jax.random.key(0), tok)
  out = m.apply(v, tok)
  assert out["tokens"].dtype == jnp.bfloat16 and out["pre_logits"].dtype == jnp.float32
  assert v["params"]["token_embed"]["embedding"].dtype == jnp.float32


def test_bad_configs():
  with pytest.raises(ValueError, match="unknown text model size"):
    models.make_text_encoder(dict(name="XL", vocab_size=10))
  with pytest.raises(ValueError, match="pool"):
    models.make_text_encoder(dict(name="tiny", vocab_size=10, pool="max"))
  with pytest.raises(ValueError, match="unknown text model config keys"):
    models.make_text_encoder(dict(name="tiny", vocab_size=10, widht=3))
  with pytest.raises(ValueError, match="vocab_size"):
    models.make_text_encoder(dict(name="tiny", vocab_size=0))
