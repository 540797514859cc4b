"""Matryoshka wrapper: any embedding loss summed over nested prefix dimensions."""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence




def matryoshka(loss_fn: Callable, dims: Sequence[int], *,
               weights: Optional[Sequence[float]] = None,
               argnums: Optional[Sequence[int]] = None) -> Callable:
  """Wraps `loss_fn` so that it is applied to every nested prefix x[..., :m] and summed.

  ::

    L(x, y, ...) = sum_m w_m * loss_fn(x[..., :m], y[..., :m], ...)      m in dims

  Args:
    loss_fn: any jssl loss (or function) taking embedding arrays positionally; keyword
      arguments of the wrapped call are passed through unchanged. If it returns a
      tuple (loss, aux), the losses are summed and the auxes returned as a tuple
      (one per m).
    dims: increasing prefix sizes, e.g. (8, 16, 32, 64); the last usually the full D.
    weights: relative importance c_m per prefix (MRL eq. 1, all 1 by default).
    argnums: which positional arguments are sliced (default: every positional array
      of rank >= 1 whose last axis is >= max(dims)).

  Returns:
    A function with loss_fn's signature.

  Reference: Kusupati et al. 2022, "Matryoshka Representation Learning", eq. 1;
  RAIVNLab/MRL MRL.py (Matryoshka_CE_Loss: sum of weighted per-granularity losses).

  Example:
    >>> from jssl.losses import ntxent
    >>> f = matryoshka(ntxent, dims=(2, 4))
    >>> x = jax.random.normal(jax.random.key(0), (4, 4))
    >>> f(x, x, temperature=0.5).shape
    ()
  """
  dims = tuple(int(m) for m in dims)
  if not dims or any(m <= 0 for m in dims) or list(dims) != sorted(set(dims)):
    raise ValueError(f"dims must be strictly increasing positive sizes, got {dims}")
  w = (1.0,) * len(dims) if weights is None else tuple(float(c) for c in weights)
  if len(w) != len(dims):
    raise ValueError(f"weights and dims must have the same length, got weights: {len(w)} "
                     f"and dims: {len(dims)}")

  @functools.wraps(loss_fn)
  def wrapped(*args, **kwargs):
    if argnums is None:
      sliced = [i for i, a in enumerate(args)
                if getattr(a, "ndim", 0) >= 1 and a.shape[-1] >= dims[-1]]
    else:
      sliced = list(argnums)
    for i in sliced:
      if args[i].shape[-1] < dims[-1]:
        raise ValueError(f"argument {i} has shape {args[i].shape}, narrower than the "
                         f"largest Matryoshka dim {dims[-1]}")
    total, auxes = 0.0, []
    for m, c in zip(dims, w):
      call = [a[..., :m] if i in sliced else a for i, a in enumerate(args)]
      out = loss_fn(*call, **kwargs)
      if isinstance(out, tuple):
        out, aux = out
        auxes.append(aux)
      total = total + c * out
    return (total, tuple(auxes)) if auxes else total

  return wrapped


__all__ = ["matryoshka"]
