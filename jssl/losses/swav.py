"""SwAV: Sinkhorn-Knopp codes (no gradient) and the swapped-prediction loss."""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C


def sinkhorn(scores, *, epsilon: float = 0.05, num_iters: int = 3,
             axis_name: Optional[str] = None):
  """Sinkhorn-Knopp equipartition codes; no gradient flows back to `scores`.

  ::

    Q = exp(S / eps)^T                          [K, B]
    repeat num_iters: rows (prototypes) -> mass 1/K, columns (samples) -> mass 1/B
    return (B * Q)^T                            [B, K], each row sums to exactly 1

  Computed in the log domain (logsumexp normalisations): `exp(S / 0.05)` reaches e^20
  for cosine scores and overflows float16 / loses float32 precision in the direct form.
  The initial Q /= sum(Q) of the reference is a no-op after the first row step and is
  folded into it. Prototype marginals are only approximately B/K after 3 iterations.

  Args:
    scores: [B, K] prototype scores (unit features . unit prototypes), B may include
      queued rows. With `axis_name`, B is the local shard and the sample-axis sums
      run over the global batch (official distributed_sinkhorn all_reduce).
    epsilon: entropic regularisation (0.05).
    num_iters: Sinkhorn iterations (3).
    axis_name: mesh axis inside `shard_map`.

  Returns:
    Codes Q: [B, K] (local rows), rows summing to 1.

  Reference: Caron et al. 2020, "Unsupervised Learning of Visual Features by
  Contrasting Cluster Assignments", Sec. 3.1 / Algorithm in App. A;
  facebookresearch/swav main_swav.py::distributed_sinkhorn.

  Example:
    >>> q = sinkhorn(jnp.zeros((4, 3)))
    >>> q.sum(-1).tolist()
    [1.0, 1.0, 1.0, 1.0]
  """
  C.check_rank("scores", scores, 2, "[B, K]")
  # Codes are targets (torch.no_grad in SwAV): no gradient through the assignment.
  s = jax.lax.stop_gradient(C.upcast(scores))
  k = s.shape[1]
  b_global = C.psum(s.shape[0], axis_name)
  log_q = s / epsilon
  for _ in range(num_iters):
    # Each prototype (column here) gets total mass 1/K: sum over the global samples.
    log_q = log_q - C.global_logsumexp(log_q, 0, axis_name) - math.log(k)
    # Each sample (row) gets mass 1/B.
    log_q = log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - jnp.log(b_global)
  return jnp.exp(log_q + jnp.log(b_global))


def swav(high_res, low_res=None, *, queue=None, temperature: float = 0.1,
         epsilon: float = 0.05, num_iters: int = 3, axis_name: Optional[str] = None):
  """SwAV swapped prediction over any number of crops; returns (loss, codes).

  The V = A + L crops s_0..s_{V-1} are prototype scores; the A `high_res` crops
  (A = 2 in SwAV) get codes, every other crop predicts them::

    q_i = sinkhorn(sg([s_i ; queue_i]))[rows of the batch]          i < A
    l(q, s) = -(1/B) sum_b sum_k q_bk log softmax_k(s_b / T)
    L = (1/A) sum_i (1/(V-1)) sum_{v != i} l(q_i, s_v)

  Args:
    high_res: [A, B, K] scores of the assignment crops (gradient flows through their
      log-softmax as predictors of each other).
    low_res: optional [L, B, K] scores of the other (small) crops.
    queue: optional [A, Qn, K] scores of queued embeddings per assignment crop
      (lightly convention: scores, appended after the batch; official prepends
      embeddings; Sinkhorn is permutation-equivariant so the codes are equal).
      Constant (stop-gradient). The caller maintains the queue.
    temperature: T of the prediction softmax (0.1).
    epsilon, num_iters: Sinkhorn parameters (0.05, 3).
    axis_name: mesh axis inside `shard_map` (distributed Sinkhorn, global means).

  Returns:
    (loss, codes [A, B, K]).

  Reference: Caron et al. 2020, eq. 1-3; facebookresearch/swav main_swav.py (train,
  distributed_sinkhorn); lightly loss/swav_loss.py.

  Example:
    >>> s = jax.random.normal(jax.random.key(0), (2, 4, 3))
    >>> loss, q = swav(s)
    >>> q.shape
    (2, 4, 3)
  """
  C.check_rank("high_res", high_res, 3, "[A, B, K]")
  crops = [high_res]
  if low_res is not None:
    C.check_rank("low_res", low_res, 3, "[L, B, K]")
    if low_res.shape[1:] != high_res.shape[1:]:
      raise ValueError(f"low_res [L, B, K] must match high_res [A, B, K] in B and K, got "
                       f"low_res: {low_res.shape} and high_res: {high_res.shape}")
    crops.append(low_res)
  if queue is not None:
    C.check_rank("queue", queue, 3, "[A, Qn, K]")
    if queue.shape[0] != high_res.shape[0] or queue.shape[2] != high_res.shape[2]:
      raise ValueError(f"queue [A, Qn, K] must match high_res [A, B, K] in A and K, got "
                       f"queue: {queue.shape} and high_res: {high_res.shape}")
  crops = C.upcast(*crops) if len(crops) > 1 else (C.upcast(*crops),)
  s_all = jnp.concatenate(crops, axis=0)                      # [V, B, K]
  a, b = high_res.shape[0], high_res.shape[1]
  v = s_all.shape[0]
  codes = []
  for i in range(a):
    s = s_all[i]
    if queue is not None:
      s = jnp.concatenate([s, jnp.asarray(queue[i], s.dtype)], axis=0)
    codes.append(sinkhorn(s, epsilon=epsilon, num_iters=num_iters, axis_name=axis_name)[:b])
  q = jnp.stack(codes)                                         # [A, B, K], no gradient
  logp = jax.nn.log_softmax(s_all / temperature, axis=-1)      # [V, B, K]
  b_global = C.psum(b, axis_name)
  ce = -C.psum(jnp.einsum("ibk,vbk->iv", q, logp), axis_name) / b_global   # [A, V]
  not_self = jnp.arange(a)[:, None] != jnp.arange(v)[None, :]
  loss = jnp.sum(jnp.where(not_self, ce, 0.0)) / ((v - 1) * a)
  return loss, q
