"""The DINO projection head: MLP -> L2-normalise -> weight-normalised linear.

Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers", Sec. 3.1 and App. C ("a 3-layer MLP with hidden dimension 2048
followed by l2 normalization and a weight normalized fully connected layer with
K dimensions"); facebookresearch/dino `vision_transformer.py::DINOHead`:

  h [B, D] -> Linear(D, 2048) [-BN] -> GELU -> Linear(2048, 2048) [-BN] -> GELU
           -> Linear(2048, 256)                    (bottleneck, no activation)
           -> x / max(||x||, 1e-12)                (F.normalize)
           -> x @ (g * v / ||v||)                  [B, K], K = 65536 on ImageNet

The last layer is `torch.nn.utils.weight_norm(Linear(256, K, bias=False))` with
the gain g filled with 1. With `norm_last_layer=True` (DINO's default) g is
frozen at 1, so every output unit is a unit-norm direction ("prototype") and,
the input being unit-norm too, every logit is a cosine in [-1, 1]. With
`norm_last_layer=False` g is trained; it keeps torch's [K, 1] shape as
`scale` [1, K], a 2-D parameter, so the weight decay reaches it as in DINO
(`get_params_groups` decays every parameter of rank > 1).

Initialisation as DINOHead: MLP kernels truncated normal (std 0.02), biases
zero; the last layer's directions v keep torch's default Linear init,
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (the head's `_init_weights` runs before the
last layer exists). GELU is the exact (erf) form of `torch.nn.GELU`. The MLP
Linears keep their bias even when followed by BN, as in DINOHead.

Precision (`jssl.precision`): the MLP computes in `dtype`; the L2
normalisation and the last layer run in float32 whatever `dtype` (the last
layer's cosines are divided by temperatures of 0.04-0.1 before a K-way
softmax; it is < 1% of a ViT-S/16's FLOPs at K = 65536). Parameters and BN
statistics are float32.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import linen as nn

from jssl import precision

BN_MOMENTUM = 0.9   # torch BatchNorm1d momentum 0.1
BN_EPS = 1e-5
# Parameter path prefix of the last layer inside the head (for freezing it).
LAST_LAYER = "last_layer"

_KEYS = ("out_dim", "hidden_dim", "bottleneck_dim", "num_layers", "use_bn",
         "norm_last_layer", "dtype")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
           "float16": jnp.float16}


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """`x / max(||x||, eps)` over the last axis (torch `F.normalize`)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


class WeightNormDense(nn.Module):
  """`y = x @ (g * v / ||v||)` without bias; norms per output unit.

  Attributes:
    features: K, output width.
    learn_scale: train the gain g (`scale` [1, K], init 1); False freezes it
      at 1 (DINO `norm_last_layer=True`: then g is not a parameter at all).
    dtype: compute dtype of the matmul (float32 in `DINOHead`, by policy).

  Params: `kernel` [D, K] (the directions v, one column per output unit) and,
  with `learn_scale`, `scale` [1, K].
  """
  features: int
  learn_scale: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # torch Linear default init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
    v = self.param("kernel", nn.initializers.variance_scaling(
        1.0 / 3.0, "fan_in", "uniform"), (x.shape[-1], self.features),
                   precision.PARAM_DTYPE)
    # Normalise in float32: the norm of 256 small numbers is the only place a
    # low-precision compute dtype could hurt. No epsilon, as torch's
    # weight_norm (a zero column cannot arise from the init or the updates).
    w = v * jax.lax.rsqrt(jnp.sum(jnp.square(v), axis=0, keepdims=True))
    if self.learn_scale:
      w = w * self.param("scale", nn.initializers.ones, (1, self.features),
                         precision.PARAM_DTYPE)
    return jnp.dot(x.astype(self.dtype), w.astype(self.dtype))


class DINOHead(nn.Module):
  """DINO head (see module docstring).

  Attributes:
    out_dim: K, number of output units (65536 on ImageNet).
    hidden_dim: width of the hidden MLP layers (2048).
    bottleneck_dim: width before the L2 normalisation (256).
    num_layers: Linear layers of the MLP (3); 1 gives one Linear D -> bottleneck.
    use_bn: BatchNorm after every hidden Linear (`use_bn_in_head`; DINO's
      default is False, set it for convnets if wanted).
    norm_last_layer: freeze the last layer's gain at 1 (DINO default True).
    dtype: compute dtype of the MLP; the normalisation and the last layer
      run in float32 and the output is float32 (`jssl.precision`).

  Call: `__call__(h [B, D], *, train) -> [B, K]` float32; with BN and `train=True` pass
  `mutable=['batch_stats']`.
  """
  out_dim: int = 65536
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  num_layers: int = 3
  use_bn: bool = False
  norm_last_layer: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, *, train: bool) -> jax.Array:
    if h.ndim != 2:
      raise ValueError(f"DINOHead expects h [B, D], got shape {h.shape}")
    dense = lambda width, name: nn.Dense(  # noqa: E731
        width, dtype=self.dtype, param_dtype=precision.PARAM_DTYPE, name=name,
        kernel_init=nn.initializers.truncated_normal(stddev=0.02),
        bias_init=nn.initializers.zeros)
    x = h
    num_layers = max(int(self.num_layers), 1)
    for i in range(num_layers - 1):
      x = dense(self.hidden_dim, f"linear{i + 1}")(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                         epsilon=BN_EPS, dtype=self.dtype,
                         param_dtype=precision.PARAM_DTYPE,
                         force_float32_reductions=True, name=f"bn{i + 1}")(x)
      x = nn.gelu(x, approximate=False)
    x = dense(self.bottleneck_dim, f"linear{num_layers}")(x)
    # Unit-norm bottleneck: with unit-norm directions below, logits are
    # cosines, which bounds them and keeps the 65536-way softmax stable.
    x = l2_normalize(x.astype(precision.LOSS_DTYPE))
    return WeightNormDense(self.out_dim, learn_scale=not self.norm_last_layer,
                           dtype=precision.LOSS_DTYPE, name=LAST_LAYER)(x)


def make_dino_head(cfg: Mapping[str, Any]) -> DINOHead:
  """Builds a `DINOHead` from `out_dim`, `hidden_dim`, `bottleneck_dim`,
  `num_layers`, `use_bn`, `norm_last_layer`, `dtype`; unknown keys raise."""
  d = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
  unknown = sorted(set(d) - set(_KEYS))
  if unknown:
    raise ValueError(f"unknown DINO head config keys {unknown}; allowed: "
                     f"{list(_KEYS)}")
  dtype = d.pop("dtype", None) or "float32"
  if isinstance(dtype, str):
    if dtype not in _DTYPES:
      raise ValueError(f"head dtype must be one of {list(_DTYPES)}, got "
                       f"{dtype!r}")
    dtype = _DTYPES[dtype]
  return DINOHead(dtype=dtype, **d)
