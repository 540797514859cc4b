"""float64 parity of the DINOv2 losses (KoLeo, iBOT patch, Sinkhorn-Knopp teacher) and of
MSN / PMSN with the reference fixtures in tests/losses/parity_wave2 (values, gradients and
stored extras), plus properties and a float32 check under jit.

Every case `<family>_c*.npz` of each family is tested. The fixtures were computed in
float64 with lightly 1.6.0 and re-statements of the official code (see each file's
`meta_json` for provenance).
"""
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


def _cases(prefix):
  paths = glob.glob(os.path.join(HERE, prefix + "_c*.npz"))
  names = sorted(os.path.basename(p)[:-4] for p in paths)
  assert names, f"no {prefix}_c*.npz fixture in {HERE}"
  return names


def _load(name):
  with np.load(os.path.join(HERE, name + ".npz"), allow_pickle=False) as d:
    arrays = {k: d[k] for k in d.files if k != "meta_json"}
    hp = json.loads(str(d["meta_json"]))["hyperparameters"]
  return arrays, hp


def _close(actual, expected, name):
  assert np.asarray(actual).dtype in (np.float64, np.int64, np.int32, bool), name
  lt.assert_close(actual, expected, rtol=RTOL, name=name)


@pytest.mark.parametrize("name", _cases("koleo"))
def test_koleo_parity(x64, name):
  a, hp = _load(name)
  value, grad = lt.jit(jax.value_and_grad(lambda x: losses.koleo(x, eps=hp["eps"])))(a["x"])
  _close(value, a["loss"], name + ":loss")
  _close(grad, a["grad_x"], name + ":grad_x")
  # The stored neighbour indices are the ones the loss uses.
  u = a["x"] / np.linalg.norm(a["x"], axis=1, keepdims=True)
  sim = u @ u.T - 3 * np.eye(len(u))
  np.testing.assert_array_equal(np.argmax(sim, 1), a["nn_idx"])


@pytest.mark.parametrize("name", _cases("ibot_patch"))
def test_ibot_patch_parity(x64, name):
  a, hp = _load(name)
  kw = dict(teacher_temp=hp["teacher_temp"], student_temp=hp["student_temp"],
            center_momentum=hp["center_momentum"])

  def fn(s):
    return losses.ibot_patch(s, a["teacher_out"], a["mask"], a["center_before"], **kw)

  (value, center), grad = lt.jit(jax.value_and_grad(fn, has_aux=True))(a["student_out"])
  _close(value, a["loss"], name + ":loss")
  _close(grad, a["grad_student_out"], name + ":grad_student_out")
  _close(center, a["center_after"], name + ":center_after")
  p = jax.nn.softmax((a["teacher_out"] - a["center_before"]) / hp["teacher_temp"], axis=-1)
  _close(p, a["teacher_probs"], name + ":teacher_probs")
  # The teacher_probs override with the stored probabilities gives the same loss; the
  # teacher and the center get no gradient.
  def extra(s, t, c, p):
    over = losses.ibot_patch(s, t, a["mask"], c, teacher_probs=p, **kw)[0]
    g = jax.grad(lambda t, c: losses.ibot_patch(s, t, a["mask"], c, **kw)[0], (0, 1))(t, c)
    return over, g

  over, (gt, gc) = lt.jit(extra)(a["student_out"], a["teacher_out"], a["center_before"],
                                 a["teacher_probs"])
  _close(over, a["loss"], name + ":loss(teacher_probs)")
  assert not np.any(gt) and not np.any(gc)


@pytest.mark.parametrize("name", _cases("dinov2_sinkhorn_teacher"))
def test_sinkhorn_knopp_teacher_parity(x64, name):
  a, hp = _load(name)
  q = lt.jit(lambda t: losses.sinkhorn_knopp_teacher(t, hp["teacher_temp"],
                                                     hp["n_iterations"]))(a["teacher_out"])
  _close(q, a["Q"], name + ":Q")
  # Padding the batch with invalid rows changes nothing on the valid ones (iBOT form).
  pad = np.concatenate([a["teacher_out"], 50.0 * np.ones((3, a["teacher_out"].shape[1]))])
  valid = np.arange(len(pad)) < len(a["teacher_out"])
  qv = lt.jit(lambda t, v: losses.sinkhorn_knopp_teacher(t, hp["teacher_temp"],
                                                        hp["n_iterations"], valid=v))(pad, valid)
  _close(qv[:len(a["Q"])], a["Q"], name + ":Q(valid)")
  assert not np.any(np.asarray(qv[len(a["Q"]):]))


_MSN_REG = {"msn": "me_max_loss", "pmsn": "prior_reg_loss"}


@pytest.mark.parametrize("name", _cases("msn") + _cases("pmsn"))
def test_msn_parity(x64, name):
  a, hp = _load(name)
  family = name.split("_c")[0]
  kw = dict(temperature=hp["temperature"], sharpen_temperature=hp["target_sharpen_temperature"],
            sinkhorn_iterations=hp["sinkhorn_iterations"])
  if family == "msn":
    fn = lambda x, p: losses.msn(x, a["targets"], p, me_max_weight=hp["regularization_weight"],
                                 **kw)
  else:
    fn = lambda x, p: losses.pmsn(x, a["targets"], p, prior_weight=hp["regularization_weight"],
                                  power_law_exponent=hp["power_law_exponent"], **kw)
  assert a["anchors"].shape[0] == hp["n_anchor_views"] * a["targets"].shape[0]
  (value, terms), (ga, gp) = lt.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))(
      a["anchors"], a["prototypes"])
  _close(value, a["loss"], name + ":loss")
  _close(ga, a["grad_anchors"], name + ":grad_anchors")
  _close(gp, a["grad_prototypes"], name + ":grad_prototypes")
  _close(terms.ce, a["ce_loss"], name + ":ce_loss")
  _close(terms.regularizer, a[_MSN_REG[family]], name + ":" + _MSN_REG[family])
  _close(terms.target_probs, a["target_probs"], name + ":target_probs")


def test_msn_targets_get_no_gradient_and_views_are_view_major(x64):
  a, _ = _load(_cases("msn")[0])
  anchors, targets, protos = a["anchors"], a["targets"], a["prototypes"]
  flipped = anchors[::-1]

  def run(anchors, flipped, targets, protos):
    g = jax.grad(lambda t: losses.msn(anchors, t, protos)[0])(targets)
    ce2 = losses.msn(jnp.concatenate([anchors, flipped]), targets, protos)[1].ce
    _, terms = losses.msn(anchors, targets, protos)
    logp_b = jax.nn.log_softmax(_unit(flipped) @ _unit(protos).T / 0.1)
    ce_b = -jnp.mean(jnp.sum(terms.target_probs * logp_b, axis=1))
    return g, ce2, terms.ce, ce_b

  g, ce2, ce_a, ce_b = lt.jit(run)(anchors, flipped, targets, protos)
  assert not np.any(g)
  # Two views (row v*B + b <-> target b): ce is the mean of the per-view ce.
  lt.assert_close(ce2, 0.5 * (ce_a + ce_b), rtol=1e-12)


def _unit(x):
  return x / jnp.linalg.norm(x, axis=1, keepdims=True)


def test_ibot_dense_equals_gathered(x64):
  """Static-shape form == gathered form (value, gradient, center), incl. unmasked images."""
  rng = np.random.default_rng(0)
  b, n, k = 5, 6, 7
  s, t = rng.standard_normal((b, n, k)), rng.standard_normal((b, n, k))
  mask = rng.random((b, n)) < 0.4
  mask[1] = False                                      # an image without masked token
  c = rng.standard_normal(k) * 0.1
  kw = dict(teacher_temp=0.07, student_temp=0.1, center_momentum=0.9)
  idx = np.nonzero(mask)

  def run(s, t, c):
    (vd, cd), gd = jax.value_and_grad(
        lambda s: losses.ibot_patch_dense(s, t, mask, c, **kw), has_aux=True)(s)
    (vg, cg), gg = jax.value_and_grad(
        lambda sm: losses.ibot_patch(sm, t[idx], mask, c, **kw), has_aux=True)(s[idx])
    ce = -jnp.sum(jax.nn.softmax((t - c) / 0.07, -1) * jax.nn.log_softmax(s / 0.1, -1), -1)
    # Given teacher targets (e.g. Sinkhorn's) replace the centred softmax in both forms.
    q = jax.nn.softmax(t / 0.05, -1)
    vq = losses.ibot_patch_dense(s, t, mask, c, teacher_probs=q, **kw)[0]
    vqg = losses.ibot_patch(s[idx], t[idx], mask, c, teacher_probs=q[idx], **kw)[0]
    return vd, cd, gd, vg, cg, gg, ce, vq, vqg

  vd, cd, gd, vg, cg, gg, ce, vq, vqg = lt.jit(run)(s, t, c)
  lt.assert_close(vd, vg, rtol=1e-12)
  lt.assert_close(cd, cg, rtol=1e-12)
  lt.assert_close(gd[mask], gg, rtol=1e-12)
  assert not np.any(gd[~mask])
  # Hand check of the divisor: mean over each image's masked tokens, / all B images.
  per_image = [ce[i][mask[i]].mean() for i in range(b) if mask[i].any()]
  lt.assert_close(vd, np.sum(per_image) / b, rtol=1e-12)
  lt.assert_close(vq, vqg, rtol=1e-12)
  assert abs(float(vq) - float(vd)) > 1e-3


_F32 = {}


def _f32_fns():
  if not _F32:
    kw = dict(teacher_temp=0.04)
    _F32["ibot"] = lt.jit(jax.value_and_grad(
        lambda s, t, m, c: losses.ibot_patch_dense(s, t, m, c, **kw), has_aux=True))
    _F32["sk"] = lt.jit(lambda t, v: losses.sinkhorn_knopp_teacher(t, 0.04, valid=v))
    _F32["koleo"] = lt.jit(jax.value_and_grad(losses.koleo))
    _F32["msn"] = lt.jit(jax.value_and_grad(
        lambda a, t, p: losses.pmsn(a, t, p, power_law_exponent=0.5)[0], argnums=(0, 2)))
  return _F32


def test_float32_under_jit_properties():
  """float32 under jit: finite, Sinkhorn rows sum to 1 even where exp(t/tau_t) overflows,
  iBOT with no masked token is exactly 0 with center unchanged, KoLeo finite on duplicates."""
  f = _f32_fns()
  rng = np.random.default_rng(1)
  t = (rng.standard_normal((12, 9)) * 10).astype(np.float32)      # |t|/0.04 up to ~750
  valid = np.arange(12) < 9
  q = np.asarray(f["sk"](t, valid))
  assert q.dtype == np.float32 and np.all(np.isfinite(q))
  np.testing.assert_allclose(q[:9].sum(1), 1.0, rtol=1e-5)
  assert not np.any(q[9:])
  q0 = np.asarray(f["sk"](t, np.zeros(12, bool)))                 # no valid row at all
  assert np.all(q0 == 0)

  s, tt = rng.standard_normal((2, 3, 4, 8)).astype(np.float32)
  c = np.full(8, 0.5, np.float32)
  (v, cn), g = f["ibot"](s, tt, np.zeros((3, 4), bool), c)
  assert float(v) == 0.0 and np.all(np.asarray(g) == 0)
  np.testing.assert_array_equal(np.asarray(cn), c)
  m = np.zeros((3, 4), bool)
  m[0, :2] = True
  tt_bad = tt.copy()
  tt_bad[2, 3] = np.inf                                             # unmasked token: ignored
  (v, cn), g = f["ibot"](s, tt_bad, m, c)
  assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
  assert np.all(np.isfinite(np.asarray(cn)))

  x = rng.standard_normal((6, 5)).astype(np.float32)
  x[3] = x[1]                                                       # exact duplicate
  x[4] = 0.0                                                        # zero vector
  v, g = f["koleo"](x)
  assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
  # The duplicate pair gives 2 of the 6 terms, each -log(eps sqrt(D) + eps) ~ 17.2.
  assert float(v) > 2 * 17.0 / 6

  a, tg, p = (rng.standard_normal(sh).astype(np.float32) for sh in ((8, 6), (4, 6), (5, 6)))
  v, (ga, gp) = f["msn"](a, tg, p)
  assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(ga)))
  assert np.all(np.isfinite(np.asarray(gp)))


def test_hand_values(x64):
  rng = np.random.default_rng(2)
  a, p = rng.standard_normal((6, 3)), rng.standard_normal((3, 3))

  def run(a, p):
    ones, eye = jnp.ones((2, 3)), jnp.eye(3)
    out = dict(koleo=losses.koleo(jnp.eye(4)),
               uniform_msn=losses.msn(ones, ones, eye)[1],
               uniform_pmsn=losses.pmsn(ones, ones, eye, power_law_exponent=0.0)[1].regularizer,
               r_msn=losses.msn(a, a, p)[1].regularizer,
               r_kl=losses.pmsn(a, a, p, power_law_exponent=0.0)[1].regularizer,
               pbar=jnp.mean(jax.nn.softmax(_unit(a) @ _unit(p).T / 0.1), 0),
               prior=losses.power_law_prior(4, 1.0, jnp.float64))
    return out

  o = lt.jit(run)(a, p)
  # KoLeo on an orthonormal set: every nearest distance is sqrt(2) (+eps per component).
  expected = -np.log(np.linalg.norm(np.array([1.0, -1.0, 0.0, 0.0]) + 1e-8) + 1e-8)
  lt.assert_close(o["koleo"], expected, rtol=1e-12)
  # Uniform anchor predictions: MSN me-max KL(pbar || uniform) and PMSN's KL(uniform || pbar)
  # are both 0, targets uniform, ce = log K.
  tm = o["uniform_msn"]
  assert abs(float(tm.regularizer)) < 1e-12 and abs(float(o["uniform_pmsn"])) < 1e-12
  np.testing.assert_allclose(tm.target_probs, 1.0 / 3, rtol=1e-12)
  lt.assert_close(tm.ce, np.log(3.0), rtol=1e-12)
  # Elsewhere the two KL directions differ (a uniform prior does not give back MSN).
  pbar = np.asarray(o["pbar"])
  lt.assert_close(o["r_msn"], np.sum(pbar * np.log(3 * pbar)), rtol=1e-12)
  lt.assert_close(o["r_kl"], np.sum(np.log(1 / (3 * pbar))) / 3, rtol=1e-12)
  assert abs(float(o["r_msn"]) - float(o["r_kl"])) > 1e-4
  lt.assert_close(o["prior"], np.array([1, 1 / 2, 1 / 3, 1 / 4]) / (25 / 12), rtol=1e-12)
  with pytest.raises(ValueError, match="anchors"):
    losses.msn(np.ones((5, 3)), np.ones((2, 3)), np.eye(3))


def test_sharded_equals_one_device(mesh):
  """Global-array functions: jit on batch-sharded inputs == one device (value, grads, aux):
  iBOT dense with Sinkhorn targets over the masked tokens (valid rows), and MSN."""
  from jax.sharding import PartitionSpec as P
  rng = np.random.default_rng(3)
  s, t = (rng.standard_normal((8, 4, 6)).astype(np.float32) for _ in range(2))
  mask = rng.random((8, 4)) < 0.5
  a, tg, pr = (rng.standard_normal(sh).astype(np.float32) for sh in ((16, 5), (8, 5), (6, 5)))

  def fn(s, t, mask, a, tg, pr):
    q = losses.sinkhorn_knopp_teacher(t.reshape(-1, 6), 0.07, valid=mask.reshape(-1))
    ib, center = losses.ibot_patch_dense(s, t, mask, jnp.zeros(6), teacher_temp=0.04,
                                         teacher_probs=q.reshape(t.shape))
    m, terms = losses.msn(a, tg, pr)
    return ib + m, (center, terms)

  specs = [P("data")] * 5 + [P()]
  lt.check_sharded(mesh, fn, [s, t, mask, a, tg, pr], (0, 3, 5), specs=specs)
