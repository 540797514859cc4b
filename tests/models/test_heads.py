"""jssl.models.heads: projector / predictor structure, shapes and BatchNorm modes."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jssl import models


def _init(head, d=6, b=4):
  x = jax.random.normal(jax.random.key(0), (b, d))
  return head.init(jax.random.key(1), x, train=False), x


def test_simclr_projector_structure():
  head = models.make_projector(ml_collections.ConfigDict(
      {"hidden_dims": [16, 16], "out_dim": 8, "last_bn": True}))
  v, x = _init(head)
  p = v["params"]
  assert sorted(p) == ["bn1", "bn2", "linear1", "linear2", "out", "out_bn"]
  # Linear before BN carries no bias (BN's shift replaces it).
  assert set(p["linear1"]) == {"kernel"} and p["linear1"]["kernel"].shape == (6, 16)
  assert set(p["out"]) == {"kernel"} and p["out"]["kernel"].shape == (16, 8)
  # SimCLR v2 output BN: scale, no shift.
  assert set(p["out_bn"]) == {"scale"}
  z, new = jax.jit(lambda v, x: head.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
  assert z.shape == (4, 8)
  # Output BN in train mode with scale 1, no shift: each feature has zero batch mean.
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  assert set(new["batch_stats"]) == {"bn1", "bn2", "out_bn"}


def test_no_bn_projector_is_plain_mlp():
  head = models.make_projector({"hidden_dims": [5], "out_dim": 3, "use_bn": False})
  v, x = _init(head)
  assert "batch_stats" not in v
  p = v["params"]
  expected = jnp.maximum(x @ p["linear1"]["kernel"] + p["linear1"]["bias"], 0)
  expected = expected @ p["out"]["kernel"] + p["out"]["bias"]
  np.testing.assert_allclose(head.apply(v, x, train=True), expected, rtol=1e-5, atol=1e-6)


def test_predictor_and_eval_mode():
  head = models.make_predictor({"hidden_dims": [12], "out_dim": 6})
  v, x = _init(head)
  assert "out_bn" not in v["params"] and set(v["params"]["out"]) == {"kernel", "bias"}
  ev = jax.jit(lambda v, x: head.apply(v, x, train=False))
  # Eval BN uses running statistics: an example's output does not depend on the batch.
  np.testing.assert_allclose(ev(v, x)[:2], ev(v, x[:2]), rtol=1e-5, atol=1e-6)
  assert ev(v, x).shape == (4, 6)


def test_bad_head_config_and_input():
  with pytest.raises(ValueError, match="unknown projector config keys"):
    models.make_projector({"hiden_dims": [4]})
  head = models.make_projector({"hidden_dims": [4], "out_dim": 2})
  with pytest.raises(ValueError, match=r"\[B, D\]"):
    head.init(jax.random.key(0), jnp.zeros((2, 3, 4)), train=False)
