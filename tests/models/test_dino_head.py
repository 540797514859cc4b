"""The DINO head: MLP -> L2-normalise -> weight-normalised last layer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl.models import dino_head


def _head(**kw):
  cfg = dict(out_dim=32, hidden_dim=24, bottleneck_dim=8, num_layers=3,
             use_bn=False, norm_last_layer=True)
  cfg.update(kw)
  return dino_head.make_dino_head(cfg)


def _h(b=6, d=12, seed=0):
  return jax.random.normal(jax.random.key(seed), (b, d))


def test_shapes_and_param_tree():
  head = _head()
  v = head.init(jax.random.key(0), _h(), train=True)
  assert set(v) == {"params"}  # no BN by default (DINO use_bn_in_head=False)
  p = v["params"]
  assert p["linear1"]["kernel"].shape == (12, 24)
  assert p["linear2"]["kernel"].shape == (24, 24)
  assert p["linear3"]["kernel"].shape == (24, 8)
  # norm_last_layer=True: the gain g is fixed at 1, so it is not a parameter.
  assert set(p[dino_head.LAST_LAYER]) == {"kernel"}
  assert p[dino_head.LAST_LAYER]["kernel"].shape == (8, 32)
  assert head.apply(v, _h(), train=True).shape == (6, 32)
  # torch Linear default init of the directions: U(+-1/sqrt(fan_in)).
  k = np.asarray(p[dino_head.LAST_LAYER]["kernel"])
  assert np.abs(k).max() <= 1 / np.sqrt(8) and k.std() > 0.05


def test_output_is_bounded_cosines_and_directions_have_unit_norm():
  head = _head()
  v = head.init(jax.random.key(0), _h(), train=True)
  h = 100.0 * _h(seed=1)
  z = np.asarray(head.apply(v, h, train=True))
  # Unit-norm bottleneck times unit-norm directions: every logit is a cosine.
  assert np.all(np.abs(z) <= 1.0 + 1e-6)
  # The effective weight g * v / ||v|| has unit columns: recompute the output
  # from the bottleneck with explicitly normalised directions.
  kern = np.asarray(v["params"][dino_head.LAST_LAYER]["kernel"])
  w = kern / np.linalg.norm(kern, axis=0, keepdims=True)
  np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, rtol=1e-6)
  # ||z|| over K is bounded by the largest singular value of w (<= sqrt(K)).
  assert np.all(np.linalg.norm(z, axis=1) <= np.linalg.norm(w, 2) + 1e-5)


def test_weight_norm_is_scale_invariant_and_gradient_orthogonal():
  head = _head()
  v = head.init(jax.random.key(0), _h(), train=True)
  h = _h(seed=2)
  scaled = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 7.0 if dino_head.LAST_LAYER in str(path) else x, v)
  np.testing.assert_allclose(head.apply(scaled, h, train=True),
                             head.apply(v, h, train=True), rtol=1e-5, atol=1e-6)
  # d/dv of v/||v|| is orthogonal to v, column by column.
  g = jax.grad(lambda p: jnp.sum(jnp.sin(
      head.apply({"params": p}, h, train=True))))(v["params"])
  gk = np.asarray(g[dino_head.LAST_LAYER]["kernel"])
  kern = np.asarray(v["params"][dino_head.LAST_LAYER]["kernel"])
  np.testing.assert_allclose(np.sum(gk * kern, axis=0), 0.0, atol=1e-5)


def test_learned_gain_when_last_layer_is_not_normalised():
  head = _head(norm_last_layer=False)
  v = head.init(jax.random.key(0), _h(), train=True)
  scale = v["params"][dino_head.LAST_LAYER]["scale"]
  # torch keeps weight_g as [K, 1]; rank 2 so the weight decay reaches it.
  assert scale.shape == (1, 32) and np.all(np.asarray(scale) == 1.0)
  z = head.apply(v, _h(), train=True)
  v2 = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 3.0 if "scale" in str(path) else x, v)
  np.testing.assert_allclose(head.apply(v2, _h(), train=True), 3.0 * z,
                             rtol=1e-5, atol=1e-6)


def test_bn_variant_and_one_layer():
  head = _head(use_bn=True)
  v = head.init(jax.random.key(0), _h(), train=True)
  assert set(v["batch_stats"]) == {"bn1", "bn2"}
  z, new = head.apply(v, _h(), train=True, mutable=["batch_stats"])
  assert z.shape == (6, 32) and "bn1" in new["batch_stats"]
  one = _head(num_layers=1)
  p = one.init(jax.random.key(0), _h(), train=True)["params"]
  assert set(p) == {"linear1", dino_head.LAST_LAYER}
  assert p["linear1"]["kernel"].shape == (12, 8)


def test_bad_config():
  with pytest.raises(ValueError, match="unknown DINO head config keys"):
    _head(nlayers=3)
  with pytest.raises(ValueError, match=r"expects h \[B, D\]"):
    head = _head()
    head.init(jax.random.key(0), jnp.zeros((2, 3, 4)), train=True)
