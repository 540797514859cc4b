"""MoCo losses: v1/v2 with a queue of negatives, and v3 (in-batch, symmetrised)."""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C


class QueueState(NamedTuple):
  """MoCo negatives queue: `queue` [K, D] unit rows, `ptr` int array (shape () or (1,))."""
  queue: jax.Array
  ptr: jax.Array


def enqueue(queue, ptr, keys, *, wrap: str = "reset"):
  """Writes `keys` [N, D] into `queue` [K, D] at `ptr`; returns (new_queue, new_ptr).

  wrap="reset" (lightly `MemoryBankModule`): if ptr + N >= K the rows up to the end are
  filled, the rest of the batch is dropped and ptr goes back to 0. wrap="ring"
  (facebookresearch/moco builder.py `_dequeue_and_enqueue`, which asserts K % N == 0):
  indices wrap modulo K. Both agree when K % N == 0.
  """
  k = queue.shape[0]
  n = keys.shape[0]
  p = jnp.reshape(ptr, ()).astype(jnp.int32)
  idx = p + jnp.arange(n)
  if wrap == "ring":
    new_queue = queue.at[idx % k].set(keys.astype(queue.dtype))
    new_p = (p + n) % k
  elif wrap == "reset":
    new_queue = queue.at[idx].set(keys.astype(queue.dtype), mode="drop")
    new_p = jnp.where(p + n >= k, 0, p + n)
  else:
    raise ValueError(f"wrap must be 'reset' or 'ring', got {wrap!r}")
  return new_queue, jnp.reshape(new_p, jnp.shape(ptr)).astype(jnp.asarray(ptr).dtype)


def moco(q, k, queue, queue_ptr, *, temperature: float = 0.07, wrap: str = "reset",
         axis_name: Optional[str] = None):
  """MoCo v1/v2 InfoNCE against a queue of negatives; returns the loss and the new queue.

  With u = n(q), kap = sg(n(k)), queue rows m_1..m_K (used as given, not renormalised)::

    l_i = CE( [u_i.kap_i, u_i.m_1, ..., u_i.m_K] / T, 0 )      L = mean_i l_i
    then queue[ptr:ptr+N] <- kap (the global batch of keys), ptr <- ptr + N

  Queue timing: the queue is read BEFORE the current keys are enqueued, so a key is
  never its own negative. The keys and the queue get no gradient (stop_gradient
  inside: the momentum encoder is not trained by this loss).

  Args:
    q: [B, D] query projections (online encoder, raw).
    k: [B, D] key projections (momentum encoder, raw).
    queue: [K, D] negatives (unit rows; the official code stores it as [D, K]).
    queue_ptr: int array, shape () or (1,): next row to overwrite.
    temperature: T; MoCo v1 paper / main_moco.py `--moco-t` 0.07, v2 recipe 0.2.
    wrap: queue wrap-around rule, see `enqueue` ("reset" is lightly's).
    axis_name: mesh axis inside `shard_map`: keys are all-gathered before enqueueing
      (official `concat_all_gather`), the queue is replicated.

  Returns:
    (loss, QueueState(queue=[K, D], ptr=like queue_ptr)).

  Reference: He et al. 2020, "Momentum Contrast", eq. 1 and Algorithm 1;
  facebookresearch/moco moco/builder.py (MoCo.forward, _dequeue_and_enqueue).

  Example:
    >>> q = jax.random.normal(jax.random.key(0), (4, 8)); queue = jnp.eye(16, 8)
    >>> loss, state = moco(q, q, queue, jnp.zeros((), jnp.int32))
    >>> int(state.ptr)
    4
  """
  C.check_same("q", q, "k", k, 2, "[B, D]")
  C.check_rank("queue", queue, 2, "[K, D]")
  if queue.shape[1] != q.shape[1]:
    raise ValueError(f"queue [K, D] must have the D of q, got queue: {queue.shape} and "
                     f"q: {q.shape}")
  if jnp.size(queue_ptr) != 1:
    raise ValueError(f"queue_ptr must be a scalar, got shape {jnp.shape(queue_ptr)}")
  u, kk, m = C.upcast(q, k, queue)
  u = C.l2_normalize(u)
  # Keys come from the momentum encoder: constants for this loss (no_grad in MoCo).
  kap = jax.lax.stop_gradient(C.l2_normalize(kk))
  m = jax.lax.stop_gradient(m)
  pos = jnp.sum(u * kap, axis=-1, keepdims=True)
  logits = jnp.concatenate([pos, u @ m.T], axis=1) / temperature
  per = jax.nn.logsumexp(logits, axis=-1) - logits[:, 0]
  loss = C.psum(jnp.sum(per), axis_name) / C.psum(per.shape[0], axis_name)
  # The queue is replicated state: gather the keys as a replicated array.
  new_queue, new_ptr = enqueue(queue, queue_ptr, C.all_gather_replicated(kap, axis_name),
                               wrap=wrap)
  return loss, QueueState(new_queue, new_ptr)


def _ctr(q, k, temperature, axis_name):
  """2T * mean_i CE(n(q_i).n(k_j)/T over the global j, i); k already normalised and sg'd."""
  u = C.l2_normalize(q)
  gk = C.all_gather(k, axis_name)
  logits = u @ gk.T / temperature
  labels = C.shard_offset(u.shape[0], axis_name) + jnp.arange(u.shape[0])
  lse = jax.nn.logsumexp(logits, axis=-1)
  pos = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  mean = C.psum(jnp.sum(lse - pos), axis_name) / gk.shape[0]
  return 2.0 * temperature * mean


def mocov3(q1, q2, k1, k2, *, temperature: float = 1.0, axis_name: Optional[str] = None):
  """MoCo v3 contrastive loss: in-batch keys, symmetrised by summing, each term times 2T.

  ::

    ctr(q, k) = 2T * mean_i CE( [n(q_i).n(k_j) / T]_j , i )     (j over the global batch)
    L = ctr(q1, sg(k2)) + ctr(q2, sg(k1))

  There are no q-q negatives; the positive stays in the denominator. The 2T factor
  makes the gradient scale insensitive to T (moco-v3 builder.py comment).

  Args:
    q1, q2: [B, D] predictor outputs of the online encoder for views 1 and 2.
    k1, k2: [B, D] momentum-encoder outputs for views 1 and 2 (stop-gradient inside).
    temperature: T; moco-v3 `--moco-t` default 1.0, ViT recipes 0.2.
    axis_name: mesh axis inside `shard_map`: keys are all-gathered and labels offset
      by the shard index (official concat_all_gather + N*rank labels).

  Returns:
    Scalar loss.

  Reference: Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised
  Vision Transformers", Algorithm 1; facebookresearch/moco-v3 moco/builder.py
  (MoCo.contrastive_loss, MoCo.forward).

  Example:
    >>> x = jax.random.normal(jax.random.key(0), (4, 8))
    >>> mocov3(x, x, x, x, temperature=0.2).shape
    ()
  """
  for (na, a), (nb, b) in ((("q1", q1), ("q2", q2)), (("q1", q1), ("k1", k1)),
                           (("q1", q1), ("k2", k2))):
    C.check_same(na, a, nb, b, 2, "[B, D]")
  q1, q2, k1, k2 = C.upcast(q1, q2, k1, k2)
  # Momentum-encoder outputs are targets only (computed under no_grad in moco-v3).
  k1 = jax.lax.stop_gradient(C.l2_normalize(k1))
  k2 = jax.lax.stop_gradient(C.l2_normalize(k2))
  return _ctr(q1, k2, temperature, axis_name) + _ctr(q2, k1, temperature, axis_name)
