"""NT-Xent, InfoNCE, SupCon, DCL/DCLW: NumPy re-statements, sharding, properties."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses_testing as lt
from jssl import losses


def _n(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _lse(x, axis=-1):
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def np_ntxent(a, b, t):
  u, v = _n(a), _n(b)
  z = np.concatenate([u, v]) @ np.concatenate([u, v]).T / t
  n = len(a)
  np.fill_diagonal(z, -np.inf)
  pos = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
  return np.mean(_lse(z) - z[np.arange(2 * n), pos])


def np_dcl(a, b, t, sigma=None, official=False):
  u, v = _n(a), _n(b)
  n = len(a)
  w = np.ones(n)
  if sigma is not None:
    s = np.sum(u * v, 1) / sigma
    w = 2 - n * np.exp(s - _lse(s))
  tot = 0.0
  for x, y in ((u, v), (v, u)):
    z = np.concatenate([x @ x.T, x @ y.T], 1) / t
    z[np.arange(n), np.arange(n)] = -np.inf
    z[np.arange(n), n + np.arange(n)] = -np.inf
    tot += np.mean(_lse(z) - w * np.sum(x * y, 1) / t)
  return tot if official else tot / 2


def np_supcon(f, labels, t, tb, mode):
  b, v, _ = f.shape
  c = np.swapaxes(_n(f), 0, 1).reshape(v * b, -1)
  lab = np.tile(np.arange(b) if labels is None else labels, v)
  na = v if mode == "all" else 1
  a = c[: na * b]
  z = a @ c.T / t
  self_m = np.zeros_like(z, bool)
  self_m[np.arange(na * b), np.arange(na * b)] = True
  pos = (lab[: na * b, None] == lab[None, :]) & ~self_m
  lp = z - _lse(np.where(self_m, -np.inf, z))[:, None]
  mean_lp = np.sum(np.where(pos, lp, 0), 1) / np.maximum(pos.sum(1), 1)
  return np.mean(-(t / tb) * mean_lp)


@pytest.mark.parametrize("b,d,t,seed", [(5, 3, 0.07, 1), (12, 9, 1.3, 2)])
def test_ntxent_dcl_match_numpy(x64, b, d, t, seed):
  a, c = lt.randn(seed, (b, d), np.float64), lt.randn(seed + 1, (b, d), np.float64)
  np.testing.assert_allclose(lt.jcall(losses.ntxent, a, c, temperature=t), np_ntxent(a, c, t),
                             rtol=1e-12)
  np.testing.assert_allclose(lt.jcall(losses.dcl, a, c, temperature=t), np_dcl(a, c, t), rtol=1e-12)
  np.testing.assert_allclose(lt.jcall(losses.dclw, a, c, temperature=t, sigma=0.3),
                             np_dcl(a, c, t, 0.3), rtol=1e-12)


@pytest.mark.parametrize("labels,mode,v,tb", [(None, "all", 2, 0.07), ("y", "all", 3, 0.1),
                                              ("y", "one", 2, 0.07), ("y", "all", 1, 0.07)])
def test_supcon_matches_numpy(x64, labels, mode, v, tb):
  f = lt.randn(3, (6, v, 5), np.float64)
  y = np.array([0, 1, 0, 2, 1, 3]) if labels else None  # class 3 is a singleton
  got = lt.jcall(losses.supcon, f, None if y is None else jnp.asarray(y), temperature=0.07,
                      base_temperature=tb, contrast_mode=mode)
  np.testing.assert_allclose(got, np_supcon(f, y, 0.07, tb, mode), rtol=1e-12)


def test_supcon_equals_ntxent_and_info_nce(x64):
  f = lt.randn(4, (6, 2, 5), np.float64)
  nt = lt.jcall(losses.ntxent, f[:, 0], f[:, 1], temperature=0.3)
  np.testing.assert_allclose(lt.jcall(losses.supcon, f, temperature=0.3, base_temperature=0.3), nt,
                             rtol=1e-12)
  x = np.concatenate([f[:, 0], f[:, 1]])
  n = 6
  pos = np.roll(np.eye(2 * n, dtype=bool), n, axis=1)
  got = lt.jcall(losses.info_nce, x, x, pos, temperature=0.3,
                 exclude_mask=np.eye(2 * n, dtype=bool))
  np.testing.assert_allclose(got, nt, rtol=1e-12)


def test_info_nce_negative_weights(x64):
  """Weights multiply exp(s) in the denominator: w = 1 is plain, w = 0 drops the term."""
  x, c = lt.randn(5, (4, 3), np.float64), lt.randn(6, (7, 3), np.float64)
  pos = np.zeros((4, 7), bool)
  pos[np.arange(4), np.arange(4)] = True
  w = np.abs(lt.randn(7, (4, 7), np.float64))
  w[:, 6] = 0.0
  s = _n(x) @ _n(c).T / 0.5
  ref = np.mean(-(s[np.arange(4), np.arange(4)] - np.log(np.sum(w * np.exp(s), 1))))
  got = lt.jcall(losses.info_nce, x, c, pos, temperature=0.5, negative_weights=w)
  np.testing.assert_allclose(got, ref, rtol=1e-12)
  g = lt.jit(jax.grad(lambda c: losses.info_nce(x, c, pos, temperature=0.5,
                                                negative_weights=w)))(c)
  assert np.all(np.isfinite(g))


FNS = {
    "ntxent": lambda a, b: losses.ntxent(a, b, temperature=0.2),
    "dcl": lambda a, b: losses.dcl(a, b, temperature=0.2),
    "dclw": lambda a, b: losses.dclw(a, b, temperature=0.2),
    "dclw_official": lambda a, b: losses.dclw(a, b, temperature=0.2, detach_weights=False),
}


def test_ntxent_properties():
  a, b = lt.randn(20, (8, 6)), lt.randn(21, (8, 6))
  f = lt.jit(lambda a, b, t: losses.ntxent(a, b, temperature=t))
  perm = np.random.default_rng(0).permutation(8)
  np.testing.assert_allclose(f(a[perm], b[perm], 0.5), f(a, b, 0.5), rtol=1e-6)
  np.testing.assert_allclose(f(a, b, 0.5), f(b, a, 0.5), rtol=1e-6)       # symmetric
  # T -> inf: every logit equal, a uniform (2B-1)-way softmax.
  np.testing.assert_allclose(f(a, b, 1e6), np.log(2 * 8 - 1), rtol=1e-5)
  # T -> 0 with the positive the strict maximum: loss -> 0.
  assert float(f(a, a, 1e-3)) < 1e-6
  # Per-anchor values average to the loss; scaling inputs changes nothing (normalised).
  per = lt.jcall(losses.ntxent, a, b, temperature=0.5, reduction="none")
  assert per.shape == (2, 8)
  np.testing.assert_allclose(per.mean(), f(a, b, 0.5), rtol=1e-6)
  np.testing.assert_allclose(f(3.0 * a, b, 0.5), f(a, b, 0.5), rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_contrastive_stable_low_precision(dtype):
  a = (1e4 * lt.randn(22, (8, 6))).astype(dtype)
  b = a.at[0].set(0.0) if hasattr(a, "at") else jnp.asarray(a).at[0].set(0.0)
  for fn in FNS.values():
    v, g = lt.jit(jax.value_and_grad(fn, argnums=(0, 1)))(jnp.asarray(a), b)
    assert np.isfinite(float(v)) and all(np.all(np.isfinite(np.asarray(x, np.float32)))
                                         for x in g)
  v = lt.jcall(losses.ntxent, a, b, temperature=1e-4)
  assert np.isfinite(float(v))
  f = jnp.asarray(a).reshape(4, 2, 6)
  assert np.isfinite(float(lt.jcall(losses.supcon, f, temperature=1e-3)))


def test_contrastive_bad_shapes():
  with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 5\)"):
    losses.ntxent(jnp.ones((4, 3)), jnp.ones((4, 5)))
  with pytest.raises(ValueError, match="floating"):
    losses.dcl(jnp.ones((4, 3), jnp.int32), jnp.ones((4, 3), jnp.int32))
  with pytest.raises(ValueError, match=r"\[B\]"):
    losses.supcon(jnp.ones((4, 2, 3)), jnp.ones((5,), jnp.int32))
  with pytest.raises(ValueError, match=r"\(4, 4\)"):
    losses.info_nce(jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.ones((4, 5), bool))
