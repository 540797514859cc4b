"""MLP heads on top of an encoder: projectors and predictors.

One building block, Linear -> BatchNorm -> ReLU, stacked, then a final Linear with an
optional BatchNorm:
  SimCLR projector (Chen et al. 2020, sec. 2.1 "g(.)"; v2, Chen et al. 2020b,
    3 layers): Linear-BN-ReLU ... Linear, and in the official TF code
    (google-research/simclr `tf2/model.py` ProjectionHead) BN without a shift on the
    output -> `last_bn=True, last_bn_center=False`.
  BYOL projector / predictor (Grill et al. 2020, sec. 3.3): Linear(4096)-BN-ReLU-
    Linear(256), no output BN.
  SimSiam (Chen & He 2021, sec. 4): projector of 3 layers ending in BN without
    affine (`last_bn_scale=False, last_bn_center=False`); predictor
    Linear(512)-BN-ReLU-Linear(2048).
A Linear followed by BN carries no bias (BN's shift makes it redundant).

Precision (`jssl.precision`): the hidden blocks compute in `dtype`, the output
Linear (and its BN) in `out_dtype`, float32 by default: it produces the loss
input, costs < 1% of the network's FLOPs, and its output is divided by a small
temperature before a softmax. Parameters and BN statistics are float32.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from jssl import precision

BN_MOMENTUM = 0.9
BN_EPS = 1e-5


class MLPHead(nn.Module):
  """Stack of Linear[-BN]-ReLU blocks and a final Linear[-BN].

  Attributes:
    hidden_dims: widths of the hidden blocks; () gives a single Linear.
    out_dim: P, output width.
    use_bn: BatchNorm after every hidden Linear.
    last_bn: BatchNorm after the output Linear.
    last_bn_scale / last_bn_center: learnable scale / shift of that output BN.
    dtype: compute dtype of the hidden blocks; params are float32.
    out_dtype: compute dtype of the output Linear (+BN), float32 by policy.

  Call: `__call__(x [B, D], *, train) -> [B, P]`; with BN and `train=True` pass
  `mutable=['batch_stats']` to `apply`.
  """
  hidden_dims: Sequence[int] = (2048,)
  out_dim: int = 128
  use_bn: bool = True
  last_bn: bool = False
  last_bn_scale: bool = True
  last_bn_center: bool = False
  dtype: Any = jnp.float32
  out_dtype: Any = precision.LOSS_DTYPE

  def _bn(self, train, name, use_scale=True, use_bias=True, dtype=None):
    # Statistics and normalisation in float32; output in `dtype`.
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                        use_scale=use_scale, use_bias=use_bias, dtype=dtype or self.dtype,
                        param_dtype=precision.PARAM_DTYPE, force_float32_reductions=True,
                        name=name)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if x.ndim != 2:
      raise ValueError(f"MLPHead expects x [B, D], got shape {x.shape}")
    for i, width in enumerate(self.hidden_dims):
      x = nn.Dense(width, use_bias=not self.use_bn, dtype=self.dtype,
                   param_dtype=precision.PARAM_DTYPE, name=f"linear{i + 1}")(x)
      if self.use_bn:
        x = self._bn(train, f"bn{i + 1}")(x)
      x = nn.relu(x)
    x = nn.Dense(self.out_dim, use_bias=not self.last_bn, dtype=self.out_dtype,
                 param_dtype=precision.PARAM_DTYPE, name="out")(x)
    if self.last_bn:
      x = self._bn(train, "out_bn", self.last_bn_scale, self.last_bn_center,
                   dtype=self.out_dtype)(x)
    return x


def projector(hidden_dims: Sequence[int] = (2048,), out_dim: int = 128, *, use_bn: bool = True,
              last_bn: bool = False, last_bn_scale: bool = True, last_bn_center: bool = False,
              dtype: Any = jnp.float32) -> MLPHead:
  """SimCLR-style projector g(.); defaults = SimCLR v1 CIFAR head (solo-learn)."""
  return MLPHead(tuple(hidden_dims), out_dim, use_bn, last_bn, last_bn_scale, last_bn_center,
                 dtype)


def predictor(hidden_dims: Sequence[int] = (4096,), out_dim: int = 256, *, use_bn: bool = True,
              dtype: Any = jnp.float32) -> MLPHead:
  """BYOL / SimSiam predictor q(.): Linear-BN-ReLU-Linear, no output BN."""
  return MLPHead(tuple(hidden_dims), out_dim, use_bn, last_bn=False, dtype=dtype)
