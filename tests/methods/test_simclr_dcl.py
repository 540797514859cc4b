"""SimCLR's loss options: DCL / DCLW (Yeh et al. 2022) via config.loss.name."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods, models
from jssl.methods.common import EncoderProjector
from jssl_testing import load_config
import methods_testing as mt

B = 8


def _config(name, **loss):
  c = load_config("configs/simclr.py:smoke")
  c.loss.update(name=name, **loss)
  return c


_INIT = {}


def _setup(config):
  """(method, views, params, state); the init (the same for every loss
  option) is compiled once: XLA compiles dominate on CPU."""
  method = methods.make(config)
  if not _INIT:
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    views = tuple(jax.random.normal(k, (B, 16, 16, 3)) for k in (k1, k2))
    _INIT["smoke"] = (views, *jax.jit(method.init)(k3, views))
  return (method, *_INIT["smoke"])


def test_default_loss_is_ntxent_and_presets_keep_their_values():
  for preset, t in (("quickstart", 0.2), ("cifar10", 0.2), ("imagenet", 0.1),
                    ("smoke", 0.2)):
    c = load_config(f"configs/simclr.py:{preset}")
    assert c.loss.name == "ntxent" and c.loss.temperature == t
    assert c.loss.sigma == 0.5


def test_dclw_one_device_equals_eight_and_trains():
  config = _config("dclw", sigma=0.5)
  batches = mt.digit_batches(config, 3)
  (_, h1), _ = mt.assert_one_device_equals_eight(config, batches)


@pytest.mark.parametrize("name", ["ntxent", "dcl", "dclw"])
def test_loss_option_is_the_named_loss_and_one_step_lowers_it(name):
  config = _config(name, sigma=0.3)
  method, views, params, state = _setup(config)

  def f(p):
    return method.loss(p, state, views, {}, jax.random.key(0), 0)[0]

  value_and_grad = jax.jit(jax.value_and_grad(f))
  value, grads = value_and_grad(params)
  net = EncoderProjector(models.make_encoder(config.model),
                         models.make_projector(config.projector))
  # By hand (jitted: eager ResNet ops are slow on a busy CPU).
  z = jax.jit(lambda v, x: net.apply(v, x, train=True,
                                     mutable=["batch_stats"])[0][1])(
                                         {"params": params, **state},
                                         jnp.concatenate(views))
  t = config.loss.temperature
  ref = {"ntxent": lambda: losses.ntxent(z[:B], z[B:], temperature=t),
         "dcl": lambda: losses.dcl(z[:B], z[B:], temperature=t),
         "dclw": lambda: losses.dclw(z[:B], z[B:], temperature=t, sigma=0.3),
         }[name]()
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  stepped = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
  assert float(value_and_grad(stepped)[0]) < float(value)


def test_unknown_loss_name_raises():
  with pytest.raises(ValueError, match="config.loss.name='infonce'.*ntxent, dcl, dclw"):
    methods.make(_config("infonce"))
