"""DINOv2 losses: KoLeo regulariser, iBOT masked-patch loss, Sinkhorn-Knopp teacher.

All three are global-array functions: under `jax.jit` on batch-sharded inputs XLA
inserts the reductions over the global batch, so no explicit collective is needed.
"""
from __future__ import annotations

import math
import jax
import jax.numpy as jnp

from jssl.losses import _common as C


def koleo(x, eps: float = 1e-8):
  """KoLeo entropy regulariser: -mean_i log distance to the nearest neighbour.

  ::

    u_i   = x_i / max(||x_i||, eps)
    nn(i) = argmax_{j != i} u_i . u_j                 (index only: no gradient through it)
    d_i   = || u_i - u_nn(i) + eps ||_2              (eps added to EVERY component)
    L     = -(1/N) sum_i log(d_i + eps)

  `eps` sits inside the norm as in torch `PairwiseDistance(p=2, eps)`, which the
  references use; it keeps exact duplicates finite (d = eps * sqrt(D)). The gradient
  reaches both u_i and its neighbour. DINOv2 applies it to each global crop's student
  CLS tokens separately and sums the crops, times `koleo_loss_weight` (0.1).

  Args:
    x: [N, D] features (e.g. student CLS tokens of ONE global crop), N >= 2.
    eps: the normalisation guard and the pairwise-distance / log epsilon (1e-8).

  Returns:
    Scalar loss.

  Reference: Sablayrolles et al. 2019, "Spreading vectors for similarity search",
  eq. 3; Oquab et al. 2023, "DINOv2", Sec. 4 ("KoLeo regularizer");
  facebookresearch/dinov2 dinov2/loss/koleo_loss.py; lightly loss/koleo_loss.py.

  Example:
    >>> x = jnp.eye(4)
    >>> round(float(koleo(x)), 4) == round(-math.log(math.sqrt(2.0)), 4)
    True
  """
  C.check_rank("x", x, 2, "[N, D]")
  u = C.l2_normalize(C.upcast(x), eps=eps)
  n = u.shape[0]
  sim = jax.lax.stop_gradient(u @ u.T)
  # Self excluded with -2 (below any cosine), as lightly; official DINOv2 uses -1.
  sim = jnp.where(jnp.eye(n, dtype=bool), -2.0, sim)
  nn = jnp.argmax(sim, axis=1)
  diff = u - u[nn] + eps
  d = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
  return -jnp.mean(jnp.log(d + eps))


def _log_sinkhorn(log_q, n_iterations: int, valid=None):
  """Sinkhorn-Knopp in the log domain on a [B, K] matrix given by its logarithm.

  The reference iteration on Q = exp(log_q)^T (K x B): Q /= sum(Q); n times: each
  prototype row to mass 1/K, each sample column to mass 1/B; return (B Q)^T. Rows with
  `valid` False do not take part (B = number of valid rows) and come back as zeros.
  """
  if valid is None:
    valid = jnp.ones(log_q.shape[0], bool)
  v = valid[:, None]
  n_valid = jnp.maximum(jnp.sum(valid), 1).astype(log_q.dtype)
  log_b = jnp.log(n_valid)
  k = log_q.shape[1]
  # Invalid rows are held at a finite value and excluded from every sum with `where`.
  log_q = jnp.where(v, log_q, 0.0)
  log_q = log_q - jax.nn.logsumexp(log_q, where=v)
  for _ in range(n_iterations):
    # Each prototype gets total mass 1/K (sum over valid samples).
    col = jax.nn.logsumexp(log_q, axis=0, keepdims=True, where=v)
    log_q = log_q - jnp.where(jnp.isfinite(col), col, 0.0) - math.log(k)
    # Each sample gets mass 1/B.
    log_q = log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - log_b
  return jnp.where(v, jnp.exp(log_q + log_b), 0.0)


def sinkhorn_knopp_teacher(teacher_out, teacher_temp: float, n_iterations: int = 3,
                           valid=None):
  """DINOv2 Sinkhorn-Knopp teacher targets (replaces centering); no gradient.

  ::

    Q = exp(t / tau_t)^T ;  Q /= sum(Q)                           [K, B]
    repeat n_iterations: prototype rows -> mass 1/K, sample columns -> mass 1/B
    return (B Q)^T                                                [B, K], rows sum to 1

  Computed in the log domain (logsumexp normalisations): the official code casts to
  float32 and exponentiates t / tau_t without subtracting the max, which overflows
  for |t| / tau_t > 88; here every logit is finite and the result equals the direct
  form in exact arithmetic (parity tested in float64).

  Args:
    teacher_out: [B, K] raw teacher head logits (DINOv2: both global crops' CLS outputs
      concatenated, B = 2 x batch; iBOT: the patch tokens, with `valid` = the mask).
    teacher_temp: tau_t (DINOv2 0.04 -> 0.07 warm-up; scheduled outside).
    n_iterations: Sinkhorn iterations (3).
    valid: optional bool [B] row mask; only valid rows are assigned and B counts them
      (iBOT's total masked-token count with static shapes). Invalid rows return 0.

  Returns:
    Q: [B, K] (float32 or float64), each valid row summing to 1.

  Reference: Oquab et al. 2023, "DINOv2", Sec. 4; Caron et al. 2020 (SwAV) Sec. 3.1;
  facebookresearch/dinov2 dinov2/loss/dino_clstoken_loss.py::sinkhorn_knopp_teacher and
  dinov2/loss/ibot_patch_loss.py::sinkhorn_knopp_teacher.

  Example:
    >>> q = sinkhorn_knopp_teacher(jnp.zeros((4, 3)), 0.04)
    >>> [round(r, 6) for r in q.sum(-1).tolist()]
    [1.0, 1.0, 1.0, 1.0]
  """
  C.check_rank("teacher_out", teacher_out, 2, "[B, K]")
  if valid is not None and jnp.shape(valid) != teacher_out.shape[:1]:
    raise ValueError(f"valid must have shape [B] = {teacher_out.shape[:1]}, got "
                     f"{jnp.shape(valid)}")
  t = jax.lax.stop_gradient(C.upcast(teacher_out))
  valid = None if valid is None else jnp.asarray(valid, bool)
  return _log_sinkhorn(t / teacher_temp, n_iterations, valid)


def _ibot_terms(s, t, c, teacher_temp, student_temp, teacher_probs):
  """Per-token cross-entropy -sum_k P log softmax(s / tau_s) and the teacher P."""
  if teacher_probs is None:
    p = jax.nn.softmax((t - c) / teacher_temp, axis=-1)
  else:
    p = jnp.asarray(teacher_probs, s.dtype)
  p = jax.lax.stop_gradient(p)
  ce = -jnp.sum(p * jax.nn.log_softmax(s / student_temp, axis=-1), axis=-1)
  return ce, p


def _new_center(center, c, t_sum, count, momentum):
  # A step with no masked token leaves the center as it is (its batch mean is undefined).
  mean = t_sum / jnp.maximum(count, 1).astype(t_sum.dtype)
  upd = momentum * c + (1.0 - momentum) * mean
  return jnp.where(count > 0, upd, c).astype(jnp.result_type(center))


def ibot_patch(student_out, teacher_out, mask, center, *, teacher_temp: float,
               student_temp: float = 0.1, center_momentum: float = 0.9,
               teacher_probs=None):
  """iBOT masked-patch loss as in DINOv2, on the gathered masked tokens; returns new center.

  ::

    rows m < M are the masked tokens in np.nonzero(mask) order (image-major)
    P_m  = softmax((t_m - c) / tau_t)            (stop-gradient; c is the OLD center)
    CE_m = -sum_k P_mk log softmax(s_m / tau_s)_k
    L    = (1/B) sum_m CE_m / max(n_masked(image(m)), 1)
    c_new = m c + (1 - m) mean_m t_m              (raw teacher rows, after the loss)

  B counts ALL images, also those without a masked token (DINOv2 masks only half of
  them), so L is not a mean over the M tokens. DINOv2 scales the loss by 2 x
  1/n_global_crops = 1, then by `ibot.loss_weight`. With no masked token the center
  stays unchanged. `ibot_patch_dense` is the static-shape (jit-friendly) form.

  Args:
    student_out: [M, K] student head outputs of the masked tokens (differentiable).
    teacher_out: [M, K] teacher head outputs of the same tokens (stop-gradient).
    mask: [B, H, W] or [B, N] bool, exactly M True entries.
    center: [K] running center (stop-gradient).
    teacher_temp: tau_t (DINOv2 0.04 -> 0.07 warm-up; scheduled outside).
    student_temp: tau_s (0.1).
    center_momentum: m (0.9).
    teacher_probs: optional [M, K] teacher targets replacing the centred softmax, e.g.
      `sinkhorn_knopp_teacher(teacher_out, tau_t)` (DINOv2 `centering: sinkhorn_knopp`).

  Returns:
    (loss, new_center [K]).

  Reference: Zhou et al. 2022, "iBOT", eq. 2; Oquab et al. 2023, "DINOv2", Sec. 4;
  facebookresearch/dinov2 dinov2/loss/ibot_patch_loss.py (forward_masked,
  softmax_center_teacher, update_center) and dinov2/train/ssl_meta_arch.py;
  lightly loss/ibot_loss.py::IBOTPatchLoss.

  Example:
    >>> m = jnp.array([[True, False], [False, False]])
    >>> loss, c = ibot_patch(jnp.zeros((1, 8)), jnp.zeros((1, 8)), m, jnp.zeros(8),
    ...                      teacher_temp=0.04)
    >>> round(float(loss), 4) == round(float(jnp.log(8.0)) / 2, 4)
    True
  """
  C.check_same("student_out", student_out, "teacher_out", teacher_out, 2, "[M, K]")
  C.check_rank("center", center, 1, "[K]")
  if mask.ndim not in (2, 3) or center.shape[0] != student_out.shape[1]:
    raise ValueError(f"mask must be [B, H, W] or [B, N] and center [K], got mask: "
                     f"{mask.shape}, center: {center.shape}, student_out: {student_out.shape}")
  s, t, c = C.upcast(student_out, teacher_out, center)
  t, c = jax.lax.stop_gradient(t), jax.lax.stop_gradient(c)
  mask = jnp.asarray(mask, bool).reshape(mask.shape[0], -1)
  counts = jnp.sum(mask, axis=1)                                   # [B]
  # Rows are image-major, so image b's weight 1/n_b repeats n_b times (static length M).
  weight = jnp.repeat(1.0 / jnp.maximum(counts, 1).astype(s.dtype), counts,
                      total_repeat_length=s.shape[0])
  ce, _ = _ibot_terms(s, t, c, teacher_temp, student_temp, teacher_probs)
  loss = jnp.sum(ce * weight) / mask.shape[0]
  new_center = _new_center(center, c, jnp.sum(t, axis=0), s.shape[0], center_momentum)
  return loss, new_center


def ibot_patch_dense(student, teacher, mask, center, *, teacher_temp: float,
                     student_temp: float = 0.1, center_momentum: float = 0.9,
                     teacher_probs=None):
  """`ibot_patch` with static shapes: all tokens in, unmasked ones weighted 0.

  Equals `ibot_patch(student[mask], teacher[mask], mask, ...)` (tested) without the
  data-dependent gather, so it runs under `jax.jit` with any mask. Unmasked tokens get
  no gradient and do not enter the center.

  Args:
    student: [B, N, K] student head outputs of every patch token (differentiable).
    teacher: [B, N, K] teacher head outputs (stop-gradient).
    mask: [B, N] (or [B, H, W]) bool, True = masked token that takes part.
    center: [K] running center (stop-gradient).
    teacher_temp, student_temp, center_momentum: as `ibot_patch`.
    teacher_probs: optional [B, N, K] targets, e.g. `sinkhorn_knopp_teacher` on the
      flattened tokens with `valid=mask.reshape(-1)`.

  Returns:
    (loss, new_center [K]).

  Reference: as `ibot_patch`; facebookresearch/dinov2 ibot_patch_loss.py::forward (the
  unmasked-gather form).

  Example:
    >>> s = jnp.zeros((2, 3, 8)); m = jnp.zeros((2, 3), bool)
    >>> float(ibot_patch_dense(s, s, m, jnp.zeros(8), teacher_temp=0.04)[0])
    0.0
  """
  C.check_same("student", student, "teacher", teacher, 3, "[B, N, K]")
  C.check_rank("center", center, 1, "[K]")
  mask = jnp.asarray(mask, bool).reshape(mask.shape[0], -1)
  if mask.shape != student.shape[:2] or center.shape[0] != student.shape[2]:
    raise ValueError(f"student/teacher [B, N, K], mask [B, N] and center [K] disagree, got "
                     f"student: {student.shape}, mask: {mask.shape}, center: {center.shape}")
  s, t, c = C.upcast(student, teacher, center)
  t, c = jax.lax.stop_gradient(t), jax.lax.stop_gradient(c)
  # Unmasked tokens are zeroed before any arithmetic: whatever they hold (even inf/NaN)
  # reaches neither the value nor the gradient (0 * NaN would).
  m3 = mask[..., None]
  s, t = jnp.where(m3, s, 0.0), jnp.where(m3, t, 0.0)
  if teacher_probs is not None:
    teacher_probs = jnp.where(m3, jnp.asarray(teacher_probs, s.dtype), 0.0)
  ce, _ = _ibot_terms(s, t, c, teacher_temp, student_temp, teacher_probs)   # [B, N]
  counts = jnp.sum(mask, axis=1, keepdims=True).astype(s.dtype)
  loss = jnp.sum(jnp.where(mask, ce / jnp.maximum(counts, 1.0), 0.0)) / mask.shape[0]
  t_sum = jnp.sum(t, axis=(0, 1))
  new_center = _new_center(center, c, t_sum, jnp.sum(mask), center_momentum)
  return loss, new_center
