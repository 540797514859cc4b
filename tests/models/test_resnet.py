"""jssl.models: ResNet shapes, parameter counts, BatchNorm modes, sharding."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jssl import models


def _shapes(cfg, hw=16, b=2):
  """Output and parameter shapes without computing anything (jax.eval_shape)."""
  model = models.make_encoder(cfg)
  x = jax.ShapeDtypeStruct((b, hw, hw, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  return variables, out


@pytest.mark.parametrize("name,stem,d,stage_hw", [
    ("resnet_tiny", "cifar", 16, [16, 8]),
    ("resnet_small", "cifar", 256, [16, 8, 4, 2]),
    ("resnet18", "cifar", 512, [16, 8, 4, 2]),
    ("resnet18", "imagenet", 512, [4, 2, 1, 1]),
    ("resnet34", "cifar", 512, [16, 8, 4, 2]),
    ("resnet50", "imagenet", 2048, [4, 2, 1, 1]),
])
def test_feature_dict_shapes(name, stem, d, stage_hw):
  cfg = {"name": name, "stem": stem}
  _, out = _shapes(cfg)
  n = len(stage_hw)
  assert set(out) == {"pre_logits", "feature_map"} | {f"stage{i + 1}" for i in range(n)}
  assert out["pre_logits"].shape == (2, d)
  assert out["feature_map"].shape == (2, stage_hw[-1], stage_hw[-1], d)
  for i, hw in enumerate(stage_hw):
    assert out[f"stage{i + 1}"].shape[:3] == (2, hw, hw)
  assert models.feature_dim(cfg) == d


def test_param_counts_match_torchvision():
  # Hand-checked: torchvision resnet18 has 11,689,512 params incl. fc (512*1000 + 1000);
  # resnet50 has 25,557,032 incl. fc (2048*1000 + 1000). Counts include BN scale/bias.
  count = lambda v: sum(x.size for x in jax.tree.leaves(v["params"]))  # noqa: E731
  v18, _ = _shapes({"name": "resnet18", "stem": "imagenet"}, hw=32)
  v50, _ = _shapes({"name": "resnet50", "stem": "imagenet"}, hw=32)
  assert count(v18) == 11_689_512 - 513_000 == 11_176_512
  assert count(v50) == 25_557_032 - 2_049_000 == 23_508_032
  # The CIFAR stem swaps the 7x7x3x64 kernel for a 3x3x3x64 one.
  v18c, _ = _shapes({"name": "resnet18", "stem": "cifar"}, hw=32)
  assert count(v18) - count(v18c) == (49 - 9) * 3 * 64


def test_width_multiplier_and_bfloat16():
  cfg = ml_collections.ConfigDict(
      {"name": "resnet_tiny", "width_multiplier": 2.0, "dtype": "bfloat16"})
  variables, out = _shapes(cfg)
  assert models.feature_dim(cfg) == 32 and out["pre_logits"].shape == (2, 32)
  assert out["pre_logits"].dtype == jnp.float32  # pooled in float32
  assert out["feature_map"].dtype == jnp.bfloat16
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


def test_bad_config_raises():
  with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
    models.make_encoder({"name": "resnet101"})
  with pytest.raises(ValueError, match="unknown encoder config keys"):
    models.make_encoder({"name": "resnet18", "widht_multiplier": 2})
  with pytest.raises(ValueError, match="stem"):
    _shapes({"name": "resnet_tiny", "stem": "tiny"})


@functools.cache
def _tiny_init(zero_init_residual=True):
  model = models.make_encoder({"name": "resnet_tiny", "zero_init_residual": zero_init_residual})
  x = jax.random.normal(jax.random.key(1), (8, 8, 8, 3))
  return jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x), x


def _tiny(conv_impl="auto", zero_init_residual=True):
  # conv_impl does not change the parameters, so one init serves every impl (compiles once).
  variables, x = _tiny_init(zero_init_residual)
  model = models.make_encoder({"name": "resnet_tiny", "conv_impl": conv_impl,
                               "zero_init_residual": zero_init_residual})
  return model, variables, x


def test_batchnorm_train_vs_eval():
  model, variables, x = _tiny()
  train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
  evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
  other = x.at[4:].set(2.0 * x[4:] + 1.0)  # same first half, different second half
  out, new = train(variables, x)
  # Train mode: batch statistics; running averages move by (1 - 0.9) toward them.
  mean0 = variables["batch_stats"]["stem_bn"]["mean"]
  mean1 = new["batch_stats"]["stem_bn"]["mean"]
  assert np.all(mean0 == 0) and np.abs(mean1).max() > 0
  out_other, _ = train(variables, other)
  assert not np.allclose(out["pre_logits"][:4], out_other["pre_logits"][:4])
  # Eval mode: running averages, so an example's features do not depend on its batch.
  ev, ev_other = evaluate(variables, x), evaluate(variables, other)
  np.testing.assert_allclose(ev["pre_logits"][:4], ev_other["pre_logits"][:4], rtol=1e-6)
  assert not np.allclose(ev["pre_logits"], out["pre_logits"])


def test_zero_init_residual():
  _, v, _ = _tiny()
  assert np.all(v["params"]["stage1_block1"]["bn2"]["scale"] == 0)
  assert np.all(v["params"]["stage1_block1"]["bn1"]["scale"] == 1)
  _, v, _ = _tiny(zero_init_residual=False)  # cached, reused by the gradient tests
  assert np.all(v["params"]["stage1_block1"]["bn2"]["scale"] == 1)


@functools.cache
def _loss_and_grads(model):
  def loss(params, stats, x):
    out, new = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                           mutable=["batch_stats"])
    return jnp.mean(jnp.sin(out["pre_logits"])), new
  return jax.jit(jax.value_and_grad(loss, has_aux=True))


@functools.cache
def _tiny_grads(conv_impl):
  model, v, x = _tiny(conv_impl, zero_init_residual=False)
  x = jnp.concatenate([x, x[::-1] * 0.5])  # 16 examples, 2 per device when sharded
  return _loss_and_grads(model)(v["params"], v["batch_stats"], x)


def test_matmul_conv_grads_equal_xla_in_resnet():
  for a, b in zip(jax.tree.leaves(_tiny_grads("xla")), jax.tree.leaves(_tiny_grads("matmul"))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sharded_equals_single_device():
  """BN statistics span the global batch under jit: 8 devices == 1 device."""
  model, v, x = _tiny("matmul", zero_init_residual=False)
  x = jnp.concatenate([x, x[::-1] * 0.5])
  mesh = Mesh(np.array(jax.devices()), ("data",))
  # Batch on 'data'; params and BN stats replicated.
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  vs = jax.device_put(v, NamedSharding(mesh, P()))
  sharded = _loss_and_grads(model)(vs["params"], vs["batch_stats"], xs)
  assert len(xs.sharding.device_set) == 8
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(_tiny_grads("matmul"))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
