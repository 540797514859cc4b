"""Linear probe on frozen features: L2-regularised multinomial logistic regression.

Protocol (what `results.json` reports as `linear_top1`):

1. Standardise: every feature dimension is shifted and scaled by the mean and standard
   deviation of the train features (`train_x: [N, D]`); the same statistics are applied
   to the test features. Constant dimensions (std 0) are only centred. The probe is
   thus invariant to a per-dimension affine change of the features.
2. Model: logits `z = x W^T + b`, `W: [K, D]`, `b: [K]`; objective
   `mean_i CE(softmax(z_i), y_i) + (l2 / 2) * |W|_F^2` (bias not penalised), i.e.
   scikit-learn's `LogisticRegression(C=1 / (l2 * N))` on the standardised features.
3. Optimiser: full batch, `steps` iterations (default 50) from zero, each one pass over
   the data; see `_fit`.
4. Model selection: a held-out `val_fraction` (10%) of the train features, drawn by a
   NumPy permutation seeded with `seed` (deterministic), picks `l2` from `l2_grid`
   (log-spaced 1e-6 ... 1e-2): one fit per grid value on the other 90%, the grid
   vmapped into one program; the best held-out top-1 wins (ties go to the stronger
   regularisation). Step 1's statistics use all train features (they carry no labels).
5. Refit on all train features with the chosen `l2`, warm-started from that grid fit;
   report test top-1 (and top-5 when K > 5) as fractions in [0, 1].

The optimiser (step 3) is Böhning's bound-optimisation step for multinomial logistic
regression, accelerated. For softmax cross-entropy the Hessian w.r.t. `theta = [W; b]`
is bounded by `B = I_K (x) (S / 2 + diag(l2, ..., l2, 0))`, with `S` the second-moment
matrix of `[x, 1]` (Böhning 1992, "Multinomial logistic regression algorithm", Ann.
Inst. Statist. Math. 44, Lemma / eq. 2.3), so `theta - B^-1 grad` never increases the
objective. The bound comes from one `[D, D]` Gram matrix and one eigendecomposition
shared by every grid value, and adapts to correlated, badly scaled features (typical of SSL
embeddings) where plain gradient steps crawl; Nesterov/FISTA momentum (Beck & Teboulle
2009) with gradient adaptive restart (O'Donoghue & Candès 2015) accelerates it.
Why not `optax.lbfgs` (measured while writing this, 1.3k x 512 features, 2 loaded CPU
cores): vmapping its zoom line search over a 5-value grid compiled in 5.6 CPU-s and
ran 14x slower than one fit, as every batched line-search loop runs to the slowest
member; this loop has no line search and no data-dependent control flow, so a grid
step is one batched matmul, and the whole probe compiles in ~3 CPU-s there.

References for the protocol: logistic regression on frozen, standardised features with
an L2 strength swept on a validation split, then refit, is the CLIP linear probe
(Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", Appendix A.3: scikit-learn L-BFGS, lambda swept over 1e-6 ... 1e6) and
Kolesnikov et al. 2019, "Revisiting Self-Supervised Visual Representation Learning",
Sec. 3.3 (L-BFGS logistic regression on frozen features).

Everything runs in one jitted program (one compile per input shape). Inputs may be
global `jax.Array`s sharded on their first axis: the sums over examples (statistics,
Gram, gradient) become all-reduces inserted by XLA, and results match one device up
to float rounding in those sums.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jssl.evals.knn import auto_sharded, check_probe_inputs

DEFAULT_L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
# Guards the standardisation of constant feature dimensions.
_STD_EPS = 1e-6
# Ridge added to Böhning's bound, relative to its trace (see `_probe`).
_RIDGE = 1e-5


def objective(theta, x, one_hot, weight, l2):
  """Weighted mean softmax cross-entropy + `(l2 / 2) |W|^2`.

  Args:
    theta: `[K, D + 1]`, the class weights `W: [K, D]` with the bias `b: [K]` appended
      as a last column (class-major, as scikit-learn's `coef_`).
    x: `[N, D]` (standardised) features.
    one_hot: `[N, K]` one-hot labels.
    weight: `[N]` per-example weights (0 drops an example).
    l2: L2 strength on `W`.

  Returns:
    The scalar objective.
  """
  w, b = theta[:, :-1], theta[:, -1]
  ce = -jnp.sum(one_hot * jax.nn.log_softmax(x @ w.T + b), axis=-1)  # [N]
  return jnp.sum(weight * ce) / jnp.sum(weight) + 0.5 * l2 * jnp.sum(w * w)


def _grad(theta, x, one_hot, weight, l2):
  """Gradient of `objective` w.r.t. `theta: [K, D + 1]`, written out by hand.

  d/dz of the weighted mean cross-entropy is `(softmax(z) - one_hot) * w_i / sum(w)`.
  The class-major layout makes the weight gradient `dz^T x: [K, D]`, which XLA CPU
  runs about 2x faster than the `x^T dz: [D, K]` of a `[D, K]` layout (measured at
  50k x 512; XLA folds an explicit transpose back into the slow form).
  """
  w, b = theta[:, :-1], theta[:, -1]
  p = jax.nn.softmax(x @ w.T + b)  # [N, K]
  dz = (p - one_hot) * (weight / jnp.sum(weight))[:, None]  # [N, K]
  grad_w = dz.T @ x + l2 * w  # [K, D]
  return jnp.concatenate([grad_w, jnp.sum(dz, axis=0)[:, None]], axis=1)


def _fit(x, one_hot, weight, l2, eigvecs, curvature, theta, *, steps):
  """`steps` accelerated Böhning steps on `objective` from `theta: [K, D + 1]`.

  Args:
    x, one_hot, weight, l2: as in `objective`.
    eigvecs: `[D, D]` eigenvectors `V` of the features' second moment.
    curvature: `[D + 1]` diagonal of the bound `B` in the basis `(V, bias)`.
    theta: `[K, D + 1]` starting point.
    steps: number of iterations (static).

  The step `theta - B^-1 grad` minimises Böhning's quadratic upper bound, a safe step
  of size 1; FISTA momentum (Beck & Teboulle 2009, "A Fast Iterative Shrinkage-
  Thresholding Algorithm", eq. 4.1-4.3) accelerates it and is reset whenever the
  gradient opposes the last move (O'Donoghue & Candès 2015, "Adaptive Restart for
  Accelerated Gradient Schemes", Sec. 3.2, gradient scheme). One pass over x per step.
  """

  def solve(grad):  # B^-1 grad: rotate into V, divide by the curvature, rotate back.
    step_w = ((grad[:, :-1] @ eigvecs) / curvature[:-1]) @ eigvecs.T  # [K, D]
    return jnp.concatenate([step_w, grad[:, -1:] / curvature[-1]], axis=1)

  def body(_, carry):
    theta, y, t = carry
    grad = _grad(y, x, one_hot, weight, l2)
    theta_next = y - solve(grad)
    t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
    restart = jnp.vdot(grad, theta_next - theta) > 0
    momentum = jnp.where(restart, 0.0, (t - 1.0) / t_next)
    y_next = theta_next + momentum * (theta_next - theta)
    return theta_next, y_next, jnp.where(restart, 1.0, t_next)

  theta, _, _ = jax.lax.fori_loop(0, steps, body, (theta, theta, jnp.float32(1.0)))
  return theta


def _hits(x, y, theta, top):
  """Per-example top-1 and top-`top` hits of the linear classifier, `[N]` bools."""
  _, ranked = jax.lax.top_k(x @ theta[:, :-1].T + theta[:, -1], top)  # [N, top], best first.
  hits = ranked == y[:, None]
  return hits[:, 0], jnp.any(hits, axis=1)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _probe(train_x, train_y, test_x, test_y, val_idx, l2_grid, *, num_classes, steps):
  """The whole protocol (module docstring) as one program; returns device arrays."""
  n, d = train_x.shape
  n_val = val_idx.shape[0]
  train_x = train_x.astype(jnp.float32)
  train_y = train_y.astype(jnp.int32)

  # Step 1: train statistics; constant dimensions keep scale 1 (only centred).
  mean = jnp.mean(train_x, axis=0)
  std = jnp.std(train_x, axis=0)
  scale = jnp.where(std > _STD_EPS, std, 1.0)
  xs = (train_x - mean) / scale
  xt = (test_x.astype(jnp.float32) - mean) / scale
  one_hot = jax.nn.one_hot(train_y, num_classes, dtype=jnp.float32)

  # Step 4: held-out rows enter as 0/1 weights rather than a gather of the other 90%,
  # so the grid fits and the refit share one (possibly sharded) standardised array.
  is_val = jnp.zeros((n,), jnp.bool_).at[val_idx].set(True)
  fit_weight = jnp.where(is_val, 0.0, 1.0)

  # Böhning's bound. The features are centred, so the second moment of [x, 1] is
  # blockdiag(C, 1) with C = xs^T xs / n, and one eigendecomposition C = V diag(e) V^T
  # serves every l2: B = blockdiag(V diag(e / 2 + l2) V^T, 1 / 2). The grid fits use
  # n / n_fit times the full-data moment, a valid bound for any subset of the rows (a
  # sum of PSD terms over a subset is at most the sum over all).
  e, eigvecs = jnp.linalg.eigh(xs.T @ xs / n)
  e = jnp.maximum(e, 0.0)
  # The ridge only overstates curvature: it keeps the bound valid in near-null
  # directions where float32 rounding of C or eigh could understate it (steps along
  # such directions would otherwise overshoot and diverge), at the cost of slower
  # progress along them.
  ridge = _RIDGE * (0.5 * jnp.sum(e) + 0.5)
  def curvature(l2, scale):
    return jnp.concatenate([scale * 0.5 * e + l2, jnp.full((1,), 0.5 * scale)]) + ridge

  fit = functools.partial(_fit, steps=steps)
  zeros = jnp.zeros((num_classes, d + 1), jnp.float32)
  subset = n / (n - n_val)
  grid_theta = jax.vmap(
      lambda l2: fit(xs, one_hot, fit_weight, l2, eigvecs, curvature(l2, subset), zeros))(
          l2_grid)  # [G, K, D + 1]
  val_hits = jax.vmap(lambda th: _hits(xs, train_y, th, 1)[0])(grid_theta)  # [G, N]
  val_top1 = jnp.sum(val_hits & is_val, axis=1) / n_val  # [G]
  # The grid is ascending, so the last maximum is the strongest regularisation of ties.
  best = l2_grid.shape[0] - 1 - jnp.argmax(val_top1[::-1])

  # Step 5: refit on everything, warm-started from the selected grid solution.
  l2, ones = l2_grid[best], jnp.ones((n,), jnp.float32)
  theta = fit(xs, one_hot, ones, l2, eigvecs, curvature(l2, 1.0), grid_theta[best])
  top1, top5 = _hits(xt, test_y.astype(jnp.int32), theta, min(5, num_classes))
  train_top1, _ = _hits(xs, train_y, theta, 1)
  return dict(top1=jnp.mean(top1), top5=jnp.mean(top5), best=best, val_top1=val_top1,
              train_top1=jnp.mean(train_top1), loss=objective(theta, xs, one_hot, ones, l2),
              correct=top1)


def linear_probe(train_x, train_y, test_x, test_y, *, num_classes, l2_grid=DEFAULT_L2_GRID,
                 steps=50, val_fraction=0.1, seed=0, per_example=False):
  """Linear-probe accuracy of cached features (protocol in the module docstring).

  Args:
    train_x: `[N, D]` train features (any float dtype; computed in float32).
    train_y: `[N]` int train labels in `[0, K)`.
    test_x: `[M, D]` test features.
    test_y: `[M]` int test labels in `[0, K)`.
    num_classes: K.
    l2_grid: candidate L2 strengths (> 0) of `(l2 / 2) |W|^2` next to the mean
      cross-entropy; sorted ascending here.
    steps: iterations per fit (every grid fit and the refit), one data pass each.
    val_fraction: share of the train features held out to choose `l2`.
    seed: seeds the held-out permutation, the only randomness.
    per_example: also return `correct`, an `[M]` bool NumPy array: whether each test
      feature's top-1 prediction is its label (for paired tests, `jssl.evals.paired`).

  Returns:
    A dict of Python values: `top1` (and `top5` when K > 5), fractions in [0, 1] of the
    test features; `l2`, the chosen strength; `l2_grid` (ascending) and `val_top1`,
    the held-out top-1 of each grid value; `train_top1` and `loss` (the objective) of
    the refit model; `correct` with `per_example`.

  Raises:
    ValueError: on mismatched shapes, labels outside `[0, K)`, non-finite features, an
      empty or non-positive `l2_grid`, `steps < 1`, or a `val_fraction` that leaves no
      held-out or no fitting example; the message names the problem and the shapes.

  Example:
    >>> x = jnp.array([[-2.], [-1.], [1.], [2.]] * 5); y = jnp.array([0, 0, 1, 1] * 5)
    >>> linear_probe(x, y, x, y, num_classes=2)["top1"]
    1.0
  """
  check_probe_inputs(train_x, train_y, test_x, test_y, num_classes)
  grid = np.sort(np.asarray(l2_grid, np.float64).reshape(-1))
  if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
    raise ValueError(f"l2_grid must be non-empty, finite and > 0, got {l2_grid!r}")
  if not isinstance(steps, (int, np.integer)) or steps < 1:
    raise ValueError(f"steps must be an int >= 1, got {steps!r}")
  n = train_x.shape[0]
  n_val = int(round(val_fraction * n)) if 0 < val_fraction < 1 else 0
  if not 1 <= n_val < n:
    raise ValueError(
        f"val_fraction={val_fraction!r} of train_x {train_x.shape} holds out {n_val} "
        "examples; need at least 1 held out and 1 left to fit")
  # Drawn on the host: deterministic across backends and shardings, and no PRNG or
  # sort to compile. Sorted so the gather of held-out rows reads memory in order.
  val_idx = np.sort(np.random.default_rng(seed).permutation(n)[:n_val]).astype(np.int32)
  with auto_sharded(train_x, train_y, test_x, test_y) as arrays:
    out = _probe(*arrays, val_idx, jnp.asarray(grid, jnp.float32),
                 num_classes=int(num_classes), steps=int(steps))
  out = jax.device_get(out)
  result = {
      "top1": float(out["top1"]),
      "l2": float(grid[int(out["best"])]),
      "l2_grid": [float(v) for v in grid],
      "val_top1": [float(v) for v in out["val_top1"]],
      "train_top1": float(out["train_top1"]),
      "loss": float(out["loss"]),
  }
  if num_classes > 5:
    result["top5"] = float(out["top5"])
  if per_example:
    result["correct"] = np.asarray(out["correct"], bool)
  return result
