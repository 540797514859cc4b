"""MMCR and W-MSE: float64 parity with the reference fixtures in parity_wave2/ (values,
gradients and the stored extras), and the properties the fixtures cannot show: the
whitened views have identity covariance, the random sub-batch split whitens each sub-batch
on its own, and the conventions agree where they should."""
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses_testing as lt
from jssl import losses

RTOL = 1e-9
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity_wave2")


def _cases(family):
  names = sorted(os.path.basename(p)[:-4]
                 for p in glob.glob(os.path.join(HERE, family + "_c*.npz")))
  assert names, f"no {family} fixtures in {HERE}"
  return names


def _load(name):
  with np.load(os.path.join(HERE, name + ".npz"), allow_pickle=False) as d:
    arrays = {k: d[k] for k in d.files if k != "meta_json"}
    hp = json.loads(str(d["meta_json"]))["hyperparameters"]
  return arrays, hp


def _check(name, fn, inputs, arrays, extras):
  """value_and_grad of fn(*inputs) (fn returns (loss, aux)) against the fixture."""
  args = [jnp.asarray(arrays[n]) for n in inputs]
  (value, aux), grads = lt.jit(jax.value_and_grad(
      fn, argnums=tuple(range(len(args))), has_aux=True))(*args)
  pairs = [("loss", value, arrays["loss"])]
  pairs += [(f"grad_{n}", g, arrays[f"grad_{n}"]) for n, g in zip(inputs, grads)]
  pairs += [(k, get(aux), arrays[k]) for k, get in extras.items()]
  for what, actual, expected in pairs:
    assert np.asarray(actual).dtype == np.float64, what
    lt.assert_close(actual, expected, rtol=RTOL, name=f"{name}:{what}")


@pytest.mark.parametrize("name", _cases("mmcr"))
def test_mmcr_lightly_parity(x64, name):
  arrays, hp = _load(name)
  _check(name, lambda a, b: losses.mmcr(a, b, lmda=hp["lmda"]), ["online", "momentum"],
         arrays, {"global_nuc": lambda t: t.global_nuc, "local_nuc": lambda t: t.local_nuc})


@pytest.mark.parametrize("name", _cases("mmcr_official"))
def test_mmcr_official_parity(x64, name):
  arrays, hp = _load(name)
  fn = lambda z, zm: losses.mmcr_official(z, zm, num_views=hp["n_aug"],  # noqa: E731
                                          lmbda=hp["lmbda"])
  _check(name, fn, ["z", "z_m"], arrays,
         {"global_nuc": lambda t: t.global_nuc, "local_nuc": lambda t: t.local_nuc})


@pytest.mark.parametrize("name", _cases("wmse"))
def test_wmse_parity(x64, name):
  arrays, hp = _load(name)
  bs = hp["batch_size_per_view"]
  w_size = hp["w_size"]
  fn = lambda x: losses.wmse(x, hp["num_samples"], eps=hp["eps"],  # noqa: E731
                             w_iter=hp["w_iter"], w_size=None if w_size == bs else w_size)
  _check(name, fn, ["input"], arrays, {"whitened": lambda w: w})


def test_mmcr_conventions_agree_and_local_term_by_hand(x64):
  """lightly on unit rows with lmda = 0 == official; the official local term is the
  sum over images of the nuclear norm of the ONLINE views only (numpy SVD), / B."""
  rng = np.random.default_rng(0)
  b, n, d = 6, 3, 5
  z, zm = rng.standard_normal((b * n, d)), rng.standard_normal((b * n, d))
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  lightly, _ = lt.jcall(losses.mmcr, unit(z).reshape(b, n, d), unit(zm).reshape(b, n, d),
                        lmda=0.0)
  official, terms = lt.jcall(losses.mmcr_official, z, zm, num_views=n, lmbda=0.3)
  local = sum(np.linalg.svd(unit(z).reshape(b, n, d)[i], compute_uv=False).sum()
              for i in range(b))
  centroids = 0.5 * (unit(z).reshape(b, n, d).mean(1) + unit(zm).reshape(b, n, d).mean(1))
  glob_ = np.linalg.svd(centroids, compute_uv=False).sum()
  lt.assert_close(terms.local_nuc, local)
  lt.assert_close(terms.global_nuc, glob_)
  lt.assert_close(official, -glob_ + 0.3 * local / b)
  lt.assert_close(lightly, -glob_)  # same centroids when lmda = 0
  # Without momentum outputs: the momentum-free MMCR_Loss == both branches equal.
  no_m, _ = lt.jcall(losses.mmcr_official, z, num_views=n, lmbda=0.3)
  same, _ = lt.jcall(losses.mmcr_official, z, z, num_views=n, lmbda=0.3)
  lt.assert_close(no_m, same)


def _np_whiten(x):
  """Plain numpy Cholesky whitening (SPEC: Xc L^{-T}, unbiased covariance)."""
  xc = x - x.mean(0)
  chol = np.linalg.cholesky(xc.T @ xc / (x.shape[0] - 1))
  return np.linalg.solve(chol, xc.T).T


def _cov(w):
  wc = w - w.mean(0)
  return wc.T @ wc / (w.shape[0] - 1)


def test_whitened_views_have_identity_covariance_per_sub_batch(x64):
  """Property: each view's whitened rows have covariance I, also in every random
  sub-batch when w_size < bs; the positives stay paired (same split for all views);
  different keys give different splits (and losses); it is Cholesky, not ZCA."""
  rng = np.random.default_rng(1)
  v, bs, d, w = 3, 24, 4, 12
  mix = rng.standard_normal((d, d))
  x_np = rng.standard_normal((v * bs, d)) @ mix + 3.0
  x = jnp.asarray(x_np)
  loss, white = lt.jcall(losses.wmse, x, num_views=v)
  for i in range(v):
    np.testing.assert_allclose(_cov(np.asarray(white[i * bs:(i + 1) * bs])), np.eye(d),
                               atol=1e-10)
  # Cholesky whitening: W = Xc L^{-T}, so Xc = W L^T with L lower-triangular.
  xc = np.asarray(x[:bs]) - np.asarray(x[:bs]).mean(0)
  l_t = np.linalg.lstsq(np.asarray(white[:bs]), xc, rcond=None)[0]
  np.testing.assert_allclose(np.tril(l_t.T), l_t.T, atol=1e-10)
  key = jax.random.key(3)
  loss_s, white_s = lt.jcall(losses.wmse, x, num_views=v, w_size=w, key=key)
  perm = np.asarray(jax.random.permutation(jax.random.split(key, 1)[0], bs))
  for i in range(v):
    for part in perm.reshape(-1, w):
      rows = np.asarray(white_s)[i * bs + part]
      np.testing.assert_allclose(_cov(rows), np.eye(d), atol=1e-10)
      ref = _np_whiten(x_np[i * bs + part])
      np.testing.assert_allclose(rows, ref, atol=1e-10)
  loss_s2, _ = lt.jcall(losses.wmse, x, num_views=v, w_size=w, key=jax.random.key(4))
  assert float(loss_s) != float(loss_s2) and float(loss_s) != float(loss)
  # Two iterations average two splits.
  loss_2, _ = lt.jcall(losses.wmse, x, num_views=v, w_size=w, w_iter=2, key=key)
  parts = []  # by hand, with the per-iteration keys wmse splits from `key`
  ks = jax.random.split(key, 2)
  for k in ks:
    p = np.asarray(jax.random.permutation(k, bs)).reshape(-1, w)
    wh = np.zeros((v * bs, d))
    for i in range(v):
      for part in p:
        wh[i * bs + part] = _np_whiten(x_np[i * bs + part])
    un = wh / np.linalg.norm(wh, axis=-1, keepdims=True)
    pairs = [(0, 1), (0, 2), (1, 2)]
    parts.append(np.mean([2 - 2 * np.mean(np.sum(un[i * bs:(i + 1) * bs]
                                                 * un[j * bs:(j + 1) * bs], -1))
                          for i, j in pairs]))
  lt.assert_close(loss_2, np.mean(parts))


def test_wmse_errors_name_the_problem():
  x = jnp.zeros((32, 4))
  with pytest.raises(ValueError, match="divide the per-view batch"):
    losses.wmse(x, 2, w_size=6, key=jax.random.key(0))
  with pytest.raises(ValueError, match="pass key"):
    losses.wmse(x, 2, w_size=8)
  with pytest.raises(ValueError, match="exceed the embedding dimension"):
    losses.wmse(jnp.zeros((8, 4)), 2)
  with pytest.raises(ValueError, match="num_views"):
    losses.mmcr_official(jnp.zeros((9, 4)), num_views=2)
