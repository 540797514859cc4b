"""2-D convolution whose backward pass is fast on XLA:CPU.

XLA:CPU computes the convolution *kernel* gradient (the reduction over batch and
space of input patches times output gradients) with a generic loop that runs 5-50x
slower than a matrix product of the same FLOPs (measured in
`benchmarks/conv_cpu.py`). Its forward convolution and input gradient (a transposed
convolution) run at matmul speed, so only the kernel gradient is replaced:

  dK[i, j] = sum_{b, h, w} x_pad[b, s*h + i, s*w + j, :]^T dy[b, h, w, :]

i.e. one `[Ci, B*Ho*Wo] x [B*Ho*Wo, Co]` matmul per kernel offset (i, j) on a
strided slice of the padded input ("shifted matmuls"; the im2col formulation of
Chellapilla et al. 2006, "High performance convolutional neural networks for
document processing", without materialising the patch matrix).

`Conv` is a drop-in for `flax.linen.Conv` (param names `kernel` `[kh, kw, Ci, Co]`
and `bias` `[Co]`), so checkpoints do not depend on `conv_impl`.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence, Union

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from jssl import precision

Padding = Union[str, int, Sequence[tuple[int, int]]]
_DIMS = ("NHWC", "HWIO", "NHWC")
CONV_IMPLS = ("auto", "xla", "matmul")


def resolve_conv_impl(impl: str) -> str:
  """Maps 'auto' to 'xla' on GPU/TPU and, on the CPU backend, to the
  implementation measured fastest on this CPU (`jssl.cpu_tuning.conv_impl`:
  'matmul' when nothing was measured)."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
  if impl == "auto":
    # GPU/TPU convolution gradients are cuDNN / MXU kernels; only XLA:CPU is slow,
    # and which of the two is faster there depends on the CPU (cpu_tuning).
    if jax.default_backend() != "cpu":
      return "xla"
    from jssl import cpu_tuning  # pylint: disable=import-outside-toplevel
    return cpu_tuning.conv_impl()
  return impl


def explicit_padding(padding: Padding, spatial: Sequence[int], kernel: Sequence[int],
                     strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Returns ((lo, hi), ...) per spatial dim for 'SAME' / 'VALID' / int / pairs."""
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
    return tuple(lax.padtype_to_pads(tuple(spatial), tuple(kernel), tuple(strides),
                                     padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding),) * len(spatial)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(pads) != len(spatial):
    raise ValueError(f"padding {padding} needs one (lo, hi) pair per spatial dim")
  return pads


def _xla_conv(x, kernel, strides, pads):
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DIMS)


def kernel_grad_matmul(x: jax.Array, dy: jax.Array, kernel_shape: Sequence[int],
                       strides: Sequence[int], pads: Sequence[tuple[int, int]]) -> jax.Array:
  """Kernel gradient of an NHWC/HWIO convolution as a sum of shifted matmuls.

  Args:
    x: input `[B, H, W, Ci]`.
    dy: output cotangent `[B, Ho, Wo, Co]`.
    kernel_shape: `(kh, kw, Ci, Co)`.
    strides: `(sh, sw)`.
    pads: `((lo_h, hi_h), (lo_w, hi_w))` as given to the forward convolution.

  Returns:
    `[kh, kw, Ci, Co]` in x's dtype, accumulated in at least float32.
  """
  kh, kw, ci, co = kernel_shape
  sh, sw = strides
  b, ho, wo, _ = dy.shape
  zero = jnp.zeros((), x.dtype)
  xp = lax.pad(x, zero, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  acc = jnp.promote_types(x.dtype, jnp.float32)
  rows = []
  for i in range(kh):
    for j in range(kw):
      # Strided slice = the input pixels that kernel tap (i, j) saw for every output pixel.
      tap = lax.slice(xp, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, ci),
                      (1, sh, sw, 1))
      rows.append(jnp.einsum("bhwc,bhwd->cd", tap, dy, preferred_element_type=acc))
  return jnp.stack(rows).reshape(kh, kw, ci, co).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_matmul_grad(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                     pads: tuple[tuple[int, int], ...]) -> jax.Array:
  """XLA convolution in the forward pass; kernel gradient by shifted matmuls.

  Args:
    x: `[B, H, W, Ci]`.
    kernel: `[kh, kw, Ci, Co]`, same dtype as x.
    strides: `(sh, sw)` (hashable tuple).
    pads: `((lo_h, hi_h), (lo_w, hi_w))` (hashable tuple).

  Returns:
    `[B, Ho, Wo, Co]`, equal to `lax.conv_general_dilated` with NHWC/HWIO/NHWC.
  """
  return _xla_conv(x, kernel, strides, pads)


def _fwd(x, kernel, strides, pads):
  return _xla_conv(x, kernel, strides, pads), (x, kernel)


def _bwd(strides, pads, res, dy):
  x, kernel = res
  # Input gradient: XLA's transposed convolution already runs at matmul speed on CPU,
  # and linear_transpose emits only it (no recomputed forward).
  (dx,) = jax.linear_transpose(lambda v: _xla_conv(v, kernel, strides, pads), x)(dy)
  dk = kernel_grad_matmul(x, dy, kernel.shape, strides, pads).astype(kernel.dtype)
  return dx, dk


conv_matmul_grad.defvjp(_fwd, _bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
           padding: Padding = "SAME", impl: str = "auto") -> jax.Array:
  """NHWC x HWIO -> NHWC convolution, no dilation, no groups.

  Args:
    x: `[B, H, W, Ci]`.
    kernel: `[kh, kw, Ci, Co]`.
    strides: `(sh, sw)`.
    padding: 'SAME', 'VALID', an int, or `((lo_h, hi_h), (lo_w, hi_w))`.
    impl: 'xla' (native convolution and gradients), 'matmul' (kernel gradient as
      shifted matmuls) or 'auto' (matmul on the CPU backend).

  Returns:
    `[B, Ho, Wo, Co]`.
  """
  if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"expected x [B, H, W, C] and kernel [kh, kw, C, Co], got x {x.shape}"
                     f" and kernel {kernel.shape}")
  strides = tuple(int(s) for s in strides)
  pads = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
  if resolve_conv_impl(impl) == "xla":
    return _xla_conv(x, kernel, strides, pads)
  return conv_matmul_grad(x, kernel, strides, pads)


class Conv(nn.Module):
  """2-D convolution layer, a drop-in for `flax.linen.Conv` on NHWC inputs.

  Attributes:
    features: output channels Co.
    kernel_size: `(kh, kw)`.
    strides: `(sh, sw)`.
    padding: 'SAME', 'VALID', an int, or `((lo_h, hi_h), (lo_w, hi_w))`.
    use_bias: add a `bias [Co]` parameter.
    dtype: compute dtype (inputs and kernel are cast to it); None keeps x's dtype.
    param_dtype: parameter storage dtype (float32: `jssl.precision`).
    kernel_init / bias_init: initialisers.
    conv_impl: 'auto' | 'xla' | 'matmul', see `conv2d`.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = precision.PARAM_DTYPE
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, kernel)
    y = conv2d(x.astype(dtype), kernel.astype(dtype), self.strides, self.padding,
               self.conv_impl)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(dtype)
    return y
