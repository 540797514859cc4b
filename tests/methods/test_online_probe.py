"""The online linear probe and the in-step diagnostics: computed from
stop-gradient features, they leave the encoder's training untouched, and are
configured with clear errors."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jssl import models, sharding as shd, step as step_lib
from jssl_testing import load_config
import methods_testing as mt

CFG = ml_collections.ConfigDict(dict(enabled=True, lr=0.1, momentum=0.9))


def test_probe_fits_separable_features_and_sends_no_gradient():
  probe = step_lib.make_online_probe(CFG, num_classes=3, total_steps=200)
  rng = np.random.default_rng(0)
  labels = jnp.asarray(rng.integers(0, 3, 96))
  x = jnp.asarray(rng.normal(size=(96, 6)) * 0.3 + 2.0 * np.eye(6)[np.asarray(labels)])
  state = step_lib._probe_init(probe, 6)  # pylint: disable=protected-access
  step = jax.jit(lambda s, f: step_lib._probe_step(probe, s, f, labels))  # pylint: disable=protected-access
  first = None
  for _ in range(100):
    state, m = step(state, x)
    first = float(m["online_probe/loss"]) if first is None else first
  assert float(m["online_probe/top1"]) == 1.0
  assert float(m["online_probe/loss"]) < 0.2 * first
  # The probe's loss sends nothing back to the features (stop_gradient).
  g = jax.grad(lambda f: step_lib._probe_step(probe, state, f, labels)[1][  # pylint: disable=protected-access
      "online_probe/loss"])(x)
  assert float(jnp.max(jnp.abs(g))) == 0.0


def test_probe_does_not_change_the_encoders_training():
  config = load_config("configs/simclr.py:smoke")
  batches = mt.digit_batches(config, 3)
  mesh = shd.make_mesh()
  s_on, h_on = mt.run_steps(config, mesh, batches)
  config.online_probe.enabled = False
  s_off, h_off = mt.run_steps(config, mesh, batches)
  assert s_off.probe == {} and "online_probe/top1" not in h_off[0]
  assert set(s_on.probe) == {"params", "opt_state"}
  dim = models.feature_dim(config.model)
  assert s_on.probe["params"]["kernel"].shape == (dim, 10)  # 10 digit classes
  np.testing.assert_allclose([h["loss"] for h in h_on], [h["loss"] for h in h_off],
                             rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               s_on.params, s_off.params)
  # The probe starts at zero weights: on the first step every logit is 0, so
  # its loss is exactly log(10) and argmax picks class 0 (top-1 = the batch's
  # share of label 0). Later steps see a probe that learned.
  assert h_on[0]["online_probe/loss"] == pytest.approx(np.log(10), rel=1e-6)
  assert h_on[0]["online_probe/top1"] == pytest.approx(np.mean(batches[0]["label"] == 0))
  assert h_on[1]["online_probe/loss"] != pytest.approx(np.log(10), rel=1e-3)
  assert np.abs(s_on.probe["params"]["kernel"]).max() > 0


def test_bad_probe_config():
  bad = ml_collections.ConfigDict(dict(enabled=True, lr=0.1, lrr=0.2))
  with pytest.raises(ValueError, match="unknown keys \\['lrr'\\]"):
    step_lib.make_online_probe(bad, num_classes=10, total_steps=10)
  with pytest.raises(ValueError, match=">= 2 classes"):
    step_lib.make_online_probe(CFG, num_classes=1, total_steps=10)
  off = ml_collections.ConfigDict(dict(enabled=False))
  assert step_lib.make_online_probe(off, num_classes=10, total_steps=10) is None
  assert step_lib.make_online_probe(None, num_classes=10, total_steps=10) is None


def test_diagnostics_come_on_due_steps_and_change_nothing():
  config = load_config("configs/simclr.py:smoke")
  batches = mt.digit_batches(config, 3)
  mesh = shd.make_mesh()
  # build(): every 2 steps and the last (total_steps=3).
  s_on, h_on = mt.run_steps(config, mesh, batches, total_steps=3)
  config.diagnostics.enabled = False
  s_off, h_off = mt.run_steps(config, mesh, batches, total_steps=3)
  assert not any(k.startswith("diag/") for k in h_off[0])
  keys = {"diag/rankme", "diag/uniformity", "diag/feature_std_ratio", "diag/vendi",
          "diag/nc1", "diag/intra_class_variance", "diag/class_separation"}
  assert keys <= set(h_on[0])
  assert np.isnan(h_on[0]["diag/rankme"])          # step 1: not due
  dim = models.feature_dim(config.model)
  for h in h_on[1:]:                                # step 2 (every 2), step 3 (last)
    assert 1.0 <= h["diag/rankme"] <= dim and 0.0 < h["diag/feature_std_ratio"] <= 1.0
  np.testing.assert_allclose([h["loss"] for h in h_on], [h["loss"] for h in h_off],
                             rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               s_on.params, s_off.params)


def test_bad_diagnostics_config():
  bad = ml_collections.ConfigDict(dict(enabled=True, every=5))
  with pytest.raises(ValueError, match="unknown keys \\['every'\\]"):
    step_lib.make_diagnostics(bad, every=10, total_steps=10, num_classes=10)
  off = ml_collections.ConfigDict(dict(enabled=False))
  assert step_lib.make_diagnostics(off, every=10, total_steps=10, num_classes=10) is None
  on = ml_collections.ConfigDict(dict(enabled=True, every_steps=0))
  assert step_lib.make_diagnostics(on, every=25, total_steps=200,
                                   num_classes=10).every == 25
  sparse = ml_collections.ConfigDict(dict(enabled=True, every_steps=100))
  assert step_lib.make_diagnostics(sparse, every=25, total_steps=200,
                                   num_classes=10).every == 100
  odd = ml_collections.ConfigDict(dict(enabled=True, every_steps=30))
  with pytest.raises(ValueError, match="every_steps=30 must be a multiple of "
                     "log_every_steps=25"):
    step_lib.make_diagnostics(odd, every=25, total_steps=200, num_classes=10)
