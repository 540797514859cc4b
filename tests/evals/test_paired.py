"""The exact paired (McNemar sign) test against hand-computed binomial tails."""
import math

import numpy as np
import pytest

from jssl.evals import paired


def test_counts_only_the_discordant_images():
  a = np.array([1, 1, 0, 0, 1, 0], bool)
  b = np.array([1, 0, 1, 0, 0, 0], bool)
  assert paired.paired_counts(a, b) == (2, 1)
  assert paired.paired_counts(b, a) == (1, 2)


@pytest.mark.parametrize("wins,losses,expected", [
    (0, 0, 1.0),
    (0, 5, 1.0),
    (1, 0, 0.5),
    (3, 0, 1 / 8),
    (2, 1, 4 / 8),          # P(X >= 2), n=3: (3 + 1) / 8
    (9, 1, 11 / 1024),      # (C(10,9) + C(10,10)) / 2^10
    (5, 5, 638 / 1024),     # sum_{k>=5} C(10,k) / 2^10
])
def test_sign_test_matches_the_binomial_tail(wins, losses, expected):
  assert paired.sign_test_p(wins, losses) == pytest.approx(expected, rel=1e-12)


def test_large_counts_stay_finite_and_agree_with_exact_integers():
  n, w = 2000, 1060
  exact = sum(math.comb(n, k) for k in range(w, n + 1)) / 2 ** n
  assert paired.sign_test_p(w, n - w) == pytest.approx(exact, rel=1e-9)
  assert 0.0 <= paired.sign_test_p(150_000, 100_000) < 1e-100
  # A tie among many discordant images: about one half (exactly 1/2 + P(X = n/2) / 2).
  half = paired.sign_test_p(50_000, 50_000)
  assert 0.5 < half < 0.503


def test_compare_and_errors():
  out = paired.compare([True, True, True, False], [False, False, False, False])
  assert out == {"wins": 3, "losses": 0, "p_value": pytest.approx(1 / 8, rel=1e-12)}
  with pytest.raises(ValueError, match="same test images"):
    paired.compare([True, False], [True])
  with pytest.raises(ValueError, match=">= 0"):
    paired.sign_test_p(-1, 2)
