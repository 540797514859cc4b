"""iBOT / DINOv2: loss wiring against the loss functions, teacher without gradient,
unmasked local crops, 1 == 8 devices (DINOv2 options), config errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jssl_testing import load_config, set_fields
import methods_testing as mt

from jssl import losses, masks, methods
from jssl.data import device_views
from jssl.methods import ibot

LENGTH = methods.TrainLength(total_steps=10, steps_per_epoch=2.0)
STEP = 5
# Weights other than 1 / 0, so a term's wiring shows in the total.
WEIGHTS = {"loss.ibot_weight": 0.7, "loss.koleo_weight": 0.3}


def _config(batch=16, **fields):
  c = load_config("configs/ibot.py:smoke")
  c.batch_size = batch
  return set_fields(c, **{**WEIGHTS, **fields})


def _setup():
  """(config, method, views, params, method_state, jitted value_and_grad)."""
  c = _config()
  method = methods.make(c, LENGTH)
  batch = mt.digit_batches(c, 1)[0]
  views = jax.jit(device_views.make_view_fn(c.views, 2))(jax.random.key(0), batch)
  params, state = jax.jit(method.init)(jax.random.key(1), views)
  # Non-zero centers, so that using (and updating) them shows.
  state = dict(state, center=jnp.linspace(-0.1, 0.1, c.head.out_dim),
               patch_center=jnp.linspace(0.2, -0.2, c.head.out_dim))

  def f(p, s):
    return method.loss(p, s, views, None, jax.random.key(2), STEP)
  return c, method, views, params, state, jax.jit(jax.value_and_grad(
      f, argnums=(0, 1), has_aux=True))


@pytest.fixture(scope="module", name="setup")
def _setup_fixture():
  return _setup()


def _net(c, drop_path=True):
  from jssl import models, precision  # pylint: disable=import-outside-toplevel
  from jssl.models import dino_head  # pylint: disable=import-outside-toplevel
  enc = models.make_encoder(c.model).clone(use_mask_token=True)
  if not drop_path:
    enc = enc.clone(drop_path_rate=0.0)
  head_cfg = precision.head_config(c.head, c)
  return ibot.IBOTNet(enc, dino_head.make_dino_head(head_cfg),
                      None if c.loss.shared_head else dino_head.make_dino_head(head_cfg))


def _outputs_by_hand(c, params, state, views):
  """The block mask of the step key and the student / teacher outputs on EVERY token."""
  b = views[0].shape[0]
  k_mask, k_drop = jax.random.split(jax.random.key(2))
  mask = masks.blockwise(k_mask, 2 * b, (4, 4), mask_ratio_range=(0.1, 0.5),
                         mask_probability=0.5)
  groups = [jnp.concatenate(views[:2]), jnp.concatenate(views[2:])]
  (h, s_cls, s_tok), _ = _net(c).apply({"params": params}, groups, mask, train=True,
                                       mutable=["batch_stats"], rngs={"dropout": k_drop})
  (_, t_cls, t_tok), _ = _net(c, drop_path=False).apply(
      {"params": state["teacher"]["params"]}, groups[:1], None, train=True,
      mutable=["batch_stats"])
  return mask, h, s_cls, s_tok, t_cls, t_tok


def test_loss_is_dino_plus_weighted_ibot_plus_koleo(setup):
  """The method's loss equals the loss functions applied, by hand, to the networks'
  outputs: every token through the head and the gathered-form `ibot_patch` (so the
  static token budget is checked too), `dino` on all crops vs the teacher globals,
  KoLeo on each global crop's student CLS."""
  c, _, views, params, state, fn = setup
  (value, (new_state, metrics)), _ = fn(params, state)
  b = views[0].shape[0]
  m, h, s_cls, s_tok, t_cls, t_tok = jax.device_get(jax.jit(
      functools.partial(_outputs_by_hand, c))(params, state, views))
  assert 0 < m.any(1).sum() <= b   # at most half the 2B global crops masked
  tau, k = c.loss.teacher_temp, c.head.out_dim
  want_dino, want_c = losses.dino(s_cls.reshape(4, b, k), t_cls.reshape(2, b, k),
                                  state["center"], teacher_temp=tau)
  want_ibot, want_pc = losses.ibot_patch(s_tok[m], t_tok[m], m, state["patch_center"],
                                         teacher_temp=tau)
  want_koleo = losses.koleo(h[:b]) + losses.koleo(h[b:2 * b])
  np.testing.assert_allclose(metrics["dino_loss"], want_dino, rtol=1e-5)
  np.testing.assert_allclose(metrics["ibot_loss"], want_ibot, rtol=1e-5)
  np.testing.assert_allclose(metrics["koleo_loss"], want_koleo, rtol=1e-5)
  np.testing.assert_allclose(value, want_dino + 0.7 * want_ibot + 0.3 * want_koleo, rtol=1e-5)
  np.testing.assert_allclose(new_state["center"], want_c, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(new_state["patch_center"], want_pc, rtol=1e-5, atol=1e-7)


def test_no_gradient_into_teacher_or_centers(setup):
  c, method, _, params, state, fn = setup
  (value, (new_state, _)), (g_params, g_state) = fn(params, state)
  assert np.isfinite(value)
  for leaf in jax.tree.leaves((g_state["teacher"], g_state["center"],
                               g_state["patch_center"])):
    np.testing.assert_array_equal(leaf, 0.0)
  # The mask token is trained (masked patches reach the loss).
  assert np.any(np.asarray(g_params["encoder"]["mask_token"]) != 0)
  jax.tree.map(np.testing.assert_array_equal, new_state["teacher"]["params"],
               state["teacher"]["params"])
  # Evaluated / exported: the teacher's encoder, without the mask token.
  enc = method.encoder_variables(params, new_state)["params"]
  assert "mask_token" not in enc
  np.testing.assert_array_equal(enc["cls_token"],
                                state["teacher"]["params"]["encoder"]["cls_token"])


def test_one_sgd_step_lowers_the_loss_on_fixed_views(setup):
  _, _, _, params, state, fn = setup
  (before, _), (grads, _) = fn(params, state)
  (after, _), _ = fn(jax.tree.map(lambda p, g: p - 1e-4 * g, params, grads), state)
  assert after < before


def test_local_crops_are_not_masked(setup):
  c, _, views, params, _, _ = setup
  groups = [jnp.concatenate(views[:2]), jnp.concatenate(views[2:])]
  net = _net(c, drop_path=False)
  apply = jax.jit(lambda p, g, m: net.apply({"params": p}, g, m, train=False)[0])
  h0 = apply(params, groups, jnp.zeros((32, 16), bool))
  h1 = apply(params, groups, jnp.ones((32, 16), bool))   # every global token masked
  np.testing.assert_array_equal(h1[32:], h0[32:])      # local crops: unchanged
  assert not np.allclose(h1[:32], h0[:32])


def test_sinkhorn_cls_loss_equals_dino_with_centred_targets():
  s = jax.random.normal(jax.random.key(0), (4, 3, 8))
  t = jax.random.normal(jax.random.key(1), (2, 3, 8))
  c = jnp.linspace(-0.5, 0.5, 8)
  want, _ = losses.dino(s, t, c, teacher_temp=0.05, student_temp=0.1)
  p = jax.nn.softmax((t - c) / 0.05, axis=-1)
  np.testing.assert_allclose(ibot.dino_cross_entropy(s, p, 0.1), want, rtol=1e-6)


def test_one_device_equals_eight_dinov2_options():
  """Sinkhorn-Knopp targets, separate patch head (frozen last layers), KoLeo."""
  c = _config(**{"loss.centering": "sinkhorn_knopp", "loss.shared_head": False})
  (s1, h1), _ = mt.assert_one_device_equals_eight(
      c, mt.digit_batches(c, 2), total_steps=LENGTH.total_steps,
      steps_per_epoch=LENGTH.steps_per_epoch)
  assert "patch_head" in s1.params and np.isfinite(h1[-1]["loss"])
  # Sinkhorn-Knopp leaves the centers alone.
  np.testing.assert_array_equal(s1.method_state["center"], 0.0)


def test_separate_head_freezes_both_last_layers():
  m = methods.make(_config(**{"loss.shared_head": False}), LENGTH)
  assert m.frozen == (("head/last_layer", 2), ("patch_head/last_layer", 2))


@pytest.mark.parametrize("fields,match", [
    ({"model.name": "resnet_tiny"}, r"config.model.name='resnet_tiny' is not a ViT"),
    ({"masks.mask_ratio_range": (0.01, 0.05)}, r"config.masks.mask_ratio_range.* masks no "
                                               "token"),
    ({"masks.mask_ratio_range": (0.1, 1.5)}, r"config.masks.mask_ratio_range"),
    ({"loss.ibot_weight": -1.0}, r"config.loss.ibot_weight=-1.0 must be >= 0"),
    ({"loss.centering": "softmax"}, r"config.loss.centering='softmax'"),
    ({"views.image_size": 18}, r"config.views.image_size=18 is not divisible"),
])
def test_bad_configs_fail_in_make(fields, match):
  with pytest.raises(ValueError, match=match):
    methods.make(_config(**fields), LENGTH)
