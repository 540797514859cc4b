"""Paired comparison of two classifiers on the same test images.

Does encoder A classify held-out images better than encoder B, by more than
chance? Both are scored on the same test set, so the comparison is paired:
only the images where they disagree carry information.

  wins   = #images A gets right and B gets wrong
  losses = #images A gets wrong and B gets right

Under the null hypothesis that the two are exchangeable on every image, each
of the `n = wins + losses` discordant images is a fair coin flip, so
`wins ~ Binomial(n, 1/2)`. This is McNemar's test (McNemar 1947, "Note on the
sampling error of the difference between correlated proportions",
Psychometrika 12(2)) in its exact (binomial, or sign-test) form, the test
Dietterich (1998, "Approximate statistical tests for comparing supervised
classification learning algorithms", Neural Computation 10(7), Sec. 3.2)
recommends for two classifiers on one test set. The exact form needs no
continuity correction and holds for few discordant images (digits: 450 test
images, a dozen discordant).

The p-value is one-sided, `P(X >= wins)`, since the question has a direction
(does pretraining beat the random-init encoder?).

Several runs (seeds) pool by adding their counts: under the null, every
discordant (run, image) pair is an independent fair coin (the stratified
McNemar test). The test speaks about the test images given the runs, not
about the spread between training runs; pooling over seeds is what brings the
runs' randomness in.

Public: `paired_counts` (two boolean correctness vectors -> wins, losses),
`sign_test_p` (wins, losses -> one-sided exact p), `compare` (both, as a dict
of Python values for `results.json`).
"""

import math

import numpy as np


def paired_counts(correct_a, correct_b) -> tuple[int, int]:
  """(wins, losses) of A over B from per-image correctness.

  Args:
    correct_a: `[M]` bools, whether classifier A gets each test image right.
    correct_b: `[M]` bools for classifier B, on the same images in the same order.

  Raises:
    ValueError: when the two are not 1-D of the same length.
  """
  a = np.asarray(correct_a, bool)
  b = np.asarray(correct_b, bool)
  if a.ndim != 1 or a.shape != b.shape:
    raise ValueError(f"paired comparison needs two [M] correctness vectors of the same "
                     f"test images, got shapes {a.shape} and {b.shape}")
  return int(np.sum(a & ~b)), int(np.sum(~a & b))


def sign_test_p(wins: int, losses: int) -> float:
  """One-sided exact p-value `P(X >= wins)`, `X ~ Binomial(wins + losses, 1/2)`.

  1.0 when there is no discordant image. Summed in log space
  (`lgamma`), so it stays finite for n in the hundreds of thousands.
  """
  if wins < 0 or losses < 0:
    raise ValueError(f"wins and losses must be >= 0, got {wins} and {losses}")
  n = wins + losses
  if n == 0 or wins == 0:
    return 1.0
  log_half_n = n * math.log(0.5)
  terms = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + log_half_n
           for k in range(wins, n + 1)]
  top = max(terms)
  return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def compare(correct_a, correct_b) -> dict:
  """`{"wins", "losses", "p_value"}` of A over B (module docstring)."""
  wins, losses = paired_counts(correct_a, correct_b)
  return {"wins": wins, "losses": losses, "p_value": sign_test_p(wins, losses)}
