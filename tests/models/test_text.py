"""The text tower: shapes, EOS pooling, causal vs bidirectional masks, padding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import models
from jssl.models import text, vit


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


# --- attention through jax.nn.dot_product_attention, remat (issue 16, part 4) ------------------

def _einsum_attention(q, k, v, *, impl, is_causal=False, key_valid=None):
  """The text tower's attention before jax.nn.dot_product_attention: a dense
  boolean mask (tril when causal, the non-pad keys otherwise), -1e30, f32 softmax."""
  del impl
  n = q.shape[1]
  logits = jnp.einsum("bqhc,bkhc->bhqk", q, k).astype(jnp.float32) / np.sqrt(q.shape[-1])
  mask = (jnp.tril(jnp.ones((n, n), bool))[None, None] if is_causal
          else key_valid[:, None, None, :])
  attn = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1).astype(q.dtype)
  return jnp.einsum("bhqk,bkhc->bqhc", attn, v)


_BLOCK = {"attn": {"query": {"kernel": (32, 32), "bias": (32,)}, "key": {"kernel": (32, 32)},
                   "value": {"kernel": (32, 32), "bias": (32,)},
                   "out": {"kernel": (32, 32), "bias": (32,)}},
          "norm1": {"scale": (32,), "bias": (32,)}, "norm2": {"scale": (32,), "bias": (32,)},
          "mlp_fc1": {"kernel": (32, 128), "bias": (128,)},
          "mlp_fc2": {"kernel": (128, 32), "bias": (32,)}}
# The tiny tower's parameter tree before this change: checkpoints still load.
_TINY_TREE = {"token_embed": {"embedding": (20, 32)}, "pos_embedding": (1, 8, 32),
              "block1": _BLOCK, "block2": _BLOCK, "norm": {"scale": (32,), "bias": (32,)}}


@pytest.mark.parametrize("causal,pool", [(True, "eos"), (False, "mean")])
@pytest.mark.parametrize("remat", ["none", "block"])
def test_dot_product_attention_equals_einsum_tree_unchanged(causal, pool, remat, monkeypatch):
  m = _model(causal=causal, pool=pool, remat=remat, attention_impl="xla")
  tok = _tokens()
  v = m.init(jax.random.key(0), tok)
  assert jax.tree.map(lambda a: a.shape, v["params"]) == _TINY_TREE
  out = m.apply(v, tok)
  monkeypatch.setattr(vit, "attention", _einsum_attention)
  ref = m.apply(v, tok)
  # Padding rows too (bidirectional: pad queries attend the non-pad keys).
  np.testing.assert_allclose(out["tokens"], ref["tokens"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["pre_logits"], ref["pre_logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_remat_same_loss_and_gradients(causal):
  tok = _tokens()

  def loss_grads(remat):
    m = _model(causal=causal, pool="mean", remat=remat)
    v = m.init(jax.random.key(0), tok)
    f = lambda v: jnp.sum(jnp.sin(m.apply(v, tok)["tokens"].astype(jnp.float32)))  # noqa: E731
    return jax.jit(jax.value_and_grad(f))(v)

  loss, grads = loss_grads("none")
  for remat in ("block", "dots"):
    l2, g2 = loss_grads(remat)
    # Equal up to float reassociation (the fusions differ under remat): the
    # loss sums 512 signed terms (measured 2e-6 relative).
    np.testing.assert_allclose(l2, loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b)))), g2, grads)


def test_attention_config_errors():
  with pytest.raises(ValueError, match="remat must be one of"):
    models.make_text_encoder(dict(name="tiny", vocab_size=10, remat="all"))
  with pytest.raises(ValueError, match="attention_impl='cudnn' needs dtype bfloat16"):
    models.make_text_encoder(dict(name="tiny", vocab_size=10, attention_impl="cudnn"))
