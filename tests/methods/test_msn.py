"""MSN / PMSN: masked-anchor wiring, target / prototype gradients, EMA, 1 == 8
devices, PMSN vs MSN, config errors."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jssl_testing import load_config
import methods_testing as mt

from jssl import errors, losses, methods, models, schedules
from jssl.data import device_views
from jssl.methods import msn

LENGTH = methods.TrainLength(total_steps=10, steps_per_epoch=2.0)
KEY = jax.random.key(2)


def _config(**loss):
  c = load_config("configs/msn.py:smoke")
  c.batch_size = 16
  c.loss.update(**loss)
  return c


@functools.lru_cache(maxsize=None)
def _setup(pmsn_exponent=0.0):
  """(config, method, views, params, state, jitted loss-and-grads) on one batch."""
  c = _config(pmsn_exponent=pmsn_exponent)
  method = methods.make(c, LENGTH)
  batch = mt.digit_batches(c, 1)[0]
  views = jax.jit(device_views.make_view_fn(c.views, c.views.num_views))(
      jax.random.key(0), batch)
  params, state = jax.jit(method.init)(jax.random.key(1), views)

  def f(params, state, step):
    return method.loss(params, state, views, None, KEY, step)
  fn = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))
  return c, method, views, params, state, fn


def test_one_device_equals_eight_and_one_step_lowers_the_loss():
  c = _config()
  # Without BN in the head: BN cancels any constant shift of its input, so the
  # encoder's final LayerNorm bias gets a zero gradient, and AdamW turns its
  # float noise (reduction order differs by mesh) into +-lr steps.
  c.projector.use_bn = False
  c.diagnostics.enabled = False   # method-independent, tested with the step
  (s1, _), _ = mt.assert_one_device_equals_eight(c, mt.digit_batches(c, 3))
  assert set(s1.method_state) == {"batch_stats", "target"}
  assert set(s1.method_state["target"]["params"]) == {"encoder", "projector"}


def test_loss_is_msn_of_masked_anchors_focal_crops_and_unmasked_target():
  """The loss by hand: anchors = the online net on view 1 with the step's mask
  (floor(N (1 - r)) tokens kept) then the focal crops, view-major; targets =
  the target net on the unmasked view 0; the params' prototypes."""
  c, method, views, params, state, fn = _setup()
  (value, (_, metrics)), _ = fn(params, state, 0)
  net = msn.MSNNet(encoder=models.make_encoder(c.model),
                   projector=models.make_projector(c.projector))
  n = (views[1].shape[1] // 4) ** 2
  keep = msn.random_keep(KEY, views[1], n, c.loss.mask_ratio)
  assert keep.shape == (16, msn.num_keep(n, c.loss.mask_ratio)) == (16, 13)
  assert all(len(set(row)) == 13 for row in np.asarray(keep).tolist())
  online = {"params": {k: params[k] for k in ("encoder", "projector")},
            "batch_stats": state["batch_stats"]}
  (_, z_a), _ = net.apply(online, [views[1], jnp.concatenate(views[2:])], keep,
                          train=True, mutable=["batch_stats"])
  (h_t, z_t), _ = net.apply(state["target"], [views[0]], None, train=True,
                            mutable=["batch_stats"])
  assert z_a.shape == (3 * 16, c.projector.out_dim)
  want, terms = losses.msn(z_a, z_t, params["prototypes"])
  np.testing.assert_allclose(value, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["ce"], terms.ce, rtol=1e-5)
  # The probe / eval features are the target encoder's, of the unmasked view.
  np.testing.assert_allclose(metrics["probe_features"], h_t, rtol=1e-5, atol=1e-6)
  # Another mask gives another loss: the anchor really is masked.
  keep2 = msn.random_keep(jax.random.key(7), views[1], n, c.loss.mask_ratio)
  (_, z_a2), _ = net.apply(online, [views[1], jnp.concatenate(views[2:])], keep2,
                           train=True, mutable=["batch_stats"])
  assert abs(float(losses.msn(z_a2, z_t, params["prototypes"])[0]) - float(want)) > 1e-6


def test_no_gradient_into_target_and_ema_update():
  c, method, views, params, state, fn = _setup()
  (_, (new_state, _)), (g_params, g_state) = fn(params, state, 3)
  for leaf in jax.tree.leaves(g_state):
    np.testing.assert_array_equal(leaf, 0.0)
  assert np.any(np.asarray(g_params["prototypes"]) != 0)
  assert np.any(np.asarray(g_params["encoder"]["patch_embed"]["kernel"]) != 0)
  # The loss leaves the target's parameters alone; update_state applies the
  # EMA rule (cosine momentum) to encoder and head, never to the prototypes.
  jax.tree.map(np.testing.assert_array_equal, new_state["target"]["params"],
               state["target"]["params"])
  online = jax.tree.map(lambda p: p + 0.5, params)
  out = method.update_state(online, new_state, 3)
  m = float(schedules.cosine_between(c.ema.base_momentum, 1.0, LENGTH.total_steps)(3))
  assert 0.99 <= m < 1.0
  jax.tree.map(lambda t, t0, s: np.testing.assert_allclose(t, m * t0 + (1 - m) * s,
                                                            rtol=1e-6, atol=1e-7),
               out["target"]["params"], new_state["target"]["params"],
               {k: online[k] for k in ("encoder", "projector")})
  # Evaluation / export: the target encoder.
  got = method.encoder_variables(params, out)
  jax.tree.map(np.testing.assert_array_equal, got["params"],
               out["target"]["params"]["encoder"])


def test_pmsn_differs_from_msn_only_by_the_regulariser():
  *_, params, state, fn = _setup(0.0)
  c, _, views, _, _, fn_p = _setup(0.25)
  (v_msn, (_, m_msn)), _ = fn(params, state, 0)
  (v_pmsn, (_, m_pmsn)), _ = fn_p(params, state, 0)
  np.testing.assert_allclose(m_pmsn["ce"], m_msn["ce"], rtol=1e-6)
  w = c.loss.me_max_weight
  np.testing.assert_allclose(v_msn, m_msn["ce"] + w * m_msn["regularizer"], rtol=1e-6)
  np.testing.assert_allclose(v_pmsn, m_pmsn["ce"] + w * m_pmsn["regularizer"], rtol=1e-6)
  assert abs(float(m_pmsn["regularizer"]) - float(m_msn["regularizer"])) > 1e-4


def _vit_model(**kw):
  return ml_collections.ConfigDict(dict(dict(name="vit_test", patch_size=4,
                                             pos_embed="sincos"), **kw))


@pytest.mark.parametrize("field,value,match", [
    ("loss.mask_ratio", 0.95, "config.loss.mask_ratio=0.95 must leave"),
    ("loss.mask_ratio", 1.0, "config.loss.mask_ratio=1.0"),
    ("loss.num_prototypes", 1, "config.loss.num_prototypes=1 must be >= 2"),
    ("loss.pmsn_exponent", -0.5, "config.loss.pmsn_exponent"),
    ("loss.temperature", 0.0, "config.loss.temperature"),
    ("views.num_views", 3, "config.views.num_views=3"),
    ("model", ml_collections.ConfigDict(dict(name="resnet_tiny", stem="cifar")),
     "config.model.name='resnet_tiny' is not a ViT"),
    ("model", _vit_model(pos_embed="learned"), "pos_embed='sincos'"),
    ("model", ml_collections.ConfigDict(dict(name="vit_test", patch_size=3)),
     "image_size=16 is not divisible"),
])
def test_config_errors_name_the_field(field, value, match):
  c = _config()
  node, *path = field.split(".")
  if path:
    c[node][path[0]] = value
  else:
    c[node] = value
  with pytest.raises(errors.ConfigError, match=match):
    methods.make(c, LENGTH)
