"""DINO: teacher/center state, schedules, frozen last layer, and 1 == 8 devices."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jssl_testing import load_config
import methods_testing as mt

from jssl import methods, models, schedules
from jssl import sharding as shd
from jssl.data import device_views
from jssl.data import recipes as views_lib
from jssl.methods import dino
from jssl.models import dino_head

LENGTH = methods.TrainLength(total_steps=10, steps_per_epoch=2.0)


def _config(batch=16):
  c = load_config("configs/dino.py:smoke")
  c.batch_size = batch
  return c


@pytest.fixture(scope="module")
def setup():
  """(config, method, views, params, method_state) on one fixed batch."""
  c = _config()
  method = methods.make(c, LENGTH)
  batch = mt.digit_batches(c, 1)[0]
  num = c.views.num_views
  views = jax.jit(device_views.make_view_fn(c.views, num))(jax.random.key(0),
                                                           batch)
  params, state = jax.jit(method.init)(jax.random.key(1), views)
  return c, method, views, params, state


def _loss_and_grads(method, views, step=0):
  def f(params, state):
    return method.loss(params, state, views, None, jax.random.key(2), step)
  return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))


def test_one_device_equals_eight_teacher_and_center_included():
  c = _config()
  batches = mt.digit_batches(c, 3)
  (s1, h1), _ = mt.assert_one_device_equals_eight(c, batches)
  assert set(s1.method_state) == {"batch_stats", "teacher", "center"}
  assert np.any(np.asarray(s1.method_state["center"]) != 0)


def test_no_gradient_into_teacher_or_center(setup):
  c, method, views, params, state = setup
  (value, (new_state, metrics)), (g_params, g_state) = _loss_and_grads(
      method, views)(params, state)
  assert np.isfinite(value)
  assert metrics["teacher_temp"] == pytest.approx(c.loss.teacher_temp)
  # Teacher and center are not parameters: zero gradient through the loss.
  for leaf in jax.tree.leaves((g_state["teacher"], g_state["center"])):
    np.testing.assert_array_equal(leaf, 0.0)
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(g_params))
  # The loss leaves the teacher's parameters alone (only its BN statistics
  # follow its own forward pass) ...
  jax.tree.map(np.testing.assert_array_equal, new_state["teacher"]["params"],
               state["teacher"]["params"])
  # ... and update_state moves them by the EMA rule only, with the cosine
  # momentum lambda(step): teacher <- lambda teacher + (1 - lambda) student.
  step = 3
  student = jax.tree.map(lambda p: p + 0.5, params)
  out = method.update_state(student, new_state, step)
  lam = float(schedules.cosine_between(c.ema.base_momentum, 1.0,
                                       LENGTH.total_steps)(step))
  assert 0.99 <= lam < 1.0
  jax.tree.map(lambda t_new, t_old, s: np.testing.assert_allclose(
      t_new, lam * t_old + (1 - lam) * s, rtol=1e-6, atol=1e-7),
               out["teacher"]["params"], new_state["teacher"]["params"], student)
  np.testing.assert_array_equal(out["center"], new_state["center"])


def test_center_update_by_hand(setup):
  c, method, views, params, state = setup
  state = dict(state, center=jnp.linspace(-0.1, 0.1, c.head.out_dim))
  (_, (new_state, _)), _ = _loss_and_grads(method, views)(params, state)
  # Teacher logits of the 2 global crops (train mode, as in the loss).
  net = dino.MultiCropNet(encoder=models.make_encoder(c.model),
                          head=dino_head.make_dino_head(c.head))
  (_, t), _ = net.apply(state["teacher"], [jnp.concatenate(views[:2])],
                        train=True, mutable=["batch_stats"])
  m = c.loss.center_momentum
  want = m * state["center"] + (1 - m) * np.mean(np.asarray(t), axis=0)
  np.testing.assert_allclose(new_state["center"], want, rtol=1e-5, atol=1e-6)


def test_teacher_temperature_schedule():
  c = _config()
  c.loss.update(warmup_teacher_temp=0.04, teacher_temp=0.07,
                warmup_teacher_temp_epochs=30.0)
  length = methods.TrainLength(total_steps=1000, steps_per_epoch=10.0)
  sched = dino.teacher_temperature_schedule(c, length)
  for step, want in ((0, 0.04), (150, 0.055), (300, 0.07), (999, 0.07)):
    assert float(sched(step)) == pytest.approx(want, rel=1e-6)
  c.loss.warmup_teacher_temp_epochs = 0.0
  assert float(dino.teacher_temperature_schedule(c, length)(0)) == pytest.approx(
      0.07)


def test_last_layer_frozen_for_first_epoch_then_trained():
  c = _config()
  method, init_fn, train_step = mt.build(c, shd.make_mesh(), mt.digit_batches(
      c, 1)[0], total_steps=LENGTH.total_steps,
      steps_per_epoch=LENGTH.steps_per_epoch)
  assert method.frozen == (("head/last_layer", 2),)
  mesh = shd.make_mesh()
  state = init_fn()
  flat = lambda s: flax.traverse_util.flatten_dict(  # noqa: E731
      jax.device_get(s.params), sep="/")
  p0 = flat(state)
  snapshots = []
  for b in mt.digit_batches(c, 3):
    state, _ = train_step(state, shd.to_global(b, mesh))
    snapshots.append(flat(state))
  key = "head/last_layer/kernel"
  # Epoch 1 (steps 0, 1): the last layer does not move; the rest does.
  np.testing.assert_array_equal(snapshots[1][key], p0[key])
  assert np.any(snapshots[1]["head/linear1/kernel"] != p0["head/linear1/kernel"])
  # Epoch 2: it trains.
  assert np.any(snapshots[2][key] != p0[key])


def test_one_sgd_step_lowers_the_loss_on_fixed_views(setup):
  _, method, views, params, state = setup
  fn = _loss_and_grads(method, views, step=5)
  (before, _), (grads, _) = fn(params, state)
  new = jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)
  (after, _), _ = fn(new, state)
  assert after < before


def test_per_parameter_gradient_clipping():
  params = {"a": jnp.ones((3,)), "b": jnp.ones((2, 2))}
  scale = {"a": 10.0, "b": 0.1}
  g = jax.grad(lambda p: sum(scale[k] * jnp.sum(v) for k, v in
                             dino.clip_grads_per_param(p, 3.0).items()))(params)
  # a: norm 10 * sqrt(3) > 3 -> rescaled to 3; b: norm 0.2 -> untouched.
  assert float(jnp.linalg.norm(g["a"])) == pytest.approx(3.0, rel=1e-5)
  np.testing.assert_allclose(g["b"], 0.1)


def test_encoder_variables_are_the_teachers(setup):
  _, method, views, params, state = setup
  teacher = jax.tree.map(lambda x: x + 1.0, state["teacher"])
  got = method.encoder_variables(params, dict(state, teacher=teacher))
  jax.tree.map(np.testing.assert_array_equal, got["params"], teacher["params"]["encoder"])


def test_bad_configs_fail_in_make():
  c = _config()
  c.views.num_views = 3
  with pytest.raises(ValueError, match="exactly 2 global crops"):
    methods.make(c, LENGTH)
  c = _config()
  with pytest.raises(ValueError, match="depends on the run length"):
    methods.make(c)
  c = _config()
  c.optimizer.grad_clip_norm = 1.0
  c.dino.clip_grad = 3.0
  with pytest.raises(ValueError, match="not both"):
    methods.make(c, LENGTH)
  c = _config()
  del c.views.local["image_size"]
  with pytest.raises(ValueError, match=r"local.num=2 but .* lacks \['image_size'\]"):
    methods.make(c, LENGTH)


def test_local_crops_requested_but_not_delivered(setup):
  c, method, views, _, _ = setup
  assert views_lib.local_crops(c.views).num == 2 and len(views) == 4
  # A pipeline that ignores recipe.local: only the 2 global crops.
  with pytest.raises(ValueError, match="multi-crop settings and the data "
                     "pipeline disagree"):
    method.init(jax.random.key(0), views[:2])


def _vit_config():
  import ml_collections  # pylint: disable=import-outside-toplevel
  c = _config()
  c.model = ml_collections.ConfigDict(dict(name="vit_test", patch_size=4,
                                           pos_embed="sincos", drop_path_rate=0.1))
  c.head.use_bn = False  # DINO's ViT head has no BN
  return c


def test_vit_with_local_crops_trains_and_evaluates_the_teacher():
  c = _vit_config()
  assert views_lib.local_crops(c.views).num == 2
  method = methods.make(c, LENGTH)
  keys = jax.random.split(jax.random.key(0), 4)
  views = tuple(jax.random.normal(k, (8, s, s, 3))
                for k, s in zip(keys, (16, 16, 8, 8)))
  params, state = method.init(jax.random.key(1), views)
  assert state["batch_stats"] == {} and state["teacher"]["batch_stats"] == {}
  fn = _loss_and_grads(method, views, step=5)
  (before, (new_state, _)), (grads, _) = fn(params, state)
  new = jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)
  (after, _), _ = fn(new, new_state)
  assert np.isfinite(before) and after < before
  enc = method.encoder_variables(new, method.update_state(new, new_state, 5))
  assert set(enc) == {"params"}  # the teacher's ViT: no batch statistics
  assert method.encode(new, new_state, views[0])["pre_logits"].shape == (8, 32)


def test_vit_learned_position_table_cannot_take_local_crops():
  c = _vit_config()
  c.model.pos_embed = "learned"
  with pytest.raises(ValueError, match="pos_embed='sincos'"):
    methods.make(c, LENGTH)
