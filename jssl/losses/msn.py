"""MSN and PMSN: prototype cross-entropy of masked anchors against sharpened targets."""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jssl.losses import _common as C
from jssl.losses.dinov2 import _log_sinkhorn


class MSNTerms(NamedTuple):
  """Auxiliary outputs of `msn` / `pmsn` (unweighted terms)."""
  ce: jax.Array             # cross-entropy H(targets, anchors), mean over the V*B anchors
  regularizer: jax.Array    # msn: me-max KL(pbar || uniform); pmsn: KL(prior || pbar)
  target_probs: jax.Array   # [B, K] sharpened (+ Sinkhorn) targets, stop-gradient


def _check(anchors, targets, prototypes):
  C.check_rank("anchors", anchors, 2, "[V*B, D]")
  C.check_rank("targets", targets, 2, "[B, D]")
  C.check_rank("prototypes", prototypes, 2, "[K, D]")
  vb, b = anchors.shape[0], targets.shape[0]
  if (b == 0 or vb % b != 0 or anchors.shape[1] != targets.shape[1]
      or prototypes.shape[1] != targets.shape[1]):
    raise ValueError(f"anchors [V*B, D], targets [B, D] and prototypes [K, D] disagree, got "
                     f"anchors: {anchors.shape}, targets: {targets.shape}, "
                     f"prototypes: {prototypes.shape}")


def _msn_core(anchors, targets, prototypes, temperature, sharpen_temperature,
              sinkhorn_iterations):
  """-> (ce, mean anchor probabilities pbar [K], target_probs [B, K])."""
  a, t, p = C.upcast(anchors, targets, prototypes)
  a, p = C.l2_normalize(a), C.l2_normalize(p)
  views = a.shape[0] // t.shape[0]
  logp = jax.nn.log_softmax(a @ p.T / temperature, axis=-1)        # [V*B, K]
  # Target branch: no gradient, neither to the targets nor to the prototypes.
  t, p_sg = jax.lax.stop_gradient(C.l2_normalize(t)), jax.lax.stop_gradient(p)
  # sharpen(softmax(z / tau), T) = softmax(z / (tau T)): exact, kept in the log domain.
  log_q = jax.nn.log_softmax(t @ p_sg.T / (temperature * sharpen_temperature), axis=-1)
  if sinkhorn_iterations > 0:
    # Sinkhorn on the (sharpened) probabilities: its log is the starting point.
    q = _log_sinkhorn(log_q, sinkhorn_iterations)
  else:
    q = jnp.exp(log_q)
  q = jax.lax.stop_gradient(q)
  q_rep = jnp.concatenate([q] * views, axis=0)                      # view-major repeat
  ce = -jnp.mean(jnp.sum(q_rep * logp, axis=-1))
  pbar = jnp.mean(jnp.exp(logp), axis=0)
  return ce, pbar, q


def msn(anchors, targets, prototypes, *, temperature: float = 0.1,
        sharpen_temperature: float = 0.25, sinkhorn_iterations: int = 3,
        me_max_weight: float = 1.0):
  """MSN loss: anchors predict the sharpened prototype assignment of the target view.

  ::

    p_a = softmax(n(a) . n(P)^T / tau)                     a < V*B anchors, view-major
    q_b = Sinkhorn(sharpen(softmax(n(t_b) . n(P)^T / tau), T))     stop-gradient
    ce  = (1/(V B)) sum_a -sum_k q_{b(a),k} log p_{a,k}
    me_max = sum_k pbar_k log pbar_k + log K = KL(pbar || uniform),  pbar = mean_a p_a
    L = ce + w * me_max

  Sinkhorn (3 iterations, rows sum to 1) runs on the sharpened probabilities, not on
  exp(scores / eps); it is computed in the log domain. Prototypes get gradient only
  through the anchor branch (the reference computes targets under no_grad).

  Args:
    anchors: [V*B, D] anchor (masked) view embeddings, view-major: row v*B + b is a
      view of target b.
    targets: [B, D] target (EMA encoder, unmasked) embeddings (stop-gradient).
    prototypes: [K, D] learnable prototypes (L2-normalised inside).
    temperature: tau of the prototype softmax (0.1).
    sharpen_temperature: T of the target sharpening (0.25).
    sinkhorn_iterations: Sinkhorn iterations on the targets (3; 0 disables).
    me_max_weight: w of the mean-entropy maximisation (1.0).

  Returns:
    (loss, MSNTerms(ce, regularizer=me_max (unweighted), target_probs [B, K])).

  Reference: Assran et al. 2022, "Masked Siamese Networks for Label-Efficient
  Learning", Sec. 3 eq. 1-2; facebookresearch/msn src/losses.py::init_msn_loss,
  distributed_sinkhorn; lightly loss/msn_loss.py::MSNLoss.

  Example:
    >>> x = jnp.eye(4)
    >>> loss, terms = msn(x, x, x)
    >>> terms.target_probs.shape
    (4, 4)
  """
  _check(anchors, targets, prototypes)
  ce, pbar, q = _msn_core(anchors, targets, prototypes, temperature, sharpen_temperature,
                          sinkhorn_iterations)
  me_max = jnp.sum(pbar * jnp.log(pbar)) + math.log(prototypes.shape[0])
  return ce + me_max_weight * me_max, MSNTerms(ce, me_max, q)


def power_law_prior(k: int, exponent: float, dtype=jnp.float32):
  """pi_k = k^(-e) / sum_j j^(-e), k = 1..K (PMSN's power-law prior; e = 0: uniform)."""
  w = jnp.arange(1, k + 1, dtype=dtype) ** (-exponent)
  return w / jnp.sum(w)


def pmsn(anchors, targets, prototypes, *, temperature: float = 0.1,
         sharpen_temperature: float = 0.25, sinkhorn_iterations: int = 3,
         power_law_exponent: float = 0.25, prior_weight: float = 1.0):
  """PMSN loss: MSN's cross-entropy with a power-law prior on the mean prediction.

  ::

    ce as in `msn`;  pi_k = k^(-e) / sum_j j^(-e);  pbar = mean_a p_a
    L = ce + w * KL(pi || pbar) = ce + w * sum_k pi_k (log pi_k - log pbar_k)

  The KL runs the other way round from MSN's me-max (KL(pbar || uniform)), so e = 0
  does not give back `msn`. Prototype k's prior mass falls with its index; the
  prototypes are otherwise exchangeable, so the model chooses which one is "k".

  Args:
    anchors, targets, prototypes, temperature, sharpen_temperature,
    sinkhorn_iterations: as `msn`.
    power_law_exponent: e (0.25).
    prior_weight: w (1.0).

  Returns:
    (loss, MSNTerms(ce, regularizer=KL(prior || pbar) (unweighted), target_probs)).

  Reference: Assran et al. 2023, "The Hidden Uniform Cluster Prior in Self-Supervised
  Learning" (PMSN, arXiv 2210.07277); no official code is public;
  lightly loss/pmsn_loss.py::PMSNLoss.

  Example:
    >>> x = jnp.eye(4)
    >>> loss, terms = pmsn(x, x, x, power_law_exponent=0.5)
    >>> bool(terms.regularizer >= 0)
    True
  """
  _check(anchors, targets, prototypes)
  ce, pbar, q = _msn_core(anchors, targets, prototypes, temperature, sharpen_temperature,
                          sinkhorn_iterations)
  prior = power_law_prior(prototypes.shape[0], power_law_exponent, pbar.dtype)
  kl = jnp.sum(prior * (jnp.log(prior) - jnp.log(pbar)))
  return ce + prior_weight * kl, MSNTerms(ce, kl, q)
