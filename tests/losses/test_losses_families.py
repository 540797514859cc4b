"""NumPy re-statements at other shapes / hyperparameters (float64), stop-gradient,
permutation and stability properties for the non-contrastive families."""
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


def _logsoftmax(x):
  return x - _lse(x)[..., None]


def np_sinkhorn(s, eps, iters):
  q = np.exp(s / eps).T
  q /= q.sum()
  k, b = q.shape
  for _ in range(iters):
    q /= q.sum(1, keepdims=True)
    q /= k
    q /= q.sum(0, keepdims=True)
    q /= b
  return (q * b).T


def np_reference(x):
  """All the NumPy re-statements on the dict of inputs `x`."""
  r = {}
  u, kap = _n(x["q"]), _n(x["k"])
  lg = np.concatenate([np.sum(u * kap, 1, keepdims=True), u @ x["queue"].T], 1) / 0.2
  r["moco"] = np.mean(_lse(lg) - lg[:, 0])

  def ctr(q, k, t):
    lg = _n(q) @ _n(k).T / t
    return 2 * t * np.mean(_lse(lg) - np.diag(lg))
  r["mocov3"] = ctr(x["q"], x["k2"], 0.3) + ctr(x["k"], x["q2"], 0.3)
  cos = lambda a, b: np.sum(_n(a) * _n(b), 1)
  r["byol"] = np.mean(2 - 2 * cos(x["q"], x["k2"]) + 2 - 2 * cos(x["k"], x["q2"]))
  r["simsiam"] = -0.5 * (np.mean(cos(x["q"], x["k2"])) + np.mean(cos(x["k"], x["q2"])))
  a, b = x["q"], x["k"]
  bn = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
  c = bn(a).T @ bn(b) / len(a)
  off = np.sum(c ** 2) - np.sum(np.diag(c) ** 2)
  r["barlow"] = np.sum((1 - np.diag(c)) ** 2) + 0.0051 * off
  vv = lambda z: np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)))
  cc = lambda z: (np.sum(np.cov(z.T) ** 2) - np.sum(np.diag(np.cov(z.T)) ** 2)) / z.shape[1]
  inv = np.mean((a - b) ** 2)
  r["vicreg"] = 25 * inv + 25 * 0.5 * (vv(a) + vv(b)) + cc(a) + cc(b)
  crops = np.concatenate([x["hi"], x["lo"]])
  tot = 0.0
  for i in range(2):
    qi = np_sinkhorn(np.concatenate([x["hi"][i], x["qsw"][i]]), 0.05, 3)[: x["hi"].shape[1]]
    for v in range(len(crops)):
      if v != i:
        tot += -np.mean(np.sum(qi * _logsoftmax(crops[v] / 0.1), 1)) / (len(crops) - 1)
  r["swav"] = tot / 2
  p = np.exp(_logsoftmax((x["tea"] - x["cen"]) / 0.04))
  tot, npairs = 0.0, 0
  for ai in range(2):
    for v in range(len(x["stu"])):
      if v != ai:
        tot += -np.mean(np.sum(p[ai] * _logsoftmax(x["stu"][v] / 0.1), 1))
        npairs += 1
  r["dino"] = tot / npairs
  r["dino_center"] = 0.9 * x["cen"] + 0.1 * x["tea"].reshape(-1, x["tea"].shape[-1]).mean(0)
  lg = np.exp(1.7) * _n(a) @ _n(b).T
  r["clip"] = 0.5 * (np.mean(_lse(lg) - np.diag(lg)) + np.mean(_lse(lg.T) - np.diag(lg)))
  lg = np.exp(1.1) * _n(a) @ _n(b).T - 3.0
  z = 2 * np.eye(len(a)) - 1
  r["siglip"] = -np.sum(-np.log1p(np.exp(-z * lg))) / len(a)
  t = x["tgt"]
  t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
  e = np.mean((x["pred"] - t) ** 2, -1)
  r["mae"] = np.sum(e * x["mask"]) / np.sum(x["mask"])
  r["align"] = np.mean(np.linalg.norm(_n(a) - _n(b), axis=1) ** 1.5)
  ua = _n(a)
  d2 = np.sum((ua[:, None] - ua[None]) ** 2, -1)[np.triu_indices(len(a), 1)]
  r["uniform"] = np.log(np.mean(np.exp(-3.0 * d2)))
  s = np.linalg.svd(a, compute_uv=False)
  pp = s / s.sum() + 1e-7
  r["rankme"] = np.exp(-np.sum(pp * np.log(pp)))
  r["feature_std"] = _n(a).std(0)
  return r


def jssl_values(x):
  r = {}
  ptr = jnp.asarray([4], jnp.int32)
  r["moco"], st = losses.moco(x["q"], x["k"], x["queue"], ptr, temperature=0.2)
  r["moco_queue"], r["moco_ptr"] = st
  r["moco_ring"] = losses.moco(x["q"], x["k"], x["queue"], ptr, wrap="ring")[1].queue
  r["mocov3"] = losses.mocov3(x["q"], x["k"], x["q2"], x["k2"], temperature=0.3)
  r["byol"] = losses.byol(x["q"], x["k"], x["q2"], x["k2"])
  r["simsiam"] = losses.simsiam(x["q"], x["k"], x["q2"], x["k2"])
  r["barlow"] = losses.barlow_twins(x["q"], x["k"])
  r["vicreg"] = losses.vicreg(x["q"], x["k"])[0]
  r["swav"] = losses.swav(x["hi"], x["lo"], queue=x["qsw"])[0]
  r["dino"], r["dino_center"] = losses.dino(x["stu"], x["tea"], x["cen"])
  r["clip"] = losses.clip(x["q"], x["k"], 1.7)
  r["siglip"] = losses.siglip(x["q"], x["k"], 1.1, -3.0)
  r["siglip_chunked"] = losses.siglip_chunked(x["q"], x["k"], 1.1, -3.0, chunk_size=4)
  r["mae"] = losses.mae(x["pred"], x["tgt"], x["mask"], norm_pix_loss=True)
  r["align"] = losses.alignment(x["q"], x["k"], alpha=1.5)
  r["uniform"] = losses.uniformity(x["q"], t=3.0)
  r["rankme"] = losses.rankme(x["q"])
  r["feature_std"] = losses.feature_std(x["q"])
  return r


def _inputs(dtype=np.float64):
  b, d = 7, 5
  x = {n: lt.randn(i, (b, d), dtype) for i, n in enumerate(["q", "k", "q2", "k2"])}
  x["queue"] = _n(lt.randn(9, (9, d), np.float64)).astype(dtype)
  x["hi"], x["lo"] = lt.randn(10, (2, 3, 6), dtype, 0.5), lt.randn(11, (2, 3, 6), dtype, 0.5)
  x["qsw"] = lt.randn(12, (2, 4, 6), dtype, 0.5)
  x["stu"], x["tea"] = lt.randn(13, (5, 3, 6), dtype), lt.randn(14, (2, 3, 6), dtype)
  x["cen"] = lt.randn(15, (6,), dtype, 0.1)
  x["pred"], x["tgt"] = lt.randn(16, (3, 4, 6), dtype), lt.randn(17, (3, 4, 6), dtype)
  x["mask"] = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 1, 0]], dtype)
  return x


def test_families_match_numpy(x64):
  x = _inputs()
  got = jax.tree.map(np.asarray, lt.jit(jssl_values)(x))
  ref = np_reference(x)
  for name, want in ref.items():
    np.testing.assert_allclose(got[name], want, rtol=1e-10, atol=1e-13, err_msg=name)
  np.testing.assert_allclose(got["siglip_chunked"], ref["siglip"], rtol=1e-12)
  kap = _n(x["k"])
  # reset wrap (lightly): ptr 4 + 7 >= 9 -> rows 4..8 get the first 5 keys, ptr -> 0.
  want_q = x["queue"].copy()
  want_q[4:] = kap[:5]
  np.testing.assert_allclose(got["moco_queue"], want_q, rtol=1e-12)
  assert got["moco_ptr"].tolist() == [0]
  want_ring = x["queue"].copy()
  want_ring[(4 + np.arange(7)) % 9] = kap
  np.testing.assert_allclose(got["moco_ring"], want_ring, rtol=1e-12)


def test_sinkhorn_marginals_and_log_domain():
  s = lt.randn(3, (5, 8), scale=1.0)            # |s| / 0.05 ~ 60: exp overflows float16
  q = np.asarray(lt.jit(lambda s: losses.sinkhorn(s, num_iters=50))(s))
  np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(q.sum(0), 5 / 8, rtol=1e-2)  # ~B/K: slow convergence at eps 0.05
  qb = lt.jit(losses.sinkhorn)(jnp.asarray(s, jnp.bfloat16))
  assert np.all(np.isfinite(np.asarray(qb)))


def test_stop_gradients():
  """No gradient into keys, queue, targets, teacher, center, SwAV codes/queue."""
  x = _inputs(np.float32)
  ptr = jnp.zeros((1,), jnp.int32)

  def grads(x):
    g = {}
    g["moco"] = jax.grad(lambda k, qu: losses.moco(x["q"], k, qu, ptr)[0], (0, 1))(
        x["k"], x["queue"])
    g["mocov3"] = jax.grad(lambda k1, k2: losses.mocov3(x["q"], x["q2"], k1, k2), (0, 1))(
        x["k"], x["k2"])
    g["byol"] = jax.grad(lambda z1, z2: losses.byol(x["q"], x["q2"], z1, z2), (0, 1))(
        x["k"], x["k2"])
    g["simsiam"] = jax.grad(lambda z1, z2: losses.simsiam(x["q"], x["q2"], z1, z2), (0, 1))(
        x["k"], x["k2"])
    g["dino"] = jax.grad(lambda t, c: losses.dino(x["stu"], t, c)[0], (0, 1))(x["tea"], x["cen"])
    g["swav_queue"] = jax.grad(lambda qu: losses.swav(x["hi"], x["lo"], queue=qu)[0])(x["qsw"])
    g["sinkhorn"] = jax.grad(lambda s: jnp.sum(losses.sinkhorn(s) ** 2))(x["hi"][0])
    # Codes carry no gradient: d loss / d high_res equals the gradient with frozen codes.
    codes = losses.swav(x["hi"], x["lo"])[1]
    frozen = lambda h: 0.5 * (
        -jnp.mean(jnp.sum(codes[0] * jax.nn.log_softmax(h[1] / 0.1, -1), -1))
        - jnp.mean(jnp.sum(codes[1] * jax.nn.log_softmax(h[0] / 0.1, -1), -1)))
    g["swav_codes"] = (jax.grad(lambda h: losses.swav(h)[0])(x["hi"]), jax.grad(frozen)(x["hi"]))
    return g

  g = lt.jit(grads)(x)
  for name in ["moco", "mocov3", "byol", "simsiam", "dino", "swav_queue", "sinkhorn"]:
    for leaf in jax.tree.leaves(g[name]):
      assert np.all(np.asarray(leaf) == 0), name
  swav_g, frozen_g = g["swav_codes"]
  np.testing.assert_allclose(swav_g, frozen_g, rtol=1e-5, atol=1e-7)


def _all_losses(x):
  ptr = jnp.zeros((1,), jnp.int32)
  a, b = x["q"], x["k"]
  return {
      "ntxent": losses.ntxent(a, b), "dcl": losses.dcl(a, b), "dclw": losses.dclw(a, b),
      "supcon": losses.supcon(jnp.stack([a, b], 1)),
      "moco": losses.moco(a, b, x["queue"], ptr)[0],
      "mocov3": losses.mocov3(a, b, x["q2"], x["k2"]),
      "byol": losses.byol(a, b, x["q2"], x["k2"]),
      "simsiam": losses.simsiam(a, b, x["q2"], x["k2"]),
      "barlow": losses.barlow_twins(a, b), "vicreg": losses.vicreg(a, b)[0],
      "clip": losses.clip(a, b), "siglip": losses.siglip(a, b),
      "align": losses.alignment(a, b), "uniform": losses.uniformity(a),
      "rankme": losses.rankme(a), "feature_std": jnp.sum(losses.feature_std(a)),
      "swav": losses.swav(x["hi"], x["lo"])[0],
      "dino": losses.dino(x["stu"], x["tea"], x["cen"])[0],
      "mae": losses.mae(x["pred"], x["tgt"], x["mask"], norm_pix_loss=True),
      "ntxent_chunked": losses.ntxent_chunked(a, b, chunk_size=3),
      "siglip_chunked": losses.siglip_chunked(a, b, chunk_size=3),
  }


def test_permutation_invariance():
  x = _inputs(np.float32)
  perm = np.random.default_rng(0).permutation(7)
  px = dict(x)
  for n in ["q", "k", "q2", "k2"]:
    px[n] = x[n][perm]
  p3 = np.random.default_rng(1).permutation(3)
  for n in ["hi", "lo", "stu", "tea"]:
    px[n] = x[n][:, p3]
  px["pred"], px["tgt"], px["mask"] = x["pred"][p3], x["tgt"][p3], x["mask"][p3]
  f = lt.jit(_all_losses)
  ref, got = f(x), f(px)
  for n in ref:
    np.testing.assert_allclose(got[n], ref[n], rtol=2e-5, atol=1e-6, err_msg=n)


@pytest.mark.parametrize("dtype", [jnp.bfloat16])  # float32: test_losses_contrastive
def test_stable_large_and_zero_inputs(dtype):
  """Large-magnitude inputs and all-zero rows: finite values and gradients everywhere."""
  x = _inputs(np.float32)
  for n in ["q", "k", "q2", "k2", "hi", "lo", "stu", "tea", "pred", "tgt"]:
    x[n] = 1e3 * x[n]
  for n in ["q", "k2"]:
    x[n] = x[n].copy()
    x[n][0] = 0.0
  x = {n: jnp.asarray(v, dtype) if n != "mask" else v for n, v in x.items()}
  # One jitted function: every loss value and its gradient w.r.t. all inputs.
  vg = lt.jit(lambda x: {n: jax.value_and_grad(lambda x, n=n: _all_losses(x)[n])(x)
                         for n in ["ntxent", "dclw", "supcon", "moco", "mocov3", "byol",
                                   "barlow", "vicreg", "clip", "siglip", "swav", "dino",
                                   "align", "uniform", "mae", "siglip_chunked"]})
  out = vg(x)
  for n, (v, g) in out.items():
    assert np.isfinite(float(v)), n
    for leaf in jax.tree.leaves(g):
      assert np.all(np.isfinite(np.asarray(leaf, np.float32))), n


def test_matryoshka_sums_prefixes(x64):
  a, b = lt.randn(1, (6, 8), np.float64), lt.randn(2, (6, 8), np.float64)
  f = losses.matryoshka(losses.ntxent, dims=(2, 4, 8), weights=(1.0, 0.5, 2.0))
  got = lt.jcall(f, a, b, temperature=0.3)
  want = sum(w * lt.jcall(losses.ntxent, a[:, :m], b[:, :m], temperature=0.3)
             for m, w in ((2, 1.0), (4, 0.5), (8, 2.0)))
  np.testing.assert_allclose(got, want, rtol=1e-12)
  g = losses.matryoshka(losses.vicreg, dims=(4, 8))
  loss, terms = lt.jcall(g, a, b)
  assert len(terms) == 2
  with pytest.raises(ValueError, match="increasing"):
    losses.matryoshka(losses.ntxent, dims=(8, 4))


def test_bad_shapes_name_both():
  z = jnp.ones((4, 3))
  cases = [
      lambda: losses.moco(z, z, jnp.ones((5, 2)), jnp.zeros((), jnp.int32)),
      lambda: losses.byol(z, z, z, jnp.ones((4, 2))),
      lambda: losses.barlow_twins(z, jnp.ones((5, 3))),
      lambda: losses.vicreg(z, jnp.ones((4, 2))),
      lambda: losses.swav(jnp.ones((2, 4, 3)), jnp.ones((2, 5, 3))),
      lambda: losses.dino(jnp.ones((4, 2, 3)), jnp.ones((2, 2, 4)), jnp.ones(4)),
      lambda: losses.clip(z, jnp.ones((4, 2))),
      lambda: losses.siglip(z, jnp.ones((3, 3))),
      lambda: losses.mae(jnp.ones((2, 4, 3)), jnp.ones((2, 4, 3)), jnp.ones((2, 5))),
      lambda: losses.alignment(z, jnp.ones((4, 2))),
  ]
  for c in cases:
    with pytest.raises(ValueError, match=r"\(.*\).*\(.*\)"):
      c()
  with pytest.raises(ValueError, match="floating"):
    losses.uniformity(jnp.ones((4, 3), jnp.int32))
