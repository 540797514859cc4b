"""Tests for jssl.evals.linear_probe: accuracy, scikit-learn parity, the bound, sharding."""
import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from jssl.evals import linear_probe as lp


def _clusters(seed, n, m, d, num_classes, spread):
  """Gaussian class means (scale 1) plus isotropic noise of std `spread`."""
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(num_classes, d))
  train_y = (np.arange(n) % num_classes).astype(np.int32)
  test_y = rng.integers(0, num_classes, m).astype(np.int32)
  train_x = means[train_y] + spread * rng.normal(size=(n, d))
  test_x = means[test_y] + spread * rng.normal(size=(m, d))
  return train_x.astype(np.float32), train_y, test_x.astype(np.float32), test_y


# One overlapping problem shared by several tests, so they share one compilation.
_OVERLAP = _clusters(0, n=400, m=200, d=16, num_classes=5, spread=1.6)
_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


@functools.cache
def _overlap_result():
  return lp.linear_probe(*_OVERLAP, num_classes=5, l2_grid=_GRID, per_example=True)


def test_per_example_correctness_is_the_test_top1_per_image():
  out = _overlap_result()
  correct = out["correct"]
  assert correct.dtype == bool and correct.shape == (len(_OVERLAP[3]),)
  assert out["top1"] == pytest.approx(np.mean(correct))
  assert 0 < correct.sum() < len(correct)  # some right, some wrong on this problem
  assert "correct" not in lp.linear_probe(*_OVERLAP, num_classes=5, l2_grid=_GRID)


def test_separable_clusters_are_classified_perfectly():
  data = _clusters(1, n=240, m=120, d=8, num_classes=6, spread=0.05)
  out = lp.linear_probe(*data, num_classes=6, steps=20)
  assert out["top1"] == 1.0 and out["top5"] == 1.0 and out["train_top1"] == 1.0
  assert out["l2"] in lp.DEFAULT_L2_GRID


def _sklearn_objective(coef, intercept, x, y, l2):
  logits = x @ coef.T + intercept
  logits = logits - logits.max(axis=1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return -np.mean(log_p[np.arange(len(y)), y]) + 0.5 * l2 * np.sum(coef**2)


def test_agrees_with_sklearn_logistic_regression():
  sklearn = pytest.importorskip("sklearn.linear_model")
  train_x, train_y, test_x, test_y = _OVERLAP
  out = _overlap_result()
  assert 0.5 < out["top1"] < 0.95  # a problem where the probe is not trivially perfect
  # The same objective in scikit-learn's terms: C = 1 / (l2 N), standardised features.
  mean, std = train_x.mean(0), train_x.std(0)
  xs, xt = (train_x - mean) / std, (test_x - mean) / std
  l2 = out["l2"]
  clf = sklearn.LogisticRegression(C=1.0 / (l2 * len(train_y)), tol=1e-8, max_iter=5000)
  clf.fit(xs.astype(np.float64), train_y)
  assert abs(out["top1"] - clf.score(xt, test_y)) <= 0.02
  # 50 accelerated Böhning steps reach scikit-learn's optimum of the same objective.
  best = _sklearn_objective(clf.coef_, clf.intercept_, xs, train_y, l2)
  assert out["loss"] == pytest.approx(best, rel=1e-3, abs=1e-4)


def test_selection_follows_held_out_accuracy():
  out = _overlap_result()
  assert out["l2_grid"] == sorted(_GRID) and len(out["val_top1"]) == len(_GRID)
  val = np.asarray(out["val_top1"])
  chosen = max(i for i in range(len(val)) if val[i] == val.max())  # ties: larger l2
  assert out["l2"] == out["l2_grid"][chosen]
  assert "top5" not in out  # K = 5: top-5 would be trivially 1


def test_deterministic():
  again = lp.linear_probe(*_OVERLAP, num_classes=5, l2_grid=_GRID, per_example=True)
  ref = _overlap_result()
  np.testing.assert_array_equal(again.pop("correct"), ref["correct"])
  assert again == {k: v for k, v in ref.items() if k != "correct"}


def test_invariant_to_affine_feature_scaling():
  train_x, train_y, test_x, test_y = _OVERLAP
  rng = np.random.default_rng(2)
  scale = np.exp(rng.uniform(-4, 4, size=train_x.shape[1])).astype(np.float32)
  shift = rng.normal(size=train_x.shape[1]).astype(np.float32) * 10
  out = lp.linear_probe(train_x * scale + shift, train_y, test_x * scale + shift, test_y,
                        num_classes=5, l2_grid=_GRID)
  ref = _overlap_result()
  assert out["l2"] == ref["l2"]
  assert abs(out["top1"] - ref["top1"]) <= 1 / len(test_y)
  assert out["loss"] == pytest.approx(ref["loss"], rel=1e-3)


def test_sharded_equals_single_device():
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  out = lp.linear_probe(*[jax.device_put(a, sharding) for a in _OVERLAP], num_classes=5,
                        l2_grid=_GRID, per_example=True)
  ref = _overlap_result()
  assert out["l2"] == ref["l2"]
  assert abs(out["top1"] - ref["top1"]) <= 1 / len(_OVERLAP[3])
  assert np.sum(out["correct"] != ref["correct"]) <= 1
  assert out["loss"] == pytest.approx(ref["loss"], rel=1e-4)


def test_rank_deficient_features_stay_finite():
  # Duplicated and constant columns, D > N: a singular Gram matrix.
  train_x, train_y, test_x, test_y = _clusters(3, n=48, m=24, d=4, num_classes=3,
                                               spread=0.05)
  def widen(x):
    return np.concatenate([x, x, 2 * x[:, :1], np.ones((len(x), 60), np.float32)], axis=1)
  out = lp.linear_probe(widen(train_x), train_y, widen(test_x), test_y, num_classes=3,
                        steps=30)
  assert np.isfinite(out["loss"]) and out["top1"] == 1.0


def test_bohning_bound_dominates_the_hessian_and_the_step_descends():
  # Böhning (1992): Hessian of the mean softmax cross-entropy w.r.t. [W, b] is at most
  # I_K (x) (S / 2) + l2 on W, S the second moment of [x, 1]; _probe relies on it.
  rng = np.random.default_rng(4)
  n, d, k, l2 = 30, 3, 4, 1e-3
  x = rng.normal(size=(n, d))
  x = jnp.asarray(x - x.mean(0), jnp.float32)
  one_hot = jax.nn.one_hot(rng.integers(0, k, n), k)
  weight = jnp.ones((n,))
  theta = jnp.asarray(rng.normal(size=(k, d + 1)), jnp.float32)

  @jax.jit  # one compilation instead of many eager ops
  def check(theta):
    hess = jax.hessian(lp.objective)(theta, x, one_hot, weight, l2)
    xa = jnp.concatenate([x, jnp.ones((n, 1))], axis=1)
    block = 0.5 * xa.T @ xa / n + jnp.diag(jnp.array([l2] * d + [0.0]))
    bound = jnp.kron(jnp.eye(k), block)
    gap = jnp.min(jnp.linalg.eigvalsh(bound - hess.reshape(k * (d + 1), -1)))
    grads = (lp._grad(theta, x, one_hot, weight, l2),
             jax.grad(lp.objective)(theta, x, one_hot, weight, l2))
    # One bound step (no momentum yet) from zero must lower the objective.
    e, v = jnp.linalg.eigh(x.T @ x / n)
    curvature = jnp.concatenate([0.5 * e + l2, jnp.full((1,), 0.5)])
    zeros = jnp.zeros((k, d + 1))
    step = lp._fit(x, one_hot, weight, l2, v, curvature, zeros, steps=1)
    losses = (lp.objective(zeros, x, one_hot, weight, l2),
              lp.objective(step, x, one_hot, weight, l2))
    return gap, grads, losses

  gap, (manual, auto), (before, after) = check(theta)
  assert gap > -1e-5
  np.testing.assert_allclose(manual, auto, rtol=1e-5, atol=1e-6)  # hand grad == autodiff
  assert after < before


def _bad(**overrides):
  train_x, train_y, test_x, test_y = _clusters(5, n=20, m=6, d=3, num_classes=3, spread=1)
  args = dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
              num_classes=3)
  args.update(overrides)
  return args


@pytest.mark.parametrize("overrides, match", [
    (dict(train_y=np.zeros(19, np.int32)), r"train features and labels differ.*\(20, 3\)"),
    (dict(test_y=np.full(6, 7, np.int32)), r"test_y \(6,\) has labels in \[7, 7\]"),
    (dict(test_x=np.zeros((6, 4), np.float32)), r"width D differs.*\(20, 3\).*\(6, 4\)"),
    (dict(test_x=np.zeros((6,), np.float32)), r"test_x must be \[N, D\]"),
    (dict(l2_grid=()), r"l2_grid must be non-empty"),
    (dict(l2_grid=(1e-3, -1.0)), r"l2_grid must be non-empty, finite and > 0"),
    (dict(steps=0), r"steps must be an int >= 1"),
    (dict(val_fraction=0.0), r"val_fraction=0.0 of train_x \(20, 3\) holds out 0"),
    (dict(val_fraction=0.01), r"holds out 0 examples"),
    (dict(val_fraction=1.0), r"holds out 0 examples"),
])
def test_bad_inputs_raise(overrides, match):
  with pytest.raises(ValueError, match=match):
    lp.linear_probe(**_bad(**overrides))
