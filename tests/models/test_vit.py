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
  assert set(out) == {"pre_logits", "cls", "tokens"}
  assert out["pre_logits"].shape == out["cls"].shape == (2, d)
  assert out["tokens"].shape == (2, 64, d)       # (32 / 4)^2 patches
  assert out["pre_logits"].dtype == jnp.float32
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
