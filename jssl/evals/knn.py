"""Weighted k-nearest-neighbour classifier on frozen features.

Protocol (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination", Sec. 3.4; official code zhirongw/lemniscate.pytorch
`test.py::kNN`; re-stated in facebookresearch/dino `eval_knn.py::knn_classifier`):

1. L2-normalise train features `train_x: [N, D]` and test features `test_x: [M, D]`,
   so the dot product is the cosine similarity `s_ij = <x_i, x_j> / (|x_i| |x_j|)`.
2. For each test feature keep the `k` train features with the largest similarity
   (k = 200 in InstDisc).
3. Each neighbour votes for its label with weight `exp(s_ij / T)`; the class score
   is the sum of the weights of the neighbours carrying that class. T = 0.1 here, the
   value of the MoCo CIFAR-10 kNN monitor (facebookresearch/moco colab, `knn_t`);
   InstDisc and DINO use T = 0.07 (pass `temperature=0.07` to match them).
4. Prediction = argmax of the class scores; top-5 = the label is among the five best
   scores (ties go to the lower class index, as `jax.lax.top_k` orders them).

Accuracies are returned as fractions in [0, 1] (DINO prints percentages).

Implementation notes:
- Weights are computed as `exp((s - s_max) / T)`, with `s_max` the row's best
  similarity: the common factor `exp(s_max / T)` does not change any ranking but keeps
  `exp` finite for small T (float32 overflows past exp(88)).
- Test features are processed in chunks of `chunk_size` rows with `jax.lax.map`, so
  peak memory is O(chunk_size * N) for the similarity block, not O(M * N). The last
  chunk is padded with zero rows that are masked out of the counts.
- Memory-bounded variant (`train_chunk_size=T`): the train side is chunked too. For
  each test chunk a `jax.lax.scan` walks over contiguous train chunks of T rows and
  keeps a running top-k: the carried `[C, k]` best similarities (and their labels) are
  concatenated with the chunk's `[C, T]` block and reduced by `top_k` again. The
  largest live buffer is `[C, T + k]`, so peak extra memory is O(C * (T + k)) plus N
  inverse norms, whatever N is (1.2M ImageNet train features never form a `[C, N]`
  block). No normalised or padded copy of the train features is made either: chunks
  are sliced from the raw features and the cosine is the `[C, T]` product scaled by the
  rows' inverse norms; the last chunk is moved back to end at row N, its rows already
  merged masked to -inf. The neighbours are those of the unchunked search, ties
  included: `top_k` prefers the earlier position on ties, the carry always precedes
  the chunk and holds lower train indices, so the kept set is the one a single `top_k`
  over all N picks (lowest index first). Only the last bit of a similarity may differ
  (normalising after the product, and the matmul blocks its sums by the block shape),
  which could reorder two neighbours closer than float32 rounding. It is the usual
  merge of k-best lists across database shards; facebookresearch/dino `eval_knn.py`
  splits only the test side and so holds a `[C, N]` block.
- One jitted program (`num_classes`, `k`, `chunk_size`, `train_chunk_size` static).
  Inputs may be global `jax.Array`s sharded on their first axis; XLA inserts the
  collectives, and the result equals the single-device one (`auto_sharded` handles
  Explicit mesh axes). The streamed variant bounds the per-chunk buffers, not the
  train features themselves: those stay resident (sharded or not) as given.

Public: `knn_accuracy` (the metric), `knn_votes` (per-example class vote shares), and
the input checks / sharding adapter that `linear_probe` shares (`check_probe_inputs`,
`auto_sharded`).
"""

import contextlib
import functools

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding
import numpy as np

# Same guard as torch.nn.functional.normalize: a zero feature stays zero.
_NORM_EPS = 1e-12


def _l2_normalise(x):
  """Rows of `x: [N, D]` scaled to unit L2 norm (zero rows stay zero)."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, _NORM_EPS)


def _vote(top_sim, top_lab, *, num_classes, temperature):
  """Class scores `[C, K]` from the `[C, k]` best similarities and their labels."""
  # Shift by the row maximum before exp: rankings are unchanged. A reduce, not the
  # slice top_sim[:, :1]: XLA CPU turns top_k followed by that slice into a full sort
  # of the [C, N] block (about 10x slower at N = 50k).
  weights = jnp.exp((top_sim - jnp.max(top_sim, axis=1, keepdims=True)) / temperature)
  one_hot = jax.nn.one_hot(top_lab, num_classes, dtype=jnp.float32)  # [C, k, K]
  return jnp.einsum("ck,ckj->cj", weights, one_hot)  # [C, K]


def _chunk_scores(train_n, train_y, chunk, *, num_classes, k, temperature):
  """Class scores `[C, K]` for one chunk `[C, D]` of normalised test features."""
  sim = chunk @ train_n.T  # [C, N] cosine similarities, the only O(C * N) buffer.
  top_sim, top_idx = jax.lax.top_k(sim, k)  # [C, k], sorted, best first.
  return _vote(top_sim, train_y[top_idx], num_classes=num_classes, temperature=temperature)


def _chunk_scores_streamed(train_x, inv_norm, train_y, chunk, *, num_classes, k,
                           temperature, train_chunk_size):
  """As `_chunk_scores`, the train side streamed in chunks (module docstring).

  Args:
    train_x: `[N, D]` raw train features (not normalised: no `[N, D]` copy is made).
    inv_norm: `[N]` their inverse L2 norms.
    train_y: `[N]` int32 labels.
    chunk: `[C, D]` normalised test features.
  """
  n = train_x.shape[0]
  c, t = chunk.shape[0], train_chunk_size

  def merge(carry, i):
    best_sim, best_lab = carry  # [C, k] each, best first; ties in train-index order.
    # The last chunk is moved back to end at row N instead of padding the train set (a
    # padded copy would double its memory); the rows it shares with the previous
    # chunk were merged already and are masked out.
    start = jnp.minimum(i * t, n - t)
    tx = jax.lax.dynamic_slice_in_dim(train_x, start, t).astype(jnp.float32)
    scale = jax.lax.dynamic_slice_in_dim(inv_norm, start, t)
    ty = jax.lax.dynamic_slice_in_dim(train_y, start, t)
    fresh = start + jnp.arange(t) >= i * t
    # Cosine = <test_n, x> / |x|: the norm is applied to the [C, T] block, per column.
    sim = jnp.where(fresh, (chunk @ tx.T) * scale, -jnp.inf)  # [C, T]
    # Carry first: on ties top_k keeps the earlier position, i.e. the lower train index.
    cand_sim = jnp.concatenate([best_sim, sim], axis=1)  # [C, k + T], the peak buffer.
    cand_lab = jnp.concatenate([best_lab, jnp.broadcast_to(ty, (c, t))], axis=1)
    top_sim, pos = jax.lax.top_k(cand_sim, k)
    return (top_sim, jnp.take_along_axis(cand_lab, pos, axis=1)), None

  init = (jnp.full((c, k), -jnp.inf, jnp.float32), jnp.zeros((c, k), jnp.int32))
  (top_sim, top_lab), _ = jax.lax.scan(merge, init, jnp.arange(-(-n // t)))
  return _vote(top_sim, top_lab, num_classes=num_classes, temperature=temperature)


def _scores(train_x, train_y, test_x, temperature, *, num_classes, k, chunk_size,
            train_chunk_size=None):
  """Class scores `[M_pad, K]` of the (zero-padded) test features, chunk by chunk."""
  m, d = test_x.shape
  num_chunks = -(-m // chunk_size)
  train_y = train_y.astype(jnp.int32)
  # Zero rows pad the last chunk; callers drop them.
  test_n = jnp.pad(_l2_normalise(test_x), ((0, num_chunks * chunk_size - m), (0, 0)))
  if train_chunk_size is None:
    score_fn = functools.partial(_chunk_scores, _l2_normalise(train_x), train_y)
  else:
    sq = jnp.sum(jnp.square(train_x.astype(jnp.float32)), axis=1)
    inv_norm = 1.0 / jnp.maximum(jnp.sqrt(sq), _NORM_EPS)  # the guard of _l2_normalise
    score_fn = functools.partial(_chunk_scores_streamed, train_x, inv_norm, train_y,
                                 train_chunk_size=train_chunk_size)
  score_fn = functools.partial(score_fn, num_classes=num_classes, k=k,
                               temperature=temperature)
  # lax.map runs the chunks one after another: only one [chunk, N] block is live
  # (one [chunk, train_chunk + k] block when the train side is streamed).
  scores = jax.lax.map(score_fn, test_n.reshape(num_chunks, chunk_size, d))
  return scores.reshape(num_chunks * chunk_size, num_classes)


_STATIC = ("num_classes", "k", "chunk_size", "train_chunk_size")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _knn_counts(train_x, train_y, test_x, test_y, temperature, *, num_classes, k, chunk_size,
                train_chunk_size):
  """Numbers of top-1 and top-5 hits over the test set (int32 scalars), and the
  `[M]` top-1 hits."""
  m = test_x.shape[0]
  scores = _scores(train_x, train_y, test_x, temperature, num_classes=num_classes, k=k,
                   chunk_size=chunk_size, train_chunk_size=train_chunk_size)
  labels = jnp.pad(test_y.astype(jnp.int32), (0, scores.shape[0] - m))
  valid = jnp.arange(scores.shape[0]) < m
  _, ranked = jax.lax.top_k(scores, min(5, num_classes))  # [M_pad, top] best first.
  hits = ranked == labels[:, None]
  return (jnp.sum(hits[:, 0] & valid), jnp.sum(jnp.any(hits, axis=1) & valid),
          hits[:m, 0])


@functools.partial(jax.jit, static_argnames=_STATIC)
def _knn_votes(train_x, train_y, test_x, temperature, *, num_classes, k, chunk_size,
               train_chunk_size):
  scores = _scores(train_x, train_y, test_x, temperature, num_classes=num_classes, k=k,
                   chunk_size=chunk_size, train_chunk_size=train_chunk_size)[:test_x.shape[0]]
  return scores / jnp.sum(scores, axis=1, keepdims=True)


@jax.jit
def _label_range(y):
  return jnp.min(y), jnp.max(y)


@jax.jit
def _all_finite(x):
  return jnp.all(jnp.isfinite(x))


@contextlib.contextmanager
def auto_sharded(*arrays):
  """Yields `arrays` re-typed onto Auto mesh axes, inside that mesh's context.

  Probes are written for XLA's automatic sharding propagation. Arrays sharded on a
  mesh with `AxisType.Explicit` axes (sharding in types) would make ops such as the
  chunking reshape fail to type-check, so they are moved, zero-copy (same devices,
  same spec), onto the same mesh with Auto axes, and that mesh is made the context
  mesh for the call. Other arrays (NumPy, single device, Auto meshes) pass unchanged.

  Args:
    *arrays: arrays handed to a probe.

  Yields:
    The arrays, in order, ready for the probe's jitted core.
  """
  mesh, out = None, []
  for a in arrays:
    sharding = getattr(a, "sharding", None)
    if isinstance(sharding, NamedSharding) and isinstance(sharding.mesh, Mesh):
      names = sharding.mesh.axis_names
      auto = Mesh(sharding.mesh.devices, names, axis_types=(AxisType.Auto,) * len(names))
      mesh = mesh or auto
      if any(t != AxisType.Auto for t in sharding.mesh.axis_types):
        a = jax.device_put(a, NamedSharding(auto, sharding.spec))
    out.append(a)
  with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
    yield out


def check_probe_inputs(train_x, train_y, test_x, test_y, num_classes):
  """Validates the (features, labels) arrays shared by the probes.

  Args:
    train_x: `[N, D]` floating train features.
    train_y: `[N]` integer train labels in `[0, num_classes)`.
    test_x: `[M, D]` floating test features.
    test_y: `[M]` integer test labels in `[0, num_classes)`.
    num_classes: K, the number of classes.

  Raises:
    ValueError: naming the problem and the shapes involved. Value checks (label range,
      finite features) run only on concrete arrays, not on tracers inside a `jit`.
  """
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
    raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
  for name, x in (("train_x", train_x), ("test_x", test_x)):
    if jnp.ndim(x) != 2:
      raise ValueError(f"{name} must be [N, D], got shape {jnp.shape(x)}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
      raise ValueError(f"{name} must be floating point, got dtype {jnp.result_type(x)}")
  for name, y in (("train_y", train_y), ("test_y", test_y)):
    if jnp.ndim(y) != 1:
      raise ValueError(f"{name} must be [N], got shape {jnp.shape(y)}")
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
      raise ValueError(f"{name} must be integer class ids, got dtype {jnp.result_type(y)}")
  for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
    if x.shape[0] != y.shape[0]:
      raise ValueError(
          f"{split} features and labels differ in length: {split}_x {x.shape} vs "
          f"{split}_y {y.shape}")
    if x.shape[0] == 0:
      raise ValueError(f"{split} set is empty: {split}_x {x.shape}")
  if train_x.shape[1] != test_x.shape[1]:
    raise ValueError(
        f"feature width D differs between train and test: train_x {train_x.shape} vs "
        f"test_x {test_x.shape}")
  for name, y in (("train_y", train_y), ("test_y", test_y)):
    if isinstance(y, jax.core.Tracer):
      continue
    lo, hi = (int(v) for v in _label_range(jnp.asarray(y)))
    if lo < 0 or hi >= num_classes:
      raise ValueError(
          f"{name} {y.shape} has labels in [{lo}, {hi}], outside [0, {num_classes}) "
          f"for num_classes={num_classes}")
  for name, x in (("train_x", train_x), ("test_x", test_x)):
    if not isinstance(x, jax.core.Tracer) and not bool(_all_finite(jnp.asarray(x))):
      raise ValueError(f"{name} {x.shape} contains NaN or inf")


def _check_knn_args(k, temperature, chunk_size, train_chunk_size, n, m):
  """Validates the kNN arguments; returns `(k, chunk_size, train_chunk_size)` clipped."""
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k must be an int >= 1, got {k!r}")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature!r}")
  if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
  if train_chunk_size is not None and (
      not isinstance(train_chunk_size, (int, np.integer)) or train_chunk_size < 1):
    raise ValueError(f"train_chunk_size must be None or an int >= 1, got {train_chunk_size!r}")
  if k > n:
    logging.info("kNN: k=%d > N=%d train features; using k=%d.", k, n, n)
  if train_chunk_size is not None:
    train_chunk_size = int(min(train_chunk_size, n))
  return int(min(k, n)), int(min(chunk_size, m)), train_chunk_size


def knn_votes(train_x, train_y, test_x, *, num_classes, k=200, temperature=0.1,
              chunk_size=256, train_chunk_size=None):
  """Weighted kNN vote shares `[M, K]`: class scores of step 3, normalised to sum to 1.

  Same protocol and arguments as `knn_accuracy` (test labels are not needed). The
  shares are what the weights `exp(sim / T)` give after dividing by their sum, so they
  are independent of the overflow shift; `argmax` over classes is the kNN prediction.
  """
  check_probe_inputs(train_x, train_y, test_x, jnp.zeros(test_x.shape[:1], jnp.int32),
                     num_classes)
  k, chunk_size, train_chunk_size = _check_knn_args(
      k, temperature, chunk_size, train_chunk_size, train_x.shape[0], test_x.shape[0])
  with auto_sharded(train_x, train_y, test_x) as arrays:
    return _knn_votes(*arrays, jnp.float32(temperature), num_classes=int(num_classes), k=k,
                      chunk_size=chunk_size, train_chunk_size=train_chunk_size)


def knn_accuracy(train_x, train_y, test_x, test_y, *, num_classes, k=200, temperature=0.1,
                 chunk_size=256, train_chunk_size=None, per_example=False):
  """Weighted kNN top-1 / top-5 accuracy of cached features (InstDisc protocol).

  See the module docstring for the protocol and references.

  Args:
    train_x: `[N, D]` train features (any float dtype; computed in float32).
    train_y: `[N]` int train labels in `[0, K)`.
    test_x: `[M, D]` test features.
    test_y: `[M]` int test labels in `[0, K)`.
    num_classes: K.
    k: number of neighbours (InstDisc: 200). Clipped to N when N < k (logged): with
      fewer train features than k every train feature votes.
    temperature: T in the vote weight `exp(sim / T)`.
    chunk_size: test rows per step; peak extra memory is about `4 * chunk_size * N`
      bytes (the similarity block). Clipped to M.
    train_chunk_size: None (default): each test chunk sees all N train features at
      once. An int T: stream the train features in chunks of T rows with a running
      top-k (module docstring); peak extra memory about `8 * chunk_size * (T + k)`
      bytes (similarities and labels) plus `4 * N` (norms), and no copy of the train
      features; same neighbours. Clipped to N.
    per_example: also return `correct`, an `[M]` bool NumPy array: whether each test
      feature's best class score is its label (for paired tests, `jssl.evals.paired`).

  Returns:
    `{"top1": float, "top5": float, "k": int}`: fractions in [0, 1] of test features
    whose label is the best / among the 5 best class scores (top-5 is 1.0 when K <= 5),
    and the k actually used; `correct` with `per_example`.

  Raises:
    ValueError: on mismatched shapes, labels outside `[0, K)`, non-finite features,
      `k < 1`, `temperature <= 0`, `chunk_size < 1` or `train_chunk_size < 1`, naming
      the problem and shapes.

  Example:
    >>> x = jnp.array([[1., 0.], [0., 1.]]); y = jnp.array([0, 1])
    >>> knn_accuracy(x, y, x, y, num_classes=2, k=1)["top1"]
    1.0
  """
  check_probe_inputs(train_x, train_y, test_x, test_y, num_classes)
  m = test_x.shape[0]
  k, chunk_size, train_chunk_size = _check_knn_args(
      k, temperature, chunk_size, train_chunk_size, train_x.shape[0], m)
  with auto_sharded(train_x, train_y, test_x, test_y) as arrays:
    top1, top5, hits = _knn_counts(*arrays, jnp.float32(temperature),
                                   num_classes=int(num_classes), k=k, chunk_size=chunk_size,
                                   train_chunk_size=train_chunk_size)
  out = {"top1": int(top1) / m, "top5": int(top5) / m, "k": k}
  if per_example:
    out["correct"] = np.asarray(hits, bool)
  return out
