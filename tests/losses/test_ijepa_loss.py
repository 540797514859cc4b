"""I-JEPA loss: float64 parity with the reference fixtures (value, targets, gradients of the
smooth-L1 and MSE variants), a numpy re-statement with two context masks, and padding."""
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses_testing as lt
from jssl import losses

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity_wave2")
CASES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(HERE, "ijepa_c*.npz")))


def _load(name):
  with np.load(os.path.join(HERE, name + ".npz"), allow_pickle=False) as d:
    arrays = {k: d[k] for k in d.files if k != "meta_json"}
    meta = json.loads(str(d["meta_json"]))
  return arrays, meta["hyperparameters"]


def _both(pred, tokens, masks, num_context):
  def sl1(p):
    return losses.ijepa(p, tokens, masks, num_context)
  def mse(p):
    return losses.ijepa(p, tokens, masks, num_context)[1]["loss_mse"]
  (value, aux), g = jax.value_and_grad(sl1, has_aux=True)(pred)
  return value, aux, g, jax.grad(mse)(pred)


def test_fixtures_present():
  assert CASES, HERE


@pytest.mark.parametrize("name", CASES)
def test_parity(x64, name):
  arr, hp = _load(name)
  assert hp["smooth_l1_beta"] == 1.0 and hp["layer_norm_eps"] == 1e-5
  fn = lt.jit(_both, static_argnums=3)
  value, aux, g, g_mse = fn(jnp.asarray(arr["pred"]), jnp.asarray(arr["target_tokens"]),
                            jnp.asarray(arr["masks_pred"]), hp["n_enc_masks"])
  for what, actual, expected in [("loss", value, arr["loss"]), ("targets", aux["targets"],
                                 arr["targets"]), ("loss_mse", aux["loss_mse"], arr["loss_mse"]),
                                 ("grad_pred", g, arr["grad_pred"]),
                                 ("grad_pred_mse", g_mse, arr["grad_pred_mse"])]:
    assert np.asarray(actual).dtype == np.float64, what
    lt.assert_close(actual, expected, rtol=1e-9, name=f"{name}:{what}")
  # The fixture spans both smooth-L1 branches.
  d = np.abs(arr["pred"] - arr["targets"])
  assert (d < 1).any() and (d > 1).any()


def _numpy_ijepa(pred, tokens, masks, num_context):
  mu = tokens.mean(-1, keepdims=True)
  h = (tokens - mu) / np.sqrt(((tokens - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
  m_p, b, _ = masks.shape
  rows = []
  for i in range(m_p):            # pred mask i, context mask j, image b
    for _ in range(num_context):
      for k in range(b):
        rows.append(h[k, masks[i, k]])
  d = pred - np.stack(rows)
  return np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5).mean()


def test_two_context_masks_and_padding(x64):
  """M_c = 2 against a loop re-statement; padded slots are ignored exactly."""
  rng = np.random.default_rng(0)
  b, n, d, p, m_p = 3, 9, 8, 4, 2
  tokens = rng.standard_normal((b, n, d))
  masks = rng.integers(0, n, (m_p, b, p))
  pred = 2 * rng.standard_normal((m_p * 2 * b, p, d))
  got = losses.ijepa(jnp.asarray(pred), jnp.asarray(tokens), jnp.asarray(masks), 2)[0]
  lt.assert_close(got, _numpy_ijepa(pred, tokens, masks, 2), rtol=1e-12)
  # Pad every target list with 2 junk slots: same value, zero gradient there.
  masks_pad = np.concatenate([masks, np.zeros((m_p, b, 2), int)], axis=2)
  valid = np.arange(p + 2) < p
  valid = np.broadcast_to(valid, masks_pad.shape)
  pred_pad = np.concatenate([pred, 1e3 * np.ones((m_p * 2 * b, 2, d))], axis=1)
  fn = lambda x: losses.ijepa(x, jnp.asarray(tokens), jnp.asarray(masks_pad), 2,  # noqa: E731
                              jnp.asarray(valid))[0]
  value, g = jax.value_and_grad(fn)(jnp.asarray(pred_pad))
  lt.assert_close(value, got, rtol=1e-12)
  assert np.all(np.asarray(g)[:, p:] == 0)
  # No gradient into the target tokens.
  gt = jax.grad(lambda t: losses.ijepa(jnp.asarray(pred), t, jnp.asarray(masks), 2)[0])(
      jnp.asarray(tokens))
  assert np.all(np.asarray(gt) == 0)
