"""SupCon: sharding (labels sharded like the images), labels define the
positives, the missing-label error, one SGD step and config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods, models
from jssl.methods.common import EncoderProjector
from jssl_testing import load_config
import methods_testing as mt

B = 8


_CACHE = {}


def _setup():
  """(config, method, views, params, state, jitted loss) of the smoke preset
  on fixed random views, built once: XLA compiles dominate on CPU."""
  if not _CACHE:
    config = load_config("configs/supcon.py:smoke")
    method = methods.make(config)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    views = tuple(jax.random.normal(k, (B, 16, 16, 3)) for k in (k1, k2))
    params, state = jax.jit(method.init)(k3, views)
    _CACHE["smoke"] = (config, method, views, params, state,
                       jax.jit(method.loss))
  return _CACHE["smoke"]


def test_one_device_equals_eight_and_trains():
  config = load_config("configs/supcon.py:smoke")
  batches = mt.digit_batches(config, 3)
  assert len(set(batches[0]["label"].tolist())) < config.batch_size  # shared classes
  (_, h1), _ = mt.assert_one_device_equals_eight(config, batches)


def test_labels_define_the_positives():
  config, _, views, params, state, loss = _setup()
  net = EncoderProjector(models.make_encoder(config.model),
                         models.make_projector(config.projector))
  # By hand (jitted: eager ResNet ops are slow on a busy CPU).
  z = jax.jit(lambda v, x: net.apply(v, x, train=True,
                                     mutable=["batch_stats"])[0][1])(
                                         {"params": params, **state},
                                         jnp.concatenate(views))
  t = config.loss.temperature
  # Every image its own class: only the other view is a positive, which is
  # SimCLR's NT-Xent (T == T_base in the smoke preset).
  unique = {"label": jnp.arange(B, dtype=jnp.int32)}
  value, _ = loss(params, state, views, unique, jax.random.key(0), 0)
  np.testing.assert_allclose(value, losses.ntxent(z[:B], z[B:], temperature=t),
                             rtol=1e-5)
  # Shared classes: the paper's L_out with the class mask.
  labels = jnp.array([0, 1, 0, 1, 2, 2, 3, 0], jnp.int32)
  value, _ = loss(params, state, views, {"label": labels}, jax.random.key(0), 0)
  ref = losses.supcon(jnp.stack([z[:B], z[B:]], 1), labels, temperature=t,
                      base_temperature=config.loss.base_temperature)
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  assert abs(float(value) - float(losses.ntxent(z[:B], z[B:],
                                                 temperature=t))) > 1e-3


def test_missing_or_misshapen_labels_raise_a_clear_error():
  _, method, views, params, state, _ = _setup()
  with pytest.raises(ValueError, match=r"needs integer class labels under 'label'"):
    method.loss(params, state, views, {"image": None}, jax.random.key(0), 0)
  with pytest.raises(ValueError, match=r"must have shape \[B\]"):
    method.loss(params, state, views, {"label": jnp.zeros((B, 2), jnp.int32)},
                jax.random.key(0), 0)


def test_one_sgd_step_lowers_the_loss_on_fixed_views():
  _, method, views, params, state, loss = _setup()
  batch = {"label": jnp.array([0, 1, 0, 1, 2, 2, 3, 0], jnp.int32)}

  def f(p):
    return method.loss(p, state, views, batch, jax.random.key(0), 0)[0]

  value, grads = jax.jit(jax.value_and_grad(f))(params)
  stepped = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
  after = loss(stepped, state, views, batch, jax.random.key(0), 0)[0]
  assert float(after) < float(value)


def test_bad_configs_fail_in_make():
  c = load_config("configs/supcon.py:smoke")
  c.views.num_views = 1
  with pytest.raises(ValueError, match=">= 2 views"):
    methods.make(c)
  c = load_config("configs/supcon.py:smoke")
  c.loss.temperature = 0.0
  with pytest.raises(ValueError, match="temperatures must be > 0"):
    methods.make(c)
