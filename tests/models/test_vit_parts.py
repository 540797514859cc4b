"""ViT mask token (SimMIM / iBOT) and drop-path (stochastic depth)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import models
from jssl.errors import ConfigError
from jssl.models import vit

X = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))


def test_no_mask_token_parameter_unless_asked():
  plain = models.make_encoder({"name": "vit_test", "patch_size": 4})
  masked = plain.clone(use_mask_token=True)
  p0 = jax.eval_shape(lambda: plain.init(jax.random.key(0), X, train=False))["params"]
  p1 = jax.eval_shape(lambda: masked.init(jax.random.key(0), X, train=False))["params"]
  assert "mask_token" not in p0 and p1["mask_token"].shape == (1, 1, 32)
  # Everything else is the same tree: old checkpoints still load.
  rest = {k: v for k, v in p1.items() if k != "mask_token"}
  assert jax.tree.structure(rest) == jax.tree.structure(p0)
  with pytest.raises(ValueError, match="no mask token"):
    plain.apply({"params": p0}, X, train=False, mask=jnp.zeros((4, 16), bool))


def test_mask_token_replaces_patches_before_the_position_embeddings():
  # depth 0: tokens = LN(embedding + pos), so the masked rows are LN(mask_token + pos_n).
  model = vit.ViT(width=32, depth=0, num_heads=2, patch_size=4, use_mask_token=True)
  variables = model.init(jax.random.key(1), X, train=False)
  p = variables["params"]
  mt = np.asarray(p["mask_token"]).reshape(-1)
  assert 0 < np.abs(mt).max() <= 0.02       # SimMIM: trunc-normal cut at +-std
  mask = jnp.zeros((4, 16), bool).at[0, 3].set(True).at[0, 9].set(True).at[2, 0].set(True)
  out = model.apply(variables, X, train=False, mask=mask)["tokens"]
  plain = model.apply(variables, X, train=False)["tokens"]
  pos = vit.sincos_2d(32, 4, 4)

  def ln(v):
    v = v - v.mean(-1, keepdims=True)
    return v / np.sqrt((v ** 2).mean(-1, keepdims=True) + vit.LN_EPS)

  scale, bias = np.asarray(p["norm"]["scale"]), np.asarray(p["norm"]["bias"])
  for b, n in ((0, 3), (0, 9), (2, 0)):
    np.testing.assert_allclose(out[b, n], ln(mt + pos[n]) * scale + bias, atol=1e-5)
  keep = ~np.asarray(mask)
  np.testing.assert_array_equal(np.asarray(out)[keep], np.asarray(plain)[keep])


def test_drop_path_is_per_example_and_rescaled():
  x = jnp.ones((2000, 3, 4))
  y = np.asarray(vit.drop_path(x, 0.25, jax.random.key(3)))
  per_example = y.reshape(2000, -1)
  assert np.all((per_example == 0).all(1) | np.isclose(per_example, 1 / 0.75).all(1))
  assert abs((per_example[:, 0] == 0).mean() - 0.25) < 0.04   # Bernoulli(0.25) drops


def test_block_drops_both_residual_branches():
  x = jax.random.normal(jax.random.key(4), (8, 5, 32))
  block = vit.Block(num_heads=2, drop_path=1 - 1e-7, deterministic=False)
  variables = block.init({"params": jax.random.key(5), "dropout": jax.random.key(6)}, x)
  y = block.apply(variables, x, rngs={"dropout": jax.random.key(7)})
  np.testing.assert_array_equal(y, x)       # both branches dropped: identity
  y_eval = vit.Block(num_heads=2).apply(variables, x)
  assert not np.allclose(y_eval, x)


def test_vit_drop_path_rates_train_only_keyed_and_remat_safe():
  cfg = {"name": "vit_test", "patch_size": 4, "depth": 4, "drop_path_rate": 0.3}
  model = models.make_encoder(cfg)
  np.testing.assert_allclose(model.drop_path_rates(), [0.0, 0.1, 0.2, 0.3])
  variables = model.init(jax.random.key(0), X, train=False)
  ref = models.make_encoder(dict(cfg, drop_path_rate=0.0))
  # Eval mode: no drop-path, the plain network.
  np.testing.assert_array_equal(model.apply(variables, X, train=False)["tokens"],
                                ref.apply(variables, X, train=True)["tokens"])
  with pytest.raises(ConfigError, match="drop_path_rate"):
    model.apply(variables, X, train=True)

  def run(m, seed):
    return jax.jit(lambda v: m.apply(v, X, train=True, rngs={"dropout": jax.random.key(seed)})
                   ["pre_logits"])(variables)

  a, b, c = run(model, 1), run(model, 1), run(model, 2)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  # Rematerialised blocks draw the same masks (same parameter names, same rng path).
  np.testing.assert_allclose(run(model.clone(remat="block"), 1), a, rtol=1e-5, atol=1e-6)
  with pytest.raises(ConfigError, match="drop_path_rate"):
    models.make_encoder(dict(cfg, drop_path_rate=1.0))
