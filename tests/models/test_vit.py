"""jssl.models ViT: shapes, timm parameter counts, token masking, dtype, config errors."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jssl import models
from jssl.models import vit

TEST = {"name": "vit_test", "patch_size": 4}


def _count(variables):
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


def _shapes(cfg, hw=32, b=2):
  model = models.make_encoder(cfg)
  x = jax.ShapeDtypeStruct((b, hw, hw, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  return variables, out


@pytest.mark.parametrize("name,d", [("vit_tiny", 192), ("vit_small", 384), ("vit_base", 768),
                                    ("vit_test", 32)])
def test_output_dict_shapes(name, d):
  cfg = {"name": name, "patch_size": 4}
  variables, out = _shapes(cfg)
  assert set(out) == {"pre_logits", "cls", "tokens", "cls_last4"}
  assert out["pre_logits"].shape == out["cls"].shape == (2, d)
  assert out["tokens"].shape == (2, 64, d)       # (32 / 4)^2 patches
  assert out["pre_logits"].dtype == out["cls_last4"].dtype == jnp.float32
  # 4 blocks' cls tokens; vit_test has only 2 blocks, so it has both.
  assert out["cls_last4"].shape == (2, (2 if name == "vit_test" else 4) * d)
  assert models.feature_dim(cfg) == d == models.make_encoder(cfg).feature_dim
  assert "batch_stats" not in variables          # no BN anywhere


def test_param_counts_match_timm():
  # timm vit_small_patch16_224: 22,050,664 params incl. the 384x1000 head (385,000);
  # vit_base_patch16_224: 86,567,656 incl. the 768x1000 head (769,000). timm's
  # position table is learned; with fixed sin-cos it is not a parameter (197 x D).
  s = _count(_shapes({"name": "vit_small", "patch_size": 16, "pos_embed": "learned"}, 224)[0])
  b = _count(_shapes({"name": "vit_base", "patch_size": 16, "pos_embed": "learned"}, 224)[0])
  # Our learned table has no cls row (the cls token is a parameter itself), and
  # attention has no key bias (softmax cancels it): D fewer per block.
  assert s == 22_050_664 - 385_000 - 384 - 12 * 384 == 21_660_672
  assert b == 86_567_656 - 769_000 - 768 - 12 * 768 == 85_788_672
  s_fixed = _count(_shapes({"name": "vit_small", "patch_size": 16}, 224)[0])
  assert s - s_fixed == 196 * 384


def test_sincos_matches_mae_formula():
  # MAE util/pos_embed.py, written out for a 2 x 3 grid of width 8.
  pe = vit.sincos_2d(8, 2, 3)
  assert pe.shape == (6, 8)
  omega = 1.0 / 10000 ** (np.arange(2) / 2)
  r, c = 1, 2                                    # patch index 1 * 3 + 2 = 5
  want = np.concatenate([np.sin(c * omega), np.cos(c * omega),
                         np.sin(r * omega), np.cos(r * omega)])
  np.testing.assert_allclose(pe[5], want, rtol=1e-6)


def test_keep_indices_is_a_token_gather():
  model = models.make_encoder(TEST)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  v = model.init(jax.random.key(0), x, train=False)
  full = model.apply(v, x, train=False)
  # A permutation of all tokens: attention is permutation-equivariant and the
  # positions were added before the gather, so the outputs are permuted alike.
  perm = jnp.stack([jnp.arange(16)[::-1], jax.random.permutation(jax.random.key(2), 16)])
  out = model.apply(v, x, train=False, keep_indices=perm)
  np.testing.assert_allclose(out["tokens"], jnp.take_along_axis(full["tokens"], perm[..., None], 1),
                             atol=1e-5)
  np.testing.assert_allclose(out["cls"], full["cls"], atol=1e-5)
  # A subset: the output does not depend on the pixels of the dropped patches.
  keep = jnp.array([[0, 5, 10, 15], [3, 4, 8, 9]])
  sub = model.apply(v, x, train=False, keep_indices=keep)
  assert sub["tokens"].shape == (2, 4, 32)
  patch_of = (jnp.arange(16)[:, None] // 4) * 4 + jnp.arange(16)[None] // 4   # [H, W] -> n
  dropped = ~(patch_of[None, :, :, None] == keep[:, None, None, :]).any(-1)   # [B, H, W]
  x2 = jnp.where(dropped[..., None], 100.0, x)
  sub2 = model.apply(v, x2, train=False, keep_indices=keep)
  np.testing.assert_allclose(sub2["pre_logits"], sub["pre_logits"], atol=1e-5)
  assert not np.allclose(model.apply(v, x2, train=False)["pre_logits"], full["pre_logits"])
  # Per example: row b of a batch equals running example b alone.
  one = model.apply(v, x[1:], train=False, keep_indices=keep[1:])
  np.testing.assert_allclose(one["tokens"][0], sub["tokens"][1], atol=1e-5)


def test_gap_pool_and_learned_pos():
  cfg = dict(TEST, pool="gap", pos_embed="learned")
  model = models.make_encoder(cfg)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  v = model.init(jax.random.key(0), x, train=True)
  out = model.apply(v, x, train=True)
  np.testing.assert_allclose(out["pre_logits"], out["tokens"].mean(1), atol=1e-6)
  assert v["params"]["pos_embedding"].shape == (1, 16, 32)


def test_bfloat16_compute_float32_params():
  cfg = ml_collections.ConfigDict(dict(TEST, dtype="bfloat16"))
  model = models.make_encoder(cfg)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  v = model.init(jax.random.key(0), x, train=False)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))
  out = model.apply(v, x, train=False, keep_indices=jnp.array([[0, 1], [2, 3]]))
  assert out["tokens"].dtype == jnp.bfloat16 and out["pre_logits"].dtype == jnp.float32
  assert np.all(np.isfinite(out["pre_logits"]))
  ref = models.make_encoder(TEST).apply(v, x, train=False,
                                        keep_indices=jnp.array([[0, 1], [2, 3]]))
  np.testing.assert_allclose(out["pre_logits"], ref["pre_logits"], atol=0.1)


def test_config_errors():
  with pytest.raises(ValueError, match=r"unknown ViT encoder config keys \['stem'\]"):
    models.make_encoder({"name": "vit_small", "stem": "cifar"})
  with pytest.raises(ValueError, match="unknown ViT 'vit_huge'"):
    models.make_encoder({"name": "vit_huge"})
  with pytest.raises(ValueError, match="pool must be"):
    models.make_encoder({"name": "vit_test", "pool": "max"})
  with pytest.raises(ValueError, match="not divisible by num_heads"):
    models.make_encoder({"name": "vit_test", "num_heads": 3})
  with pytest.raises(ValueError, match="not divisible by patch"):
    _shapes({"name": "vit_test", "patch_size": 16}, hw=24)
  # ResNet configs still reject ViT keys.
  with pytest.raises(ValueError, match=r"unknown encoder config keys \['patch_size'\]"):
    models.make_encoder({"name": "resnet18", "patch_size": 4})


# --- attention through jax.nn.dot_product_attention (issue 16, part 4) -------------------------

def _einsum_attention(q, k, v, *, impl, is_causal=False, key_valid=None):
  """The einsum attention jssl had before `jax.nn.dot_product_attention`:
  float32 logits / sqrt(H), masked to -1e30, float32 softmax."""
  del impl
  t, s = q.shape[1], k.shape[1]
  logits = jnp.einsum("bqhc,bkhc->bhqk", q, k).astype(jnp.float32) / np.sqrt(q.shape[-1])
  mask = jnp.ones((1, 1, t, s), bool)
  if is_causal:
    mask = mask & jnp.tril(jnp.ones((t, s), bool))[None, None]
  if key_valid is not None:
    mask = mask & key_valid[:, None, None, :]
  attn = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1).astype(q.dtype)
  return jnp.einsum("bhqk,bkhc->bqhc", attn, v)


@pytest.mark.parametrize("causal,padded", [(False, False), (True, False), (False, True)])
def test_attention_equals_einsum_reference(causal, padded):
  q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 7, 4, 8))
  key_valid = jnp.array([[True] * 7, [True] * 3 + [False] * 4]) if padded else None
  got = vit.attention(q, k, v, impl=None, is_causal=causal, key_valid=key_valid)
  xla = vit.attention(q, k, v, impl="xla", is_causal=causal, key_valid=key_valid)
  want = _einsum_attention(q, k, v, impl=None, is_causal=causal, key_valid=key_valid)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(got, xla)
  if causal:   # query 0 sees only key 0: its output is v[:, 0]
    np.testing.assert_allclose(got[:, 0], v[:, 0], rtol=1e-6)
  if padded:   # the padded keys' values do not reach the outputs
    v2 = v.at[1, 3:].set(100.0)
    np.testing.assert_allclose(vit.attention(q, k, v2, impl=None, key_valid=key_valid), got,
                               atol=1e-6)


# The parameter tree of vit_test before this change (no new parameters, same
# names), so old checkpoints and exports load.
_BLOCK_TREE = {"attn": {"query": {"kernel": (32, 32), "bias": (32,)},
                        "key": {"kernel": (32, 32)},
                        "value": {"kernel": (32, 32), "bias": (32,)},
                        "out": {"kernel": (32, 32), "bias": (32,)}},
               "norm1": {"scale": (32,), "bias": (32,)}, "norm2": {"scale": (32,), "bias": (32,)},
               "mlp_fc1": {"kernel": (32, 128), "bias": (128,)},
               "mlp_fc2": {"kernel": (128, 32), "bias": (32,)}}
_VIT_TEST_TREE = {"patch_embed": {"kernel": (48, 32), "bias": (32,)}, "cls_token": (1, 1, 32),
                  "block1": _BLOCK_TREE, "block2": _BLOCK_TREE,
                  "norm": {"scale": (32,), "bias": (32,)}}


@pytest.mark.parametrize("remat", ["none", "block", "dots"])
def test_param_tree_unchanged_and_outputs_equal_einsum(remat, monkeypatch):
  cfg = dict(TEST, remat=remat, attention_impl="xla")
  model = models.make_encoder(cfg)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  v = model.init(jax.random.key(0), x, train=False)
  assert jax.tree.map(lambda a: a.shape, v["params"]) == _VIT_TEST_TREE
  out = model.apply(v, x, train=False)
  monkeypatch.setattr(vit, "attention", _einsum_attention)
  ref = model.apply(v, x, train=False)
  for key in ("pre_logits", "tokens"):
    np.testing.assert_allclose(out[key], ref[key], rtol=1e-5, atol=1e-6)


def _loss_and_grads(cfg, x):
  model = models.make_encoder(cfg)
  v = model.init(jax.random.key(0), x, train=False)
  # Every output feeds the loss: tokens (all positions) and the pooled cls.
  f = lambda v: jnp.sum(jnp.sin(model.apply(v, x, train=True)["tokens"])) + jnp.sum(  # noqa: E731
      model.apply(v, x, train=True)["pre_logits"] ** 2)
  return jax.jit(jax.value_and_grad(f))(v)


def test_remat_same_loss_and_gradients():
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  loss, grads = _loss_and_grads(dict(TEST, remat="none"), x)
  for remat in ("block", "dots"):
    l2, g2 = _loss_and_grads(dict(TEST, remat=remat), x)
    np.testing.assert_allclose(l2, loss, rtol=1e-6)
    # Recomputed blocks fuse differently: float reassociation, measured <= 3e-6
    # of each tensor's largest entry (the cls token's gradient sums over all).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b)))), g2, grads)


def test_attention_and_remat_config_errors():
  with pytest.raises(ValueError, match="attention_impl must be one of"):
    models.make_encoder(dict(TEST, attention_impl="flash"))
  with pytest.raises(ValueError, match="remat must be one of"):
    models.make_encoder(dict(TEST, remat="full"))
  with pytest.raises(ValueError, match="attention_impl='cudnn' needs dtype bfloat16"):
    models.make_encoder(dict(TEST, attention_impl="cudnn"))
  assert models.make_encoder(dict(TEST, attention_impl="cudnn", dtype="bfloat16")).attention_impl \
      == "cudnn"


def test_auto_attention_picks_cudnn_only_where_it_applies():
  pick = vit.resolve_attention_impl
  assert pick("auto", dtype=jnp.bfloat16, head_dim=64, backend="gpu") == "cudnn"
  assert pick("auto", dtype=jnp.float16, head_dim=128, backend="cuda") == "cudnn"
  assert pick("auto", dtype=jnp.float32, head_dim=64, backend="gpu") is None     # cuDNN: 16-bit
  assert pick("auto", dtype=jnp.bfloat16, head_dim=60, backend="gpu") is None    # H % 8
  assert pick("auto", dtype=jnp.bfloat16, head_dim=256, backend="gpu") is None   # H <= 128
  assert pick("auto", dtype=jnp.bfloat16, head_dim=64, backend="tpu") is None
  assert pick("auto", dtype=jnp.bfloat16, head_dim=64, backend="cpu") is None
  assert pick("auto", dtype=jnp.bfloat16, head_dim=64) is None   # this test runs on CPU
  assert pick("xla", dtype=jnp.bfloat16, head_dim=64, backend="gpu") == "xla"
  assert pick("cudnn", dtype=jnp.bfloat16, head_dim=64, backend="cpu") == "cudnn"


@pytest.mark.parametrize("depth", [2, 4, 6])
def test_cls_last4_is_the_normed_cls_of_the_last_blocks(depth):
  # DINO eval_linear.py: get_intermediate_layers(x, 4) puts each of the last 4
  # blocks' outputs through the final norm; the probe concatenates their cls
  # tokens. Checked against the captured block outputs and a numpy LayerNorm.
  model = vit.ViT(width=16, depth=depth, num_heads=2, patch_size=4)
  x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  out, state = model.apply(variables, x, train=False, capture_intermediates=True)
  inter = state["intermediates"]
  norm = variables["params"]["norm"]

  def layer_norm(v):
    v = np.asarray(v, np.float64)
    mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
    return ((v - mu) / np.sqrt(var + vit.LN_EPS) * np.asarray(norm["scale"])
            + np.asarray(norm["bias"]))

  blocks = range(max(1, depth - 3), depth + 1)
  want = np.concatenate([layer_norm(inter[f"block{i}"]["__call__"][0][:, 0]) for i in blocks],
                        axis=-1)
  assert out["cls_last4"].shape == (3, 16 * len(blocks))
  np.testing.assert_allclose(out["cls_last4"], want, rtol=1e-5, atol=1e-5)
  # The last block's slot is the final cls token itself.
  np.testing.assert_array_equal(out["cls_last4"][:, -16:], out["cls"])
