"""jssl.models.conv: values and gradients equal XLA's convolution / flax's nn.Conv."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax
from jax.test_util import check_grads
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jssl.models import conv as conv_lib

# (kernel, stride, padding) as used by ResNets: 3x3/1, 3x3/2, 1x1/2 projection, 7x7/2 stem.
# h=9 (odd) makes SAME padding asymmetric at stride 2.
CASES = [
    (8, 1, 1, "SAME"), (8, 1, 2, "SAME"), (8, 3, 1, "SAME"), (9, 3, 2, "SAME"),
    (8, 3, 2, ((1, 1), (1, 1))), (9, 7, 2, "SAME"), (8, 7, 2, ((3, 3), (3, 3))), (8, 3, 2, 1),
]


def _ref(x, w, s, padding):
  pads = conv_lib.explicit_padding(padding, x.shape[1:3], w.shape[:2], (s, s))
  return lax.conv_general_dilated(x, w, (s, s), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  precision=lax.Precision.HIGHEST)


def _loss(conv_fn):
  # A nonlinear loss so that dy is not constant across positions.
  def loss(x, w):
    y = conv_fn(x, w)
    return jnp.sum(jnp.sin(y) * jnp.linspace(1.0, 2.0, y.shape[-1]))
  return loss


def _inputs(h, k, ci=5, co=7, b=3):
  kx, kw = jax.random.split(jax.random.key(h * 100 + k))
  return jax.random.normal(kx, (b, h, h, ci)), jax.random.normal(kw, (k, k, ci, co)) * 0.3


@pytest.mark.parametrize("h,k,s,padding", CASES)
def test_matmul_grad_equals_xla(h, k, s, padding):
  x, w = _inputs(h, k)
  ref = jax.jit(jax.value_and_grad(_loss(lambda x, w: _ref(x, w, s, padding)), argnums=(0, 1)))
  got = jax.jit(jax.value_and_grad(
      _loss(lambda x, w: conv_lib.conv2d(x, w, (s, s), padding, "matmul")), argnums=(0, 1)))
  (v_ref, (dx_ref, dw_ref)), (v, (dx, dw)) = ref(x, w), got(x, w)
  np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-4)


def test_kernel_grad_hand_checked():
  # 1x1 conv, stride 1: dK = sum_{b,h,w} x^T dy, a plain matmul over pixels.
  x = jnp.arange(2 * 2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 2, 3)
  dy = jnp.ones((2, 2, 2, 4))
  dk = conv_lib.kernel_grad_matmul(x, dy, (1, 1, 3, 4), (1, 1), ((0, 0), (0, 0)))
  expected = np.tile(np.asarray(x).reshape(-1, 3).sum(0)[:, None], (1, 4))
  np.testing.assert_allclose(dk[0, 0], expected)


def test_check_grads_finite_differences():
  # Numerical check of the custom VJP against finite differences (first order, rev mode).
  x, w = _inputs(6, 3, ci=2, co=3, b=2)
  f = lambda x, w: conv_lib.conv2d(x, w, (2, 2), "SAME", "matmul")  # noqa: E731
  check_grads(f, (x, w), order=1, modes=["rev"], atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("impl", ["xla", "matmul"])
def test_module_matches_flax_conv(impl):
  x, _ = _inputs(8, 3, ci=4)
  ours = conv_lib.Conv(6, (3, 3), (2, 2), "SAME", conv_impl=impl)
  theirs = nn.Conv(6, (3, 3), (2, 2), "SAME")
  params = theirs.init(jax.random.key(0), x)
  # Same parameter tree, so a checkpoint loads whichever implementation is used.
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
      jnp.shape, params)
  loss = lambda m: lambda p, x: jnp.sum(m.apply(p, x) ** 2)  # noqa: E731
  g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(params, x)
  g_theirs = jax.jit(jax.grad(loss(theirs), argnums=(0, 1)))(params, x)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5,
                             atol=1e-5)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_sharded_equals_single_device():
  devices = jax.devices()
  assert len(devices) == 8, "tests/conftest.py sets 8 CPU devices"
  mesh = Mesh(np.array(devices), ("data",))
  x, w = _inputs(8, 3, ci=4, co=6, b=16)
  f = jax.jit(jax.value_and_grad(
      _loss(lambda x, w: conv_lib.conv2d(x, w, (1, 1), "SAME", "matmul")), argnums=(0, 1)))
  single = f(x, w)
  # Batch split over 'data'; the kernel-gradient matmul contracts over the batch, so XLA
  # inserts the cross-device sum.
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  ws = jax.device_put(w, NamedSharding(mesh, P()))
  sharded = f(xs, ws)
  assert sharded[1][0].sharding.spec == P("data")
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params():
  x, _ = _inputs(8, 3, ci=4)
  m = conv_lib.Conv(6, (3, 3), dtype=jnp.bfloat16, conv_impl="matmul")
  params = m.init(jax.random.key(0), x)
  assert params["params"]["kernel"].dtype == jnp.float32
  y = m.apply(params, x)
  assert y.dtype == jnp.bfloat16
  g = jax.grad(lambda p: jnp.sum(m.apply(p, x).astype(jnp.float32)))(params)
  assert g["params"]["kernel"].dtype == jnp.float32
  g_ref = jax.grad(lambda p: jnp.sum(
      conv_lib.Conv(6, (3, 3), conv_impl="xla").apply(p, x)))(params)
  np.testing.assert_allclose(g["params"]["kernel"], g_ref["params"]["kernel"], rtol=5e-2,
                             atol=5e-1)


def test_auto_resolves_by_backend_and_rejects_unknown():
  assert conv_lib.resolve_conv_impl("auto") == ("matmul" if jax.default_backend() == "cpu"
                                                else "xla")
  with pytest.raises(ValueError, match="conv_impl"):
    conv_lib.resolve_conv_impl("cudnn")
  with pytest.raises(ValueError, match="kernel"):
    conv_lib.conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 4)))
