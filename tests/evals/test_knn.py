"""Tests for jssl.evals.knn: hand-checked votes, a NumPy re-statement, sharding."""
import math

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from jssl.evals import knn


def _numpy_knn(train_x, train_y, test_x, test_y, *, num_classes, k, temperature):
  """InstDisc weighted kNN restated in NumPy (float64, no chunking, no shift)."""
  tr = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
  te = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
  sim = te @ tr.T  # [M, N]
  idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
  weights = np.exp(np.take_along_axis(sim, idx, axis=1) / temperature)
  scores = np.zeros((len(te), num_classes))
  for c in range(num_classes):
    scores[:, c] = np.sum(weights * (train_y[idx] == c), axis=1)
  ranked = np.argsort(-scores, axis=1, kind="stable")  # ties: lower class first
  top1 = np.mean(ranked[:, 0] == test_y)
  top5 = np.mean(np.any(ranked[:, :min(5, num_classes)] == test_y[:, None], axis=1))
  return top1, top5


def test_per_example_correctness_matches_numpy_restatement():
  train_x, train_y, test_x, test_y = _random_problem(11)
  out = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=15,
                         temperature=0.1, chunk_size=8, per_example=True)
  # Per image, as the NumPy restatement ranks it (float64 votes).
  tr = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
  te = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
  sim = te.astype(np.float64) @ tr.T
  idx = np.argsort(-sim, axis=1, kind="stable")[:, :15]
  w = np.exp(np.take_along_axis(sim, idx, axis=1) / 0.1)
  scores = np.stack([np.sum(w * (train_y[idx] == c), axis=1) for c in range(7)], axis=1)
  want = np.argmax(scores, axis=1) == test_y
  assert out["correct"].dtype == bool and out["correct"].shape == (len(test_y),)
  np.testing.assert_array_equal(out["correct"], want)
  assert out["top1"] == pytest.approx(np.mean(want))
  assert "correct" not in knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7,
                                           k=15, chunk_size=8)


def _random_problem(seed, n=120, m=37, d=6, num_classes=7):
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(num_classes, d))
  train_y = rng.integers(0, num_classes, n).astype(np.int32)
  test_y = rng.integers(0, num_classes, m).astype(np.int32)
  train_x = (means[train_y] + rng.normal(size=(n, d))).astype(np.float32)
  test_x = (means[test_y] + rng.normal(size=(m, d))).astype(np.float32)
  return train_x, train_y, test_x, test_y


# One query q = (1, 0); three train features at cosines ~0.995 (class 0), 0.894 and
# 0.857 (class 1). Hand vote, k = 3:
#   T = 0.1: exp(9.950) = 20959 for class 0 vs exp(8.944) + exp(8.575) = 7653 + 5292 for
#            class 1 -> class 0 wins although class 1 has more neighbours.
#   T = 1.0: 2.705 vs 2.446 + 2.357 = 4.803 -> class 1 wins.
_TRAIN_X = np.array([[1.0, 0.1], [1.0, 0.5], [1.0, 0.6]], np.float32)
_TRAIN_Y = np.array([0, 1, 1], np.int32)
_QUERY = np.array([[1.0, 0.0]], np.float32)


@pytest.mark.parametrize("temperature, expected_class", [(0.1, 0), (1.0, 1)])
def test_hand_checked_weighted_vote(temperature, expected_class):
  cos = _TRAIN_X[:, 0] / np.linalg.norm(_TRAIN_X, axis=1)
  np.testing.assert_allclose(cos, [0.99504, 0.89443, 0.85749], atol=1e-5)
  w = np.exp(cos / temperature)
  expected = np.array([w[0], w[1] + w[2]]) / w.sum()
  votes = knn.knn_votes(_TRAIN_X, _TRAIN_Y, _QUERY, num_classes=2, k=3,
                        temperature=temperature)
  np.testing.assert_allclose(np.asarray(votes)[0], expected, rtol=1e-5)
  acc = knn.knn_accuracy(_TRAIN_X, _TRAIN_Y, _QUERY, np.array([0], np.int32),
                         num_classes=2, k=3, temperature=temperature)
  assert acc["top1"] == float(expected_class == 0)
  assert acc["top5"] == 1.0  # K = 2 <= 5: both classes are in the "top 5".


def test_hand_checked_k_limits_the_vote():
  # k = 1: only the closest train feature (class 0) votes, whatever T.
  votes = knn.knn_votes(_TRAIN_X, _TRAIN_Y, _QUERY, num_classes=2, k=1, temperature=1.0)
  np.testing.assert_allclose(np.asarray(votes)[0], [1.0, 0.0])
  # k = 2 at T = 1: exp(0.995) vs exp(0.894) -> shares 0.5251 / 0.4749.
  votes = knn.knn_votes(_TRAIN_X, _TRAIN_Y, _QUERY, num_classes=2, k=2, temperature=1.0)
  share0 = 1.0 / (1.0 + math.exp(0.89443 - 0.99504))
  np.testing.assert_allclose(np.asarray(votes)[0], [share0, 1 - share0], rtol=1e-4)


def test_k1_is_cosine_nearest_neighbour():
  train_x, train_y, test_x, test_y = _random_problem(0)
  sim = (test_x / np.linalg.norm(test_x, axis=1, keepdims=True)) @ (
      train_x / np.linalg.norm(train_x, axis=1, keepdims=True)).T
  expected = np.mean(train_y[np.argmax(sim, axis=1)] == test_y)
  got = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=1)
  assert got["top1"] == pytest.approx(expected)


@pytest.mark.parametrize("k, temperature, chunk_size", [(20, 0.1, 16), (7, 0.07, 37),
                                                        (50, 0.5, 5)])
def test_matches_numpy_restatement(k, temperature, chunk_size):
  train_x, train_y, test_x, test_y = _random_problem(1)
  expected = _numpy_knn(train_x.astype(np.float64), train_y, test_x.astype(np.float64),
                        test_y, num_classes=7, k=k, temperature=temperature)
  got = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=k,
                         temperature=temperature, chunk_size=chunk_size)
  assert (got["top1"], got["top5"]) == pytest.approx(expected)
  assert got["k"] == k


def test_chunking_and_padding_do_not_change_the_result():
  train_x, train_y, test_x, test_y = _random_problem(2)
  results = {
      cs: knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=10,
                           chunk_size=cs)
      for cs in (1, 8, 37, 1000)
  }
  assert len({(r["top1"], r["top5"]) for r in results.values()}) == 1


def test_k_is_clipped_to_train_size():
  train_x, train_y, test_x, test_y = _random_problem(3, n=24)
  clipped = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=200)
  full = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=24)
  assert clipped == full and clipped["k"] == 24


def test_properties_scale_invariance_and_small_temperature_limit():
  train_x, train_y, test_x, test_y = _random_problem(4)
  base = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=30)
  scaled = knn.knn_accuracy(3.0 * train_x, train_y, 0.5 * test_x, test_y, num_classes=7,
                            k=30)
  assert base == scaled  # cosine similarity ignores feature norms
  # T -> 0: the nearest neighbour's weight dominates (the max-shift keeps exp finite).
  cold = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=30,
                          temperature=1e-4)
  nearest = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=1)
  assert cold["top1"] == nearest["top1"]


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_sharded_equals_single_device(axis_type):
  assert jax.device_count() == 8
  train_x, train_y, test_x, test_y = _random_problem(5, n=160, m=48)
  single = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=20,
                            chunk_size=10)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
  sharding = NamedSharding(mesh, P("data"))
  arrays = [jax.device_put(a, sharding) for a in (train_x, train_y, test_x, test_y)]
  sharded = knn.knn_accuracy(*arrays, num_classes=7, k=20, chunk_size=10)
  assert sharded == single
  np.testing.assert_array_equal(
      knn.knn_accuracy(*arrays, num_classes=7, k=20, chunk_size=10,
                       per_example=True)["correct"],
      knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=20,
                       chunk_size=10, per_example=True)["correct"])
  votes = knn.knn_votes(*arrays[:3], num_classes=7, k=20, chunk_size=10)
  np.testing.assert_allclose(
      np.asarray(votes),
      np.asarray(knn.knn_votes(train_x, train_y, test_x, num_classes=7, k=20,
                               chunk_size=10)), rtol=1e-5, atol=1e-7)


def _bad(**overrides):
  train_x, train_y, test_x, test_y = _random_problem(6, n=10, m=4, d=3, num_classes=3)
  args = dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
              num_classes=3)
  args.update(overrides)
  return args


@pytest.mark.parametrize("overrides, match", [
    (dict(train_y=np.zeros(9, np.int32)), r"train features and labels differ.*\(10, 3\).*\(9,\)"),
    (dict(test_y=np.zeros(5, np.int32)), r"test features and labels differ.*\(4, 3\).*\(5,\)"),
    (dict(train_y=np.full(10, 3, np.int32)), r"train_y \(10,\).*\[3, 3\].*\[0, 3\)"),
    (dict(test_y=np.array([0, -1, 1, 2], np.int32)), r"test_y \(4,\).*\[-1, 2\]"),
    (dict(test_x=np.zeros((4, 5), np.float32)), r"width D differs.*\(10, 3\).*\(4, 5\)"),
    (dict(train_x=np.zeros((10,), np.float32)), r"train_x must be \[N, D\].*\(10,\)"),
    (dict(train_y=np.zeros(10, np.float32)), r"train_y must be integer"),
    (dict(num_classes=1), r"num_classes must be an int >= 2"),
    (dict(k=0), r"k must be an int >= 1"),
    (dict(temperature=0.0), r"temperature must be > 0"),
    (dict(chunk_size=0), r"chunk_size must be an int >= 1"),
])
def test_bad_inputs_raise(overrides, match):
  with pytest.raises(ValueError, match=match):
    knn.knn_accuracy(**_bad(**overrides))


def test_non_finite_features_raise():
  args = _bad()
  args["test_x"] = np.array(args["test_x"])
  args["test_x"][1, 2] = np.nan
  with pytest.raises(ValueError, match=r"test_x \(4, 3\) contains NaN"):
    knn.knn_accuracy(**args)


def test_accepts_jax_arrays_and_bfloat16():
  train_x, train_y, test_x, test_y = _random_problem(7)
  ref = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=7, k=1)
  got = knn.knn_accuracy(jnp.asarray(train_x), jnp.asarray(train_y), jnp.asarray(test_x),
                         jnp.asarray(test_y), num_classes=7, k=1)
  assert got == ref
  low = knn.knn_accuracy(jnp.asarray(train_x, jnp.bfloat16), train_y,
                         jnp.asarray(test_x, jnp.bfloat16), test_y, num_classes=7, k=1)
  assert abs(low["top1"] - ref["top1"]) <= 2 / len(test_y)
