import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jssl import schedules


def _cfg(**kw):
  base = dict(name="lars", base_lr=0.3, lr_scaling="linear", weight_decay=1e-4,
              momentum=0.9, trust_coefficient=0.02, warmup_epochs=1.0,
              grad_clip_norm=0.0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_linear_scaling_and_warmup_cosine():
  assert schedules.scaled_learning_rate(_cfg(), 1024) == pytest.approx(1.2)
  assert schedules.scaled_learning_rate(_cfg(lr_scaling="sqrt"), 4096) == \
      pytest.approx(0.3 * 64)
  sched = schedules.warmup_cosine(1.0, total_steps=100, warmup_steps=10)
  assert float(sched(0)) == 0.0
  assert float(sched(10)) == pytest.approx(1.0)
  assert float(sched(55)) == pytest.approx(0.5, abs=1e-6)  # cosine midpoint
  assert float(sched(100)) == pytest.approx(0.0, abs=1e-7)
  with pytest.raises(ValueError, match="lr_scaling='cube'"):
    schedules.scaled_learning_rate(_cfg(lr_scaling="cube"), 256)


def test_lars_skips_weight_decay_and_trust_ratio_for_biases_and_bn():
  params = {"kernel": jnp.full((3, 4), 2.0), "bias": jnp.full((4,), 2.0)}
  grads = {"kernel": jnp.full((3, 4), 0.5), "bias": jnp.full((4,), 0.5)}
  tx, sched = schedules.make_optimizer(_cfg(warmup_epochs=0.0, lr_scaling="none",
                                            base_lr=0.1),
                                       global_batch=256, total_steps=10,
                                       steps_per_epoch=1)
  updates, _ = tx.update(grads, tx.init(params), params)
  lr = float(sched(0))
  # Bias: plain SGD (no decay, no trust ratio): -lr * g.
  np.testing.assert_allclose(updates["bias"], -lr * 0.5, rtol=1e-6)
  # Kernel: g + wd * p, rescaled by eta * ||p|| / ||g + wd p||.
  g = 0.5 + 1e-4 * 2.0
  trust = 0.02 * np.sqrt(12 * 4.0) / np.sqrt(12 * g * g)
  np.testing.assert_allclose(updates["kernel"], -lr * trust * g, rtol=1e-5)


def test_unknown_optimizer_is_named():
  with pytest.raises(ValueError, match="optimizer.name='adam9'"):
    schedules.make_optimizer(_cfg(name="adam9"), global_batch=256,
                             total_steps=10, steps_per_epoch=1)


def test_cosine_between_is_byol_momentum():
  # BYOL Sec. 3.2: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2.
  sched = schedules.cosine_between(0.996, 1.0, total_steps=100)
  for k in (0, 25, 50, 100, 150):
    expected = 1 - (1 - 0.996) * (np.cos(np.pi * min(k, 100) / 100) + 1) / 2
    assert float(sched(k)) == pytest.approx(expected, abs=1e-7)


def test_ema_update():
  target = {"w": jnp.ones(3)}
  online = {"w": jnp.zeros(3)}
  out = schedules.ema_update(target, online, jnp.float32(0.9))
  np.testing.assert_allclose(out["w"], 0.9)


def test_weight_decay_schedule_and_unknown_key():
  # SGD without momentum, lr 1: the update is -(grad + wd(step) * p).
  cfg = _cfg(name="sgd", momentum=0.0, warmup_epochs=0.0, lr_scaling="none",
             base_lr=1.0, weight_decay=0.1, weight_decay_end=0.3)
  tx, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10,
                                   steps_per_epoch=5)
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  grads = jax.tree.map(jnp.zeros_like, params)
  state = tx.init(params)
  upd, state = tx.update(grads, state, params)
  np.testing.assert_allclose(upd["w"], -0.1)   # step 0: wd = 0.1, lr = 1
  np.testing.assert_allclose(upd["b"], 0.0)    # biases are not decayed
  with pytest.raises(ValueError, match="weight_dacay"):
    schedules.make_optimizer(_cfg(weight_dacay=0.1), global_batch=256,
                             total_steps=10, steps_per_epoch=5)


def test_freeze_zeroes_updates_until_step():
  cfg = _cfg(name="sgd", momentum=0.0, warmup_epochs=0.0, lr_scaling="none",
             base_lr=1.0, weight_decay=0.0)
  tx, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10,
                                   steps_per_epoch=5,
                                   frozen=(("head/last", 2),))
  params = {"head": {"last": {"kernel": jnp.ones((2, 2))},
                     "lastx": {"kernel": jnp.ones((2, 2))}}}
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  seen = []
  for _ in range(3):
    upd, state = tx.update(grads, state, params)
    seen.append((float(upd["head"]["last"]["kernel"][0, 0]) != 0,
                 float(upd["head"]["lastx"]["kernel"][0, 0]) != 0))
  # Frozen for steps 0 and 1, then trained; the prefix match is per path
  # component ('lastx' is not under 'last').
  assert seen == [(False, True), (False, True), (True, True)]


def _vit_tree():
  """A tiny ViT encoder's parameter shapes under 'encoder', plus a head."""
  from jssl import models  # pylint: disable=import-outside-toplevel
  enc = models.make_encoder({"name": "vit_test", "patch_size": 4}).clone(use_mask_token=True)
  p = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                                      train=False))["params"]
  params = {"encoder": p, "head": {"kernel": jax.ShapeDtypeStruct((32, 4), jnp.float32)}}
  return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), params)


def test_layer_decay_scales_each_vit_layer():
  params = _vit_tree()
  grads = jax.tree.map(lambda p: 0.5 * p, params)
  model = {"name": "vit_test", "patch_size": 4}   # depth 2
  cfg = _cfg(name="sgd", momentum=0.0, weight_decay=0.0, warmup_epochs=0.0, lr_scaling="none")
  plain, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10, steps_per_epoch=1)
  cfg.layer_decay = 0.5
  tx, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10, steps_per_epoch=1,
                                   model=model)
  u0, _ = plain.update(grads, plain.init(params), params)
  u1, _ = tx.update(grads, tx.init(params), params)
  ratio = jax.tree.map(lambda a, b: float(np.unique(np.asarray(b / a))[0]), u0, u1)
  enc = ratio["encoder"]
  # decay^(depth + 1 - layer): embeddings layer 0, block i layer i, the rest 1.
  for k in ("patch_embed", "cls_token", "mask_token"):
    assert set(jax.tree.leaves(enc[k])) == {0.125}, k
  assert set(jax.tree.leaves(enc["block1"])) == {0.25}
  assert set(jax.tree.leaves(enc["block2"])) == {0.5}
  assert set(jax.tree.leaves(enc["norm"])) == {1.0} and ratio["head"]["kernel"] == 1.0
  assert schedules.layer_decay_factor(["encoder", "pos_embedding"], 0.5, 2) == 0.125


def test_patch_embed_lr_mult_scales_only_the_patch_embedding():
  """DINOv2's `patch_embed_lr_mult` (0.2): on top of layer decay, only the
  parameters named patch_embed (not cls_token / pos_embedding)."""
  params = _vit_tree()
  grads = jax.tree.map(lambda p: 0.5 * p, params)
  model = {"name": "vit_test", "patch_size": 4}   # depth 2
  cfg = _cfg(name="sgd", momentum=0.0, weight_decay=0.0, warmup_epochs=0.0, lr_scaling="none")
  plain, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10, steps_per_epoch=1)
  u0, _ = plain.update(grads, plain.init(params), params)
  for decay, embed in ((1.0, 1.0), (0.5, 0.125)):
    cfg.layer_decay, cfg.patch_embed_lr_mult = decay, 0.2
    tx, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10, steps_per_epoch=1,
                                     model=model)
    u1, _ = tx.update(grads, tx.init(params), params)
    enc = jax.tree.map(lambda a, b: float(np.unique(np.asarray(b / a))[0]), u0, u1)["encoder"]
    assert jax.tree.leaves(enc["patch_embed"]) == pytest.approx([0.2 * embed] * 2)
    assert set(jax.tree.leaves(enc["cls_token"])) == {embed}
    assert set(jax.tree.leaves(enc["norm"])) == {1.0}
  kw = dict(global_batch=256, total_steps=10, steps_per_epoch=1)
  cfg.layer_decay = 1.0
  with pytest.raises(schedules.errors.ConfigError,
                     match=r"optimizer.patch_embed_lr_mult=0.2 is for ViT encoders"):
    schedules.make_optimizer(cfg, model={"name": "resnet18"}, **kw)
  cfg.patch_embed_lr_mult = 0.0
  with pytest.raises(schedules.errors.ConfigError, match=r"patch_embed_lr_mult=0.0: must be > 0"):
    schedules.make_optimizer(cfg, model=model, **kw)


def test_layer_decay_one_is_bit_identical_and_bad_values_fail():
  params = _vit_tree()
  grads = jax.tree.map(lambda p: 0.3 * p, params)
  cfg = _cfg(name="adamw", weight_decay=0.05, b1=0.9, b2=0.95)
  before, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10, steps_per_epoch=1)
  cfg.layer_decay = 1.0
  after, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10, steps_per_epoch=1,
                                      model={"name": "resnet18"})
  ua, _ = before.update(grads, before.init(params), params)
  ub, _ = after.update(grads, after.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, ua, ub)
  kw = dict(global_batch=256, total_steps=10, steps_per_epoch=1)
  for value, model, match in ((0.0, {"name": "vit_test"}, "in \\(0, 1\\]"),
                              (1.5, {"name": "vit_test"}, "in \\(0, 1\\]"),
                              (0.65, {"name": "resnet18"}, "is for ViT encoders"),
                              (0.65, None, "needs the ViT encoder")):
    cfg.layer_decay = value
    with pytest.raises(schedules.errors.ConfigError, match=match):
      schedules.make_optimizer(cfg, model=model, **kw)


def test_constant_lr_group_keeps_the_peak_lr_through_warmup_and_cosine():
  """SimSiam's --fix-pred-lr: the 'predictor' group steps at the peak lr from
  step 0 (the warm-up gives the rest lr 0 there), PyTorch SGD order by hand:
  buf = m buf + (g + wd p); p -= lr buf, for a constant g and fixed p."""
  cfg = _cfg(name="sgd", momentum=0.9, warmup_epochs=1.0, lr_scaling="none",
             base_lr=0.5, weight_decay=0.1)
  params = {"predictor": {"kernel": jnp.ones((2, 2))},
            "predictorx": {"kernel": jnp.ones((2, 2))},   # not under 'predictor/'
            "encoder": {"kernel": jnp.ones((2, 2))}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  tx, sched = schedules.make_optimizer(cfg, global_batch=256, total_steps=10,
                                       steps_per_epoch=2, constant_lr=("predictor",))
  state = tx.init(params)
  buf = 0.0
  for step in range(4):
    upd, state = tx.update(grads, state, params)
    buf = 0.9 * buf + (0.5 + 0.1 * 1.0)
    np.testing.assert_allclose(upd["predictor"]["kernel"], -0.5 * buf, rtol=1e-6)
    for other in ("predictorx", "encoder"):
      np.testing.assert_allclose(upd[other]["kernel"], -float(sched(step)) * buf, rtol=1e-6)
  assert float(sched(0)) == 0.0 and float(sched(3)) < 0.5     # warm-up, then the cosine
  # Without the group, the predictor follows the schedule (lr 0 at step 0).
  tx0, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10, steps_per_epoch=2)
  tx1, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10, steps_per_epoch=2,
                                    constant_lr=("nothing_here",))
  u0, _ = tx0.update(grads, tx0.init(params), params)
  assert float(u0["predictor"]["kernel"][0, 0]) == 0.0
  # A prefix that names no parameter is an error, not a silent no-op.
  with pytest.raises(ValueError, match="constant-lr prefix 'nothing_here' matches no parameter"):
    tx1.init(params)


@pytest.mark.parametrize("name", ["lars", "adamw"])
def test_constant_lr_group_for_lars_and_adamw(name):
  cfg = _cfg(name=name, warmup_epochs=1.0, lr_scaling="none", base_lr=0.5, weight_decay=0.0,
             b1=0.9, b2=0.999)
  params = {"predictor": {"bias": jnp.ones((3,))}, "encoder": {"bias": jnp.ones((3,))}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  tx, _ = schedules.make_optimizer(cfg, global_batch=256, total_steps=10,
                                   steps_per_epoch=2, constant_lr=("predictor",))
  upd, _ = tx.update(grads, tx.init(params), params)
  assert float(upd["encoder"]["bias"][0]) == 0.0                 # warm-up: lr 0
  # Step 0 of LARS on a bias: -lr g; of AdamW: -lr (bias-corrected m / sqrt(v) = 1).
  want = -0.5 * 0.5 if name == "lars" else -0.5
  np.testing.assert_allclose(upd["predictor"]["bias"], want, rtol=1e-4)
