"""float64 parity of every loss with the shipped reference fixtures (value and gradients).

Each entry of CASES maps a fixture family to (input names, builder). The builder gets
the fixture's hyperparameters and arrays and returns a function of the listed inputs
giving the loss (or (loss, aux)); every `grad_<input>` stored in the fixture is compared,
and `extras(aux, arrays)` returns further (actual, expected) pairs (queues, centers, ...).
All cases `<family>_c*.npz` are tested, not only c0.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses_testing as lt
from jssl import losses

RTOL = 1e-9


def _hp(hp, key, default):
  v = hp.get(key, default)
  return default if v is None else v


def _ntxent(hp, arr):
  return lambda out0, out1: losses.ntxent(out0, out1, temperature=hp["temperature"])


def _ntxent_tf2(hp, arr):
  # SimCLR tf2 returns loss_a + loss_b (each a mean over B): 2x jssl's mean over 2B.
  return lambda out0, out1: 2.0 * losses.ntxent(out0, out1, temperature=hp["temperature"])


def _dcl(hp, arr, factor=1.0):
  return lambda out0, out1: factor * losses.dcl(out0, out1, temperature=hp["temperature"])


def _dclw(hp, arr, factor=1.0, detach=True):
  return lambda out0, out1: factor * losses.dclw(
      out0, out1, temperature=hp["temperature"], sigma=hp["sigma"], detach_weights=detach)


def _supcon(hp, arr, normalize=True):
  labels = jnp.asarray(arr["labels"]) if "labels" in arr else None
  return lambda features: losses.supcon(
      features, labels, temperature=hp["temperature"],
      base_temperature=_hp(hp, "base_temperature", hp["temperature"]),
      contrast_mode=_hp(hp, "contrast_mode", "all"), normalize=normalize)


# family -> list of (input names, builder, grad suffix, loss key)
CASES = {
    "ntxent": [(["out0", "out1"], _ntxent, "", "loss")],
    "dcl": [(["out0", "out1"], _dcl, "", "loss")],
    "dcl_official": [(["out0", "out1"], lambda hp, a: _dcl(hp, a, 2.0), "", "loss")],
    "dclw": [(["out0", "out1"], _dclw, "", "loss")],
    "dclw_official": [(["out0", "out1"], lambda hp, a: _dclw(hp, a, 2.0, False), "", "loss")],
    "supcon": [(["features"], _supcon, "", "loss"),
               (["features_unit"], lambda hp, a: _supcon(hp, a, False), "_unit", "loss")],
}
EXTRAS = {}  # family -> fn(aux, arrays) -> list of (name, actual, expected)


def _moco(hp, arr):
  ptr = jnp.asarray(np.reshape(_hp(hp, "queue_ptr_before", 0), (1,)), jnp.int32)
  return lambda q, k, queue: losses.moco(q, k, queue, ptr, temperature=hp["temperature"])


def _moco_extras(aux, value, arr):
  return [("queue_after", aux.queue, arr["queue_after"]),
          ("queue_ptr_after", np.asarray(aux.ptr, np.float64), arr["queue_ptr_after"])]


def _barlow(hp, arr):
  lam = hp.get("lambda_param", hp.get("lambd"))
  return lambda a, b: losses.barlow_twins(a, b, lambda_param=lam, eps=_hp(hp, "bn_eps", 1e-5),
                                          scale=_hp(hp, "scale_loss", 1.0))


def _vicreg(hp, arr):
  return lambda a, b: losses.vicreg(a, b, sim_coeff=hp["lambda_param"], std_coeff=hp["mu_param"],
                                    cov_coeff=hp["nu_param"], eps=hp["eps"])


def _vicreg_extras(aux, value, arr):
  return [("inv_loss", aux.invariance, arr["inv_loss"]),
          ("var_loss", aux.variance, arr["var_loss"]),
          ("cov_loss", aux.covariance, arr["cov_loss"])]


def _swav(hp, arr):
  queue = jnp.asarray(arr["queue"]) if "queue" in arr else None
  kw = dict(queue=queue, temperature=hp["temperature"], epsilon=hp["sinkhorn_epsilon"],
            num_iters=hp["sinkhorn_iterations"])
  if "low_res" in arr:
    return lambda high_res, low_res: losses.swav(high_res, low_res, **kw)
  return lambda high_res: losses.swav(high_res, **kw)


def _sinkhorn(hp, arr):
  return lambda scores: losses.sinkhorn(scores, epsilon=hp["epsilon"], num_iters=hp["iterations"])


def _dino(hp, arr):
  center = jnp.asarray(arr["center_before"])
  teacher = jnp.asarray(arr["teacher"])
  return lambda student: losses.dino(student, teacher, center, teacher_temp=hp["teacher_temp"],
                                     student_temp=hp["student_temp"],
                                     center_momentum=hp["center_momentum"])


def _clip(hp, arr, normalize=True):
  return lambda img, txt, logit_scale: losses.clip(img, txt, logit_scale, normalize=normalize)


def _siglip(hp, arr, normalize=True):
  return lambda img, txt, t_prime, bias: losses.siglip(img, txt, t_prime, bias,
                                                       normalize=normalize)


def _siglip_chunked(hp, arr):
  return lambda img, txt, t_prime, bias: losses.siglip_chunked(img, txt, t_prime, bias,
                                                               chunk_size=3)


def _ntxent_chunked(hp, arr):
  return lambda out0, out1: losses.ntxent_chunked(out0, out1, temperature=hp["temperature"],
                                                  chunk_size=5)


def _align(hp, arr, normalize=True):
  return lambda x, y: losses.alignment(x, y, alpha=hp["alpha"], normalize=normalize)


def _uniform(hp, arr, normalize=True):
  return lambda x: losses.uniformity(x, t=hp["t"], normalize=normalize)


def _hyper(hp, arr):
  return lambda a, b: losses.hypersphere(a, b, t=hp["t"], lam=hp["lam"], alpha=hp["alpha"])


CASES.update({
    "ntxent_chunked": [],
    "moco_queue": [(["q", "k", "queue"], _moco, "", "loss")],
    "mocov3": [(["q1", "q2", "k1", "k2"],
                lambda hp, a: lambda q1, q2, k1, k2: losses.mocov3(
                    q1, q2, k1, k2, temperature=hp["temperature"]), "", "loss")],
    "neg_cosine": [(["x0", "x1"], lambda hp, a: lambda x0, x1: losses.negative_cosine(
        x0, x1, eps=_hp(hp, "eps", 1e-8)), "", "loss")],
    "simsiam": [(["p1", "p2", "z1", "z2"], lambda hp, a: losses.simsiam, "", "loss")],
    "byol": [(["p1", "p2", "z1", "z2"], lambda hp, a: losses.byol, "", "loss")],
    "barlow_twins_lightly": [(["z_a", "z_b"], _barlow, "", "loss")],
    "barlow_twins_official": [(["z1", "z2"], _barlow, "", "loss")],
    "barlow_twins_official_v1": [(["z1", "z2"], _barlow, "", "loss")],
    "vicreg": [(["z_a", "z_b"], _vicreg, "", "loss")],
    "swav": [(["high_res", "low_res"], _swav, "", "loss")],
    "sinkhorn": [(["scores"], _sinkhorn, "", "loss")],
    "dino": [(["student"], _dino, "", "loss")],
    "clip": [(["img", "txt", "logit_scale"], _clip, "", "loss"),
             (["img_unit", "txt_unit", "logit_scale"], lambda hp, a: _clip(hp, a, False),
              "_unit", "loss")],
    "siglip": [(["img", "txt", "t_prime", "bias"], _siglip, "", "loss"),
               (["img_unit", "txt_unit", "t_prime", "bias"], lambda hp, a: _siglip(hp, a, False),
                "_unit", "loss"),
               (["img", "txt", "t_prime", "bias"], _siglip_chunked, "", "loss")],
    "align": [(["x", "y"], _align, "", "loss"),
              (["x_unit", "y_unit"], lambda hp, a: _align(hp, a, False), "_unit", "loss")],
    "uniform": [(["x"], _uniform, "", "loss"),
                (["x_unit"], lambda hp, a: _uniform(hp, a, False), "_unit", "loss")],
    "hypersphere_lightly": [(["z_a", "z_b"], _hyper, "", "loss")],
})
CASES["ntxent"].append((["out0", "out1"], _ntxent_chunked, "", "loss"))
del CASES["ntxent_chunked"]
EXTRAS.update({
    "moco_queue": _moco_extras,
    "vicreg": _vicreg_extras,
    "swav": lambda aux, v, arr: [("q", aux, arr["q"])],
    "sinkhorn": lambda aux, v, arr: [("Q", v, arr["Q"])],
    "dino": lambda aux, v, arr: [("center_after", aux, arr["center_after"])],
})


def _prepare(arrays, hp, family, spec):
  """-> (fn(args) -> ((value, aux), grads), args, comparison builder)."""
  names, builder, suffix, loss_key = spec
  names = [n for n in names if n in arrays]
  fn = builder(hp, arrays)
  args = [jnp.asarray(arrays[n]) for n in names]
  base = [n[: -len(suffix)] if suffix else n for n in names]
  diff = [i for i, b in enumerate(base) if f"grad_{b}{suffix}" in arrays]
  has_aux = isinstance(jax.eval_shape(fn, *args), tuple)

  def compute(args):
    if diff:
      out, grads = jax.value_and_grad(fn, argnums=diff, has_aux=has_aux)(*args)
    else:
      out, grads = fn(*args), ()
    return (out if has_aux else (out, None)), grads

  def compare(result):
    (value, aux), grads = result
    pairs = []
    if loss_key in arrays:
      pairs.append(("loss", value, arrays[loss_key]))
    for i, g in zip(diff, grads):
      pairs.append((f"grad_{base[i]}{suffix}", g, arrays[f"grad_{base[i]}{suffix}"]))
    if family in EXTRAS and not suffix and builder is CASES[family][0][1]:
      pairs += EXTRAS[family](aux, value, arrays)
    return pairs

  return compute, args, compare


def _params():
  out = []
  for family, specs in CASES.items():
    for name in lt.fixture_cases(family):
      for k in range(len(specs)):
        out.append(pytest.param(family, name, k, id=f"{name}-{k}"))
  return out


PARAMS = _params()


@pytest.mark.parametrize("family,name,k", PARAMS)
def test_parity(load_fixture, x64, family, name, k):
  arrays, hp = load_fixture(name)
  compute, args, compare = _prepare(arrays, hp, family, CASES[family][k])
  for what, actual, expected in compare(lt.jit(compute)(args)):
    assert np.asarray(actual).dtype == np.float64, what
    lt.assert_close(actual, expected, rtol=RTOL, name=f"{name}:{what}")


def test_ntxent_simclr_tf2_factor(load_fixture, x64):
  """jssl averages over 2B anchors; SimCLR tf2 reports twice that (stored loss_simclr_tf2)."""
  for name in lt.fixture_cases("ntxent"):
    arrays, hp = load_fixture(name)
    tf2 = _ntxent_tf2(hp, arrays)(jnp.asarray(arrays["out0"]), jnp.asarray(arrays["out1"]))
    lt.assert_close(tf2, arrays["loss_simclr_tf2"], rtol=RTOL)
