"""Assertion helpers for tests/losses (imported as a module; fixtures live in conftest)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# Tests compile many tiny programs; XLA's CPU backend optimisations cost more than they
# save at these sizes (about -35% compile time).
JIT_OPTS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def jit(fn, **kw):
  return jax.jit(fn, compiler_options=JIT_OPTS, **kw)


try:  # jax >= 0.6 exposes shard_map at top level; older under experimental.
  shard_map = jax.shard_map
except AttributeError:  # pragma: no cover
  from jax.experimental.shard_map import shard_map


def assert_close(actual, expected, rtol=1e-9, atol_scale=1e-11, name=""):
  """Relative parity: |a - e| <= rtol*|e| + atol_scale*max|e| elementwise."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
  scale = max(float(np.max(np.abs(expected))), 1e-300) if expected.size else 1.0
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol_scale * scale, err_msg=name)


def max_rel(actual, expected):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-300))


def check_sharded(mesh, fn, args, argnums, specs=None, rtol=1e-5, atol=1e-6):
  """jit(value_and_grad(fn)) on inputs sharded on 'data' == on one device (float32).

  fn returns a scalar or (scalar, aux); aux leaves are compared too. specs: one
  PartitionSpec per arg (default P('data') for arrays with ndim >= 1, else P()).
  """
  has_aux = isinstance(jax.eval_shape(fn, *args), tuple)
  vg = jit(jax.value_and_grad(fn, argnums=argnums, has_aux=has_aux))
  single = vg(*args)
  if specs is None:
    specs = [P("data") if np.ndim(a) >= 1 else P() for a in args]
  sharded_args = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(args, specs)]
  sharded = vg(*sharded_args)
  for x, y in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
    np.testing.assert_allclose(np.asarray(y, np.float64), np.asarray(x, np.float64),
                               rtol=rtol, atol=atol)
  return single


def check_shard_map(mesh, fn_global, fn_local, args, argnums, specs=None, out_specs=P(),
                    rtol=1e-5, atol=1e-6):
  """shard_map(fn_local with axis_name='data') == fn_global on the whole batch, value+grad.

  out_specs describes fn_local's output pytree (P() for replicated scalars / aux).
  """
  if specs is None:
    specs = tuple(P("data") if np.ndim(a) >= 1 else P() for a in args)
  mapped = shard_map(fn_local, mesh=mesh, in_specs=tuple(specs), out_specs=out_specs)
  has_aux = isinstance(jax.eval_shape(fn_global, *args), tuple)
  ref = jit(jax.value_and_grad(fn_global, argnums=argnums, has_aux=has_aux))(*args)
  got = jit(jax.value_and_grad(mapped, argnums=argnums, has_aux=has_aux))(*args)
  for x, y in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(y, np.float64), np.asarray(x, np.float64),
                               rtol=rtol, atol=atol)
  return ref


def randn(seed, shape, dtype=jnp.float32, scale=1.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def shared_dir():
  import os
  here = os.path.dirname(os.path.abspath(__file__))
  default = os.path.abspath(os.path.join(here, "..", "..", "..", "shared"))
  return os.environ.get("JSSL_SHARED_DIR", default)


def parity_dir():
  """`<shared>/parity/fixtures` if present, else the copy vendored in tests/losses/parity."""
  import os
  shipped = os.path.join(shared_dir(), "parity", "fixtures")
  if os.path.isdir(shipped):
    return shipped
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity")


def fixture_cases(prefix):
  """Names of every shipped fixture `<prefix>_c*.npz` (all cases, not only c0).

  Returns ["<prefix>_missing"] when none exist so the parametrised test is collected
  and then skipped by the `load_fixture` fixture.
  """
  import glob
  import os
  pattern = os.path.join(parity_dir(), prefix + "_c*.npz")
  names = sorted(os.path.basename(p)[:-4] for p in glob.glob(pattern))
  return names or [prefix + "_missing"]


_JIT_CACHE = {}


def jcall(fn, *args, **kw):
  """fn(*args, **kw) under jax.jit (eager dispatch on 8 CPU devices is slow).

  Array keyword arguments are traced; everything else (floats, strings, None) is
  static. Jitted wrappers are cached per (fn, static kwargs).
  """
  arr_kw = {k: v for k, v in kw.items() if hasattr(v, "shape")}
  static = tuple(sorted((k, v) for k, v in kw.items() if k not in arr_kw))
  key = (fn, static, tuple(sorted(arr_kw)))
  if key not in _JIT_CACHE:
    st = dict(static)
    _JIT_CACHE[key] = jit(lambda a, k: fn(*a, **k, **st))
  return _JIT_CACHE[key](args, arr_kw)
