"""Sharding invariance of every loss, value and gradients, float32.

(1) `jax.jit` on inputs sharded on 'data' over 8 simulated CPU devices == the same jitted
function on one device; (2) the loss inside `jax.shard_map` with axis_name='data' == the
global loss. To keep compile time low, each group of losses is evaluated in one jitted
function (one compile per variant instead of one per loss).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import losses_testing as lt
from jssl import losses

D = P("data")
V = P(None, "data")   # [views, B, ...] arrays: batch is axis 1
R = P()


def _f(seed, shape, scale=1.0):
  return lt.randn(seed, shape, scale=scale)


def _entries():
  b, d, k = 16, 8, 6
  za, zb, zc, zd = (_f(i, (b, d)) for i in range(4))
  queue = _f(5, (24, d))
  queue = queue / np.linalg.norm(queue, axis=1, keepdims=True)
  ptr = np.zeros((1,), np.int32)
  labels = np.arange(b) % 5
  hi, lo, qsw = _f(6, (2, b, k), 0.3), _f(7, (2, b, k), 0.3), _f(8, (2, 8, k), 0.3)
  stu, tea, cen = _f(9, (4, b, k)), _f(10, (2, b, k)), _f(11, (k,), 0.1)
  pred, tgt = _f(12, (b, 4, 6)), _f(13, (b, 4, 6))
  mask = (np.arange(b * 4).reshape(b, 4) % 3 == 0).astype(np.float32)
  ls, tp, bias = np.float32(np.log(1 / 0.07)), np.float32(np.log(10.0)), np.float32(-10.0)
  mrl = losses.matryoshka(losses.ntxent, dims=(4, 8))
  # name: (fn(axis_name) -> callable, args, argnums, in_specs, out_specs of the local fn)
  return {
      "ntxent": (lambda ax: lambda a, c: losses.ntxent(a, c, temperature=0.2, axis_name=ax),
                 (za, zb), (0, 1), (D, D), R),
      "ntxent_chunked": (lambda ax: lambda a, c: losses.ntxent_chunked(
          a, c, temperature=0.2, chunk_size=3, axis_name=ax), (za, zb), (0, 1), (D, D), R),
      "info_nce": (lambda ax: lambda a, c, m: losses.info_nce(a, c, m, temperature=0.3,
                                                               axis_name=ax),
                   (za, zb, np.eye(b, dtype=bool)), (0, 1), (D, D, D), R),
      "supcon": (lambda ax: lambda f, y: losses.supcon(f, y, axis_name=ax),
                 (_f(14, (b, 2, d)), labels), 0, (D, D), R),
      "supcon_one": (lambda ax: lambda f: losses.supcon(f, contrast_mode="one", axis_name=ax),
                     (_f(15, (b, 3, d)),), 0, (D,), R),
      "dcl": (lambda ax: lambda a, c: losses.dcl(a, c, axis_name=ax), (za, zb), (0, 1), (D, D), R),
      "dclw": (lambda ax: lambda a, c: losses.dclw(a, c, axis_name=ax), (za, zb), (0, 1),
               (D, D), R),
      "dclw_official": (lambda ax: lambda a, c: losses.dclw(a, c, detach_weights=False,
                                                            axis_name=ax),
                        (za, zb), (0, 1), (D, D), R),
      "moco": (lambda ax: lambda q, kk, qu, p: losses.moco(q, kk, qu, p, temperature=0.2,
                                                            axis_name=ax),
               (za, zb, queue, ptr), (0,), (D, D, R, R), (R, R)),
      "mocov3": (lambda ax: lambda a, c, e, f: losses.mocov3(a, c, e, f, temperature=0.2,
                                                             axis_name=ax),
                 (za, zb, zc, zd), (0, 1), (D, D, D, D), R),
      "byol": (lambda ax: lambda a, c, e, f: losses.byol(a, c, e, f, axis_name=ax),
               (za, zb, zc, zd), (0, 1), (D, D, D, D), R),
      "simsiam": (lambda ax: lambda a, c, e, f: losses.simsiam(a, c, e, f, axis_name=ax),
                  (za, zb, zc, zd), (0, 1), (D, D, D, D), R),
      "negative_cosine": (lambda ax: lambda a, c: losses.negative_cosine(a, c, axis_name=ax),
                          (za, zb), (0, 1), (D, D), R),
      "barlow_twins": (lambda ax: lambda a, c: losses.barlow_twins(a, c, axis_name=ax),
                       (za, zb), (0, 1), (D, D), R),
      "vicreg": (lambda ax: lambda a, c: losses.vicreg(a, c, axis_name=ax), (za, zb), (0, 1),
                 (D, D), R),
      "swav": (lambda ax: lambda h, l, q: losses.swav(h, l, queue=q, axis_name=ax),
               (hi, lo, qsw), (0, 1), (V, V, V), (R, V)),
      "dino": (lambda ax: lambda s, t, c: losses.dino(s, t, c, axis_name=ax),
               (stu, tea, cen), (0,), (V, V, R), R),
      "clip": (lambda ax: lambda a, c, s: losses.clip(a, c, s, axis_name=ax),
               (za, zb, ls), (0, 1, 2), (D, D, R), R),
      "siglip": (lambda ax: lambda a, c, t, bb: losses.siglip(a, c, t, bb, axis_name=ax),
                 (za, zb, tp, bias), (0, 1, 2, 3), (D, D, R, R), R),
      "siglip_chunked": (lambda ax: lambda a, c, t, bb: losses.siglip_chunked(
          a, c, t, bb, chunk_size=3, axis_name=ax), (za, zb, tp, bias), (0, 1, 2, 3),
                         (D, D, R, R), R),
      "mae": (lambda ax: lambda x, t, m: losses.mae(x, t, m, norm_pix_loss=True, axis_name=ax),
              (pred, tgt, mask), (0,), (D, D, D), R),
      "alignment": (lambda ax: lambda a, c: losses.alignment(a, c, axis_name=ax), (za, zb),
                    (0, 1), (D, D), R),
      "uniformity": (lambda ax: lambda a: losses.uniformity(a, axis_name=ax), (za,), (0,),
                     (D,), R),
      "hypersphere": (lambda ax: lambda a, c: losses.hypersphere(a, c, axis_name=ax),
                      (za, zb), (0, 1), (D, D), R),
      "rankme": (lambda ax: lambda a: losses.rankme(a, axis_name=ax), (za,), (0,), (D,), R),
      "feature_std": (lambda ax: lambda a: jnp.sum(losses.feature_std(a, axis_name=ax) ** 2),
                      (za,), (0,), (D,), R),
      "matryoshka_ntxent": (lambda ax: lambda a, c: mrl(a, c, temperature=0.2, axis_name=ax),
                            (za, zb), (0, 1), (D, D), R),
  }


ENTRIES = _entries()
GROUPS = {
    "contrastive": ["ntxent", "ntxent_chunked", "info_nce", "supcon", "supcon_one", "dcl",
                    "dclw", "dclw_official", "matryoshka_ntxent"],
    "moco_cosine_redundancy": ["moco", "mocov3", "byol", "simsiam", "negative_cosine",
                               "barlow_twins", "vicreg"],
    "clusters_text_mae_metrics": ["swav", "dino", "clip", "siglip", "siglip_chunked", "mae",
                                  "alignment", "uniformity", "hypersphere", "rankme",
                                  "feature_std"],
}


def _vg(fn, args, argnums):
  has_aux = isinstance(jax.eval_shape(fn, *args), tuple)
  return jax.value_and_grad(fn, argnums=argnums, has_aux=has_aux)


def _compare(ref, got, names, rtol=2e-5, atol=2e-6):
  for name in names:
    for x, y in zip(jax.tree.leaves(ref[name]), jax.tree.leaves(got[name])):
      np.testing.assert_allclose(np.asarray(y, np.float64), np.asarray(x, np.float64),
                                 rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_sharded_equals_single_device(mesh, group):
  names = GROUPS[group]
  ents = {n: ENTRIES[n] for n in names}

  def run_all(all_args):
    return {n: _vg(e[0](None), all_args[n], e[2])(*all_args[n]) for n, e in ents.items()}

  run = lt.jit(run_all)
  args = {n: tuple(e[1]) for n, e in ents.items()}
  single = run(args)
  sharded_args = {n: tuple(jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(e[1], e[3]))
                  for n, e in ents.items()}
  sharded = run(sharded_args)
  _compare(single, sharded, names)

  # shard_map with axis_name == global loss (the single-device results above).
  def run_mapped(all_args):
    out = {}
    for n, e in ents.items():
      local = e[0]("data")
      mapped = lt.shard_map(local, mesh=mesh, in_specs=tuple(e[3]), out_specs=e[4])
      out[n] = _vg(mapped, all_args[n], e[2])(*all_args[n])
    return out

  mapped = lt.jit(run_mapped)(args)
  _compare(single, mapped, names)
