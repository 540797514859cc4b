"""NNCLR: nearest-neighbour positives from a support set, then NT-Xent.

Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations", ICCV, Sec. 3 (eq. 1-2). No
author code was released; the reference behaviour is lightly's NNCLR example
(`lightly/models/modules/nn_memory_bank.py::NNMemoryBankModule` + `NTXentLoss`),
cross-checked against solo-learn `solo/methods/nnclr.py`.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C
from jssl.losses.contrastive import ntxent
from jssl.losses.moco import QueueState, enqueue


class NNCLRAux(NamedTuple):
  """What `nnclr` returns besides the loss.

  queue: the support set after the update (`QueueState`, rows raw, ptr like the input).
  nn0, nn1: [N, D] the neighbours of z0 / z1 (raw support-set rows, constants).
  idx0, idx1: [N] int32 their rows in the support set BEFORE the update.
  """
  queue: QueueState
  nn0: jax.Array
  nn1: jax.Array
  idx0: jax.Array
  idx1: jax.Array


def nearest_neighbour(z, bank):
  """The support-set row most cosine-similar to each row of `z` (NNCLR eq. 2).

  ::

    idx_i = argmax_j n(z_i) . n(bank_j)        nn_i = bank[idx_i]   (raw row)

  The paper writes NN(z, Q) = argmin_q ||z - q||_2 on unit vectors, which is the same
  argmax of the cosine; lightly (`NNMemoryBankModule`) and solo-learn compare cosines
  and, like them, the RAW row is returned (the loss normalises it again). Everything
  is a constant: the lookup is a `stop_gradient` (the paper's support set gets no
  gradient, and argmax has none). Ties resolve to the lowest index (torch.argmax too).

  Args:
    z: [N, D] projections (raw).
    bank: [K, D] support set (raw or unit rows).

  Returns:
    (nn [N, D] in z's compute dtype, idx [N] int32).

  Example:
    >>> bank = jnp.array([[1., 0.], [0., 3.]])
    >>> nn, idx = nearest_neighbour(jnp.array([[0.1, 1.]]), bank)
    >>> idx.tolist(), nn.tolist()
    ([1], [[0.0, 3.0]])
  """
  C.check_rank("z", z, 2, "[N, D]")
  C.check_rank("bank", bank, 2, "[K, D]")
  if bank.shape[1] != z.shape[1]:
    raise ValueError(f"bank [K, D] must have the D of z [N, D], got bank: {bank.shape} and "
                     f"z: {z.shape}")
  zz, bb = C.upcast(jax.lax.stop_gradient(z), jax.lax.stop_gradient(bank))
  sim = C.l2_normalize(zz) @ C.l2_normalize(bb).T
  idx = jnp.argmax(sim, axis=1).astype(jnp.int32)
  return jnp.take(bb, idx, axis=0), idx


def nnclr(z0, z1, p0, p1, bank, bank_ptr, *, temperature: float = 0.1, wrap: str = "reset",
          axis_name: Optional[str] = None):
  """Symmetric NNCLR loss against a support set; returns the loss and the new support set.

  ::

    nn0 = NN(z0, bank), nn1 = NN(z1, bank)             (bank read BEFORE the update)
    L = 0.5 * ( ntxent(nn0, p1) + ntxent(nn1, p0) )    (jssl.losses.ntxent, T)
    then bank[ptr:ptr+N] <- z1 (raw, the global batch), ptr <- ptr + N

  The support set is read before the current batch is written, so an embedding is
  never its own neighbour. z0, z1 and the bank are constants (stop-gradient); only
  the predictions p0, p1 get gradients.

  Convention: this is lightly's NNCLR example (NNMemoryBankModule + NTXentLoss): the
  contrastive term is the 2N-anchor NT-Xent of `ntxent` (negatives from both sides,
  the mean over 2N anchors). The paper's eq. 1 (and solo-learn `nnclr_loss_func`) is
  the N-way cross-entropy of NN(z_i) against the p_k of the other view only, one
  direction per term; the two differ in the negatives, not in the positives.

  Bank update: `wrap="reset"` (lightly `MemoryBankModule`, the parity fixture): when
  ptr + N >= K the rows up to the end are written, the rest of the batch is dropped
  and ptr returns to 0. `wrap="ring"`: a strict FIFO (indices modulo K), the paper's
  queue; the two agree whenever K is a multiple of N. See `jssl.losses.enqueue`.

  Args:
    z0, z1: [N, D] projections of views 0 and 1 (raw; constants here).
    p0, p1: [N, D] predictions of views 0 and 1 (raw; differentiable).
    bank: [K, D] support set (stored raw, as lightly does; constants here).
    bank_ptr: int array, shape () or (1,): next row to overwrite.
    temperature: T; the paper uses 0.1, solo-learn's CIFAR recipe 0.2.
    wrap: "reset" or "ring", as above.
    axis_name: mesh axis inside `shard_map`: the NT-Xent negatives and the rows
      written into the (replicated) support set span the global batch.

  Returns:
    (loss, NNCLRAux(queue, nn0, nn1, idx0, idx1)).

  Reference: Dwibedi et al. 2021, Sec. 3, eq. 1-2; lightly 1.6.0 NNCLR example.

  Example:
    >>> z = jax.random.normal(jax.random.key(0), (4, 8))
    >>> loss, aux = nnclr(z, z, z, z, jnp.eye(16, 8), jnp.zeros((), jnp.int32))
    >>> int(aux.queue.ptr), aux.idx0.shape
    (4, (4,))
  """
  for (na, a), (nb, b) in ((("z0", z0), ("z1", z1)), (("z0", z0), ("p0", p0)),
                           (("z0", z0), ("p1", p1))):
    C.check_same(na, a, nb, b, 2, "[N, D]")
  if jnp.size(bank_ptr) != 1:
    raise ValueError(f"bank_ptr must be a scalar, got shape {jnp.shape(bank_ptr)}")
  nn0, idx0 = nearest_neighbour(z0, bank)
  nn1, idx1 = nearest_neighbour(z1, bank)
  value = 0.5 * (ntxent(nn0, p1, temperature=temperature, axis_name=axis_name)
                 + ntxent(nn1, p0, temperature=temperature, axis_name=axis_name))
  # The support set is replicated state: the whole global batch is written.
  keys = C.all_gather_replicated(jax.lax.stop_gradient(z1), axis_name)
  new_bank, new_ptr = enqueue(bank, bank_ptr, keys, wrap=wrap)
  return value, NNCLRAux(QueueState(new_bank, new_ptr), nn0, nn1, idx0, idx1)
