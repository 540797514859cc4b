"""ResNet encoders returning a dict of named features.

Architecture: He et al. 2016, "Deep Residual Learning for Image Recognition"
(Table 1: ResNet-18/34 basic blocks, ResNet-50 bottleneck blocks, projection
shortcuts = option B). The stride-2 of a bottleneck sits on its 3x3 conv ("ResNet
v1.5", as in torchvision `models/resnet.py`); convs use symmetric k//2 padding as
in torchvision, so weights port one-to-one.

Stems:
  'imagenet': 7x7/2 conv + 3x3/2 max-pool (He et al. 2016, Table 1).
  'cifar': 3x3/1 conv and no max-pool, for 32x32 inputs: SimCLR (Chen et al. 2020,
    appendix B.9) and solo-learn (`solo/methods/base.py`, which swaps the stem of
    the torchvision model for a 3x3 conv and an identity max-pool).

Initialisation: convs He-normal with fan_out (torchvision); the last BatchNorm scale
of each residual branch starts at zero (`zero_init_residual`, Goyal et al. 2017,
"Accurate, Large Minibatch SGD", sec. 5.1; used by SimCLR and BYOL), so each block
starts as the identity.

BatchNorm takes no `axis_name`: the train step is one `jax.jit` over globally
sharded arrays, so the batch mean/variance already span the global batch and
1 device == 8 devices numerically (DESIGN.md convention 5).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from jssl import precision
from jssl.models.conv import Conv

BN_MOMENTUM = 0.9  # running = 0.9 * running + 0.1 * batch (torch momentum 0.1)
BN_EPS = 1e-5  # torchvision / He et al. value
# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), untruncated.
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class _Layers(nn.Module):
  """Shared conv / norm factories so every block agrees on dtype and impl."""
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  def conv(self, features, kernel, strides=1, name=None):
    pad = kernel // 2
    return Conv(features, (kernel, kernel), (strides, strides), ((pad, pad), (pad, pad)),
                use_bias=False, dtype=self.dtype, param_dtype=precision.PARAM_DTYPE,
                kernel_init=CONV_INIT, conv_impl=self.conv_impl, name=name)

  def norm(self, train, zero_init=False, name=None):
    # Statistics, running averages and the normalisation in float32, output in
    # the compute dtype (jssl.precision, point 3).
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                        dtype=self.dtype, param_dtype=precision.PARAM_DTYPE,
                        force_float32_reductions=True,
                        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
                        name=name)


class BasicBlock(_Layers):
  """Two 3x3 convs + identity / 1x1-projection shortcut (He et al. 2016, Fig. 2)."""
  features: int = 64
  strides: int = 1
  zero_init_residual: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool):
    y = self.conv(self.features, 3, self.strides, name="conv1")(x)
    y = nn.relu(self.norm(train, name="bn1")(y))
    y = self.conv(self.features, 3, name="conv2")(y)
    y = self.norm(train, self.zero_init_residual, name="bn2")(y)
    if x.shape != y.shape:
      x = self.conv(self.features, 1, self.strides, name="proj_conv")(x)
      x = self.norm(train, name="proj_bn")(x)
    return nn.relu(x + y)


class BottleneckBlock(_Layers):
  """1x1 reduce, 3x3 (strided), 1x1 expand x4 (He et al. 2016, Fig. 5 right)."""
  features: int = 64
  strides: int = 1
  zero_init_residual: bool = True
  expansion: int = 4

  @nn.compact
  def __call__(self, x, *, train: bool):
    y = self.conv(self.features, 1, name="conv1")(x)
    y = nn.relu(self.norm(train, name="bn1")(y))
    y = self.conv(self.features, 3, self.strides, name="conv2")(y)
    y = nn.relu(self.norm(train, name="bn2")(y))
    y = self.conv(self.features * self.expansion, 1, name="conv3")(y)
    y = self.norm(train, self.zero_init_residual, name="bn3")(y)
    if x.shape != y.shape:
      x = self.conv(self.features * self.expansion, 1, self.strides, name="proj_conv")(x)
      x = self.norm(train, name="proj_bn")(x)
    return nn.relu(x + y)


class ResNet(_Layers):
  """ResNet trunk (no classifier).

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: 'basic' or 'bottleneck'.
    width: channels of the stem and the first stage (64 in He et al.); stage s
      has width * 2**s channels (x4 at the output of bottleneck blocks).
    stem: 'cifar' or 'imagenet'.
    zero_init_residual: zero-init the last BN scale of every residual branch.
    dtype: compute dtype (e.g. jnp.bfloat16 on accelerators); params and batch
      statistics stay float32, BN normalises in float32 (`jssl.precision`).
    conv_impl: 'auto' | 'xla' | 'matmul' (see `jssl.models.conv`).

  Call: `apply(variables, x, train=bool, mutable=['batch_stats'] if train)`, x
  `[B, H, W, C]`. Returns a dict: 'pre_logits' `[B, D]` float32 (global average
  pool of the last stage), 'feature_map' `[B, h, w, D]` and 'stage1'..'stageN'
  (each stage's output map), maps in the compute dtype.
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  width: int = 64
  stem: str = "cifar"
  zero_init_residual: bool = True

  @property
  def feature_dim(self) -> int:
    expansion = 4 if self.block == "bottleneck" else 1
    return self.width * 2 ** (len(self.stage_sizes) - 1) * expansion

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    if x.ndim != 4:
      raise ValueError(f"ResNet expects x [B, H, W, C], got shape {x.shape}")
    if self.block not in ("basic", "bottleneck"):
      raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
    block_cls = BasicBlock if self.block == "basic" else BottleneckBlock
    x = x.astype(self.dtype)
    if self.stem == "cifar":
      x = self.conv(self.width, 3, 1, name="stem_conv")(x)
      x = nn.relu(self.norm(train, name="stem_bn")(x))
    elif self.stem == "imagenet":
      x = self.conv(self.width, 7, 2, name="stem_conv")(x)
      x = nn.relu(self.norm(train, name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    else:
      raise ValueError(f"stem must be 'cifar' or 'imagenet', got {self.stem!r}")
    out = {}
    for s, n_blocks in enumerate(self.stage_sizes):
      for b in range(n_blocks):
        strides = 2 if (s > 0 and b == 0) else 1
        x = block_cls(dtype=self.dtype, conv_impl=self.conv_impl, features=self.width * 2 ** s,
                      strides=strides, zero_init_residual=self.zero_init_residual,
                      name=f"stage{s + 1}_block{b + 1}")(x, train=train)
      out[f"stage{s + 1}"] = x
    out["feature_map"] = x
    # Pool in float32: the mean over h*w pixels loses bits in bfloat16.
    out["pre_logits"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return out


_VARIANTS = {
    # name: (stage_sizes, block, width)
    "resnet18": ((2, 2, 2, 2), "basic", 64),
    "resnet34": ((3, 4, 6, 3), "basic", 64),
    "resnet50": ((3, 4, 6, 3), "bottleneck", 64),
    # ResNet-10-like, width 32: learns 16-32 px digits in minutes on 2 CPU cores.
    "resnet_small": ((1, 1, 1, 1), "basic", 32),
    # Test-only: 2 stages of 1 basic block, width 8.
    "resnet_tiny": ((1, 1), "basic", 8),
}
VARIANTS = tuple(_VARIANTS)


def resnet(name: str, *, stem: str = "cifar", width_multiplier: float = 1.0,
           dtype: Any = jnp.float32, conv_impl: str = "auto",
           zero_init_residual: bool = True) -> ResNet:
  """Builds a named ResNet variant (see `VARIANTS`)."""
  if name not in _VARIANTS:
    raise ValueError(f"unknown ResNet {name!r}; available: {', '.join(VARIANTS)}")
  stage_sizes, block, width = _VARIANTS[name]
  return ResNet(stage_sizes=stage_sizes, block=block, width=int(round(width * width_multiplier)),
                stem=stem, zero_init_residual=zero_init_residual, dtype=dtype,
                conv_impl=conv_impl)
