"""float64 parity of `losses.nnclr` / `nearest_neighbour` and `losses.tico` with the
lightly 1.6.0 reference fixtures (parity_wave2/, values, gradients and stored state),
plus the support-set wrap-around and the TiCo conventions the fixtures do not cover."""
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
RTOL = 1e-9


def _cases(prefix):
  return sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(HERE, prefix + "_c*")))


def _load(name):
  with np.load(os.path.join(HERE, name + ".npz"), allow_pickle=False) as d:
    arrays = {k: d[k] for k in d.files if k != "meta_json"}
    meta = json.loads(str(d["meta_json"]))
  return arrays, meta["hyperparameters"]


def test_fixtures_are_vendored():
  assert _cases("nnclr_nn") and _cases("tico")


@pytest.mark.parametrize("name", _cases("nnclr_nn"))
def test_nnclr_parity(x64, name):
  a, hp = _load(name)
  ptr = jnp.asarray(hp["bank_ptr"], jnp.int64).reshape(1)
  z0, z1, bank = (jnp.asarray(a[k]) for k in ("z0", "z1", "bank"))

  def f(p0, p1):
    return losses.nnclr(z0, z1, p0, p1, bank, ptr, temperature=hp["temperature"])

  (value, aux), (g0, g1) = lt.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
      jnp.asarray(a["p0"]), jnp.asarray(a["p1"]))
  for what, actual in (("loss", value), ("grad_p0", g0), ("grad_p1", g1), ("nn0", aux.nn0),
                       ("nn1", aux.nn1), ("bank_after", aux.queue.queue)):
    assert np.asarray(actual).dtype == np.float64, what
    lt.assert_close(actual, a[what], rtol=RTOL, name=f"{name}:{what}")
  np.testing.assert_array_equal(aux.idx0, a["nn_idx0"])
  np.testing.assert_array_equal(aux.idx1, a["nn_idx1"])
  np.testing.assert_array_equal(np.reshape(aux.queue.ptr, -1), a["bank_ptr_after"])
  # The lookup alone gives the same rows; z and the bank get no gradient.
  nn, idx = losses.nearest_neighbour(z0, bank)
  np.testing.assert_array_equal(idx, a["nn_idx0"])
  gz = jax.grad(lambda z0, z1, b: losses.nnclr(z0, z1, jnp.asarray(a["p0"]), jnp.asarray(a["p1"]),
                                               b, ptr)[0], argnums=(0, 1, 2))(z0, z1, bank)
  assert all(np.all(np.asarray(g) == 0) for g in gz)


def _lightly_bank_update(bank, ptr, z):
  """lightly MemoryBankModule._dequeue_and_enqueue, restated."""
  bank, k, n = bank.copy(), bank.shape[0], z.shape[0]
  if ptr + n >= k:
    bank[ptr:] = z[:k - ptr]
    return bank, 0
  bank[ptr:ptr + n] = z
  return bank, ptr + n


def test_nnclr_bank_wraps_like_lightly_or_as_a_ring():
  rng = np.random.default_rng(0)
  k, n, d = 12, 5, 4
  bank = rng.normal(size=(k, d)).astype(np.float32)
  z = rng.normal(size=(n, d)).astype(np.float32)
  f = jax.jit(losses.nnclr, static_argnames=("wrap",))
  for ptr in (0, 6, 7, 9):
    _, aux = f(z, z, z, z, bank, jnp.int32(ptr))
    want, want_ptr = _lightly_bank_update(bank, ptr, z)
    np.testing.assert_array_equal(aux.queue.queue, want)
    assert int(aux.queue.ptr) == want_ptr
    # The ring keeps the whole batch: rows ptr..ptr+n-1 modulo K.
    _, aux = f(z, z, z, z, bank, jnp.int32(ptr), wrap="ring")
    ring = bank.copy()
    ring[(ptr + np.arange(n)) % k] = z
    np.testing.assert_array_equal(aux.queue.queue, ring)
    assert int(aux.queue.ptr) == (ptr + n) % k


def test_nearest_neighbour_is_cosine_not_euclidean_and_never_self():
  # Row 1 is far in L2 but parallel to z: the cosine picks it (lightly, solo-learn).
  bank = jnp.array([[1.0, 0.2], [10.0, 0.0], [0.0, 1.0]])
  nn, idx = losses.nearest_neighbour(jnp.array([[2.0, 0.0]]), bank)
  assert idx.tolist() == [1] and nn.tolist() == [[10.0, 0.0]]
  # The bank is read before this batch is written into row 0: z (opposite to the old
  # row 0) is not its own neighbour, although row 0 holds z afterwards.
  z = jnp.array([[-1.0, -0.2]])
  _, aux = losses.nnclr(z, z, z, z, bank, jnp.int32(0))
  assert aux.idx0.tolist() == [2]
  np.testing.assert_array_equal(aux.queue.queue[0], z[0])


@pytest.mark.parametrize("name", _cases("tico"))
def test_tico_parity(x64, name):
  a, hp = _load(name)
  cov = jnp.asarray(a["C_before"])

  def f(z_a, z_b):
    return losses.tico(z_a, z_b, cov, beta=hp["beta"], rho=hp["rho"])

  (value, c_after), grads = lt.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
      jnp.asarray(a["z_a"]), jnp.asarray(a["z_b"]))
  for what, actual in (("loss", value), ("grad_z_a", grads[0]), ("grad_z_b", grads[1]),
                       ("C_after", c_after)):
    assert np.asarray(actual).dtype == np.float64, what
    lt.assert_close(actual, a[what], rtol=RTOL, name=f"{name}:{what}")
  # C_before is state: no gradient.
  g_c = jax.grad(lambda c: losses.tico(jnp.asarray(a["z_a"]), jnp.asarray(a["z_b"]), c)[0])(cov)
  assert np.all(np.asarray(g_c) == 0)


def test_tico_against_a_plain_restatement_with_a_psd_state(x64):
  """The fixture starts from C = 0; a PSD C_before exercises the EMA term (SPEC 17 c1/c2)."""
  rng = np.random.default_rng(1)
  za, zb = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  m = rng.normal(size=(5, 5))
  c0 = m @ m.T / 5
  beta, rho = 0.5, 20.0
  u = za / np.linalg.norm(za, axis=1, keepdims=True)
  v = zb / np.linalg.norm(zb, axis=1, keepdims=True)
  c1 = beta * c0 + (1 - beta) * u.T @ u / 6
  want = 1 - np.mean(np.sum(u * v, 1)) + rho * np.mean(np.sum((u @ c1) * u, 1))
  value, c_new = losses.tico(jnp.asarray(za), jnp.asarray(zb), jnp.asarray(c0), beta=beta, rho=rho)
  lt.assert_close(value, want, rtol=RTOL)
  lt.assert_close(c_new, c1, rtol=RTOL)


def test_tico_sharded_equals_one_device(mesh):
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(2)
  za, zb = (jnp.asarray(rng.normal(size=(16, 8)), jnp.float32) for _ in range(2))
  cov = jnp.asarray(np.eye(8) / 8, jnp.float32)
  fn = lambda a, b, c: losses.tico(a, b, c)  # noqa: E731
  lt.check_sharded(mesh, fn, (za, zb, cov), (0, 1), specs=[P("data"), P("data"), P()])
