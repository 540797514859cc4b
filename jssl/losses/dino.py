"""DINO self-distillation loss with teacher centering/sharpening and the center update."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as C


def dino(student, teacher, center, *, teacher_temp: float = 0.04, student_temp: float = 0.1,
         center_momentum: float = 0.9, axis_name: Optional[str] = None):
  """DINO cross-entropy between sharpened, centred teacher and student; returns new center.

  ::

    P_a   = softmax((t_a - c) / tau_t)          teacher views a < A (stop-gradient)
    logR_v = log_softmax(s_v / tau_s)           student views v < V
    L = mean over pairs (a, v) with v != a of  mean_b ( -sum_k P_a[b,k] logR_v[b,k] )
    c_new = m c + (1 - m) mean over the A*B (global) raw teacher rows

  Pair exclusion is by view index: student views 0..A-1 must be the same crops as the
  teacher's (global crops first). The loss uses the OLD center; the center update
  comes from the raw (uncentred) teacher outputs, after the loss.

  Args:
    student: [V, B, K] student head outputs (global crops first, then local crops).
    teacher: [A, B, K] teacher head outputs of the A (=2) global crops (stop-gradient).
    center: [K] running center (stop-gradient).
    teacher_temp: tau_t after warm-up (0.04; the recipe warms up from 0.04 to 0.04-0.07,
      schedule it outside).
    student_temp: tau_s (0.1).
    center_momentum: m (0.9).
    axis_name: mesh axis inside `shard_map`: global batch mean for the loss and the
      center (official all_reduce of the batch center).

  Returns:
    (loss, new_center [K]).

  Reference: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
  Transformers", Algorithm 1 and eq. 3-4; facebookresearch/dino main_dino.py::DINOLoss.

  Example:
    >>> s = jnp.zeros((4, 2, 8)); t = jnp.zeros((2, 2, 8))
    >>> loss, c = dino(s, t, jnp.zeros(8))
    >>> round(float(loss), 4) == round(float(jnp.log(8.0)), 4)
    True
  """
  C.check_rank("student", student, 3, "[V, B, K]")
  C.check_rank("teacher", teacher, 3, "[A, B, K]")
  C.check_rank("center", center, 1, "[K]")
  if (student.shape[1:] != teacher.shape[1:] or center.shape[0] != teacher.shape[2]):
    raise ValueError(f"student [V, B, K], teacher [A, B, K] and center [K] disagree, got "
                     f"student: {student.shape}, teacher: {teacher.shape}, "
                     f"center: {center.shape}")
  s, t, c = C.upcast(student, teacher, center)
  # Teacher and center are targets (EMA network, running statistic): no gradient.
  t, c = jax.lax.stop_gradient(t), jax.lax.stop_gradient(c)
  p = jax.nn.softmax((t - c) / teacher_temp, axis=-1)            # [A, B, K]
  logr = jax.nn.log_softmax(s / student_temp, axis=-1)           # [V, B, K]
  b_global = C.psum(s.shape[1], axis_name)
  ce = -C.psum(jnp.einsum("abk,vbk->av", p, logr), axis_name) / b_global
  pair = jnp.arange(t.shape[0])[:, None] != jnp.arange(s.shape[0])[None, :]
  loss = jnp.sum(jnp.where(pair, ce, 0.0)) / jnp.sum(pair)
  batch_center = C.psum(jnp.sum(t, axis=(0, 1)), axis_name) / (t.shape[0] * b_global)
  new_center = center_momentum * c + (1.0 - center_momentum) * batch_center
  return loss, new_center.astype(jnp.result_type(center))
