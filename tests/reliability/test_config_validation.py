"""Fault: a count, size or rate in the config that cannot run.

Before `jssl.config_check`, `total_steps=0` silently trained for
`total_epochs`, `checkpoint.every_steps=0` was a ZeroDivisionError after the
first compiled step, `batch_size=-8` a TypeError about slices, a zero
temperature NaN training, and `checkpoint.keep=0` or a negative learning rate
were accepted. Now each is a `ConfigError` naming the field, the value and the
allowed range, raised by the first line of `train.run`.
"""
import glob
import os

import pytest

from jssl import config_check
from jssl.errors import ConfigError
from jssl_testing import REPO, load_config

RUN_BOOKS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs/*.py")))


def _presets():
  import importlib.util  # pylint: disable=import-outside-toplevel
  for path in RUN_BOOKS:
    spec = importlib.util.spec_from_file_location("rb", os.path.join(REPO, path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for preset in mod.PRESETS:
      yield f"{path}:{preset}"


@pytest.mark.parametrize("spec", list(_presets()))
def test_every_shipped_preset_passes(spec):
  assert config_check.problems(load_config(spec)) == []


def _set(config, path, value):
  *parents, leaf = path.split(".")
  for p in parents:
    config = config[p]
  with config.ignore_type():
    config[leaf] = value


def _message(spec, **overrides):
  config = load_config(spec)
  for path, value in overrides.items():
    _set(config, path.replace("__", "."), value)
  with pytest.raises(ConfigError) as e:
    config_check.validate(config)
  return str(e.value)


# (run book, field, bad value, what the message says is allowed): one row per
# field family, on the run book that has the field.
SMOKE = "configs/simclr.py:smoke"
CASES = [
    # Loop counts and cadences.
    (SMOKE, "total_steps", 0, "-1 (use total_epochs) or an integer >= 1"),
    (SMOKE, "total_steps", -5, "-1 (use total_epochs) or an integer >= 1"),
    (SMOKE, "total_epochs", 0.0, "a number > 0"),
    (SMOKE, "stop_at_step", 0, "-1 (no planned stop) or an integer >= 1"),
    (SMOKE, "log_every_steps", 0, "an integer >= 1"),
    (SMOKE, "eval_every_steps", -1, "an integer >= 0"),
    (SMOKE, "checkpoint.every_steps", 0, "an integer >= 1"),
    (SMOKE, "checkpoint.keep", 0, "an integer >= 1"),
    (SMOKE, "diagnostics.every_steps", -2, "an integer >= 0"),
    (SMOKE, "prefetch", -1, "an integer >= 0"),
    # Batches and sizes.
    (SMOKE, "batch_size", -8, "an integer >= 1"),
    (SMOKE, "batch_size", 3.5, "an integer >= 1"),
    (SMOKE, "eval.batch_size", 0, "an integer >= 1"),
    # (the digits presets tie these two to data.kwargs.size: a CIFAR preset)
    ("configs/simclr.py:cifar10", "views.image_size", 0, "an integer >= 1"),
    ("configs/simclr.py:cifar10", "eval.image_size", -32, "an integer >= 1"),
    (SMOKE, "eval.crop_fraction", 1.5, "a number in (0, 1]"),
    (SMOKE, "projector.hidden_dims", (32, 0), "a sequence of integers >= 1"),
    # Model.
    (SMOKE, "model.dtype", "float8", "one of 'float32', 'bfloat16', 'float16'"),
    # Optimiser rates.
    (SMOKE, "optimizer.base_lr", -0.1, "a number > 0"),
    (SMOKE, "optimizer.base_lr", float("nan"), "a number > 0"),
    (SMOKE, "optimizer.weight_decay", -1e-6, "a number >= 0"),
    (SMOKE, "optimizer.momentum", 1.0, "a number in [0, 1)"),
    (SMOKE, "optimizer.warmup_epochs", -1.0, "a number >= 0"),
    # Temperatures, in every run book that has one.
    (SMOKE, "loss.temperature", 0.0, "a number > 0"),
    ("configs/supcon.py:smoke", "loss.base_temperature", 0.0, "a number > 0"),
    ("configs/dino.py:smoke", "loss.teacher_temp", 0.0, "a number > 0"),
    ("configs/dino.py:smoke", "loss.student_temp", -0.1, "a number > 0"),
    ("configs/dino.py:smoke", "loss.warmup_teacher_temp", 0.0, "a number > 0"),
    ("configs/swav.py:smoke", "loss.temperature", 0.0, "a number > 0"),
    ("configs/swav.py:smoke", "loss.epsilon", 0.0, "a number > 0"),
    (SMOKE, "eval.knn_temperature", 0.0, "a number > 0"),
    # Momenta of target networks.
    ("configs/byol.py:smoke", "ema.base_momentum", 1.5, "a number in [0, 1]"),
    ("configs/mocov2.py:smoke", "loss.queue_size", 0, "an integer >= 1"),
    ("configs/mae.py:smoke", "loss.mask_ratio", 1.0, "a number in (0, 1)"),
    # Views: crops, counts, probabilities.
    (SMOKE, "views.crop.scale", (0.0, 1.0), "a pair (lo, hi) with 0 < lo <= hi <= 1"),
    (SMOKE, "views.crop.scale", (0.5, 0.2), "a pair (lo, hi) with 0 < lo <= hi <= 1"),
    (SMOKE, "views.crop.scale", (0.2, 1.5), "a pair (lo, hi) with 0 < lo <= hi <= 1"),
    (SMOKE, "views.crop.ratio", (0.75,), "a pair (lo, hi) with 0 < lo <= hi"),
    (SMOKE, "views.num_views", 0, "an integer >= 1"),
    (SMOKE, "views.color_jitter.p", 1.2, "a number in [0, 1]"),
    ("configs/dino.py:smoke", "views.local.num", -1, "an integer >= 0"),
    ("configs/dino.py:smoke", "views.local.image_size", 0, "an integer >= 1"),
    ("configs/dino.py:smoke", "views.local.scale", (0.05, 0.0),
     "a pair (lo, hi) with 0 < lo <= hi <= 1"),
]


@pytest.mark.parametrize("spec,field,value,allowed", CASES,
                         ids=[f"{c[1]}={c[2]!r}" for c in CASES])
def test_a_bad_value_is_named_with_its_range(spec, field, value, allowed):
  assert _message(spec, **{field.replace(".", "__"): value}) == (
      f"config.{field}={value!r}: must be {allowed}")


def test_sentinels_and_bounds_are_allowed():
  config = load_config(SMOKE)
  for field, value in [("total_steps", -1), ("stop_at_step", -1), ("eval_every_steps", 0),
                       ("prefetch", 0), ("views.crop.scale", (1.0, 1.0)),
                       ("optimizer.momentum", 0.0), ("optimizer.weight_decay", 0.0)]:
    _set(config, field, value)
  assert config_check.problems(config) == []


def test_every_problem_is_listed_one_clause_per_field():
  msg = _message(SMOKE, total_steps=0, checkpoint__keep=0, loss__temperature=0.0)
  assert msg == ("config.checkpoint.keep=0: must be an integer >= 1; "
                 "config.loss.temperature=0.0: must be a number > 0; "
                 "config.total_steps=0: must be -1 (use total_epochs) or an integer >= 1")
  assert "\n" not in msg


def test_view_overrides_are_checked_like_the_views():
  msg = _message("configs/byol.py:smoke", views__per_view=({"blur.p": 1.5}, {"blur.p": 0.1}))
  assert msg == "config.views.per_view[0]['blur.p']=1.5: must be a number in [0, 1]"
  msg = _message("configs/dino.py:smoke", views__local__overrides__blur__p=-0.5)
  assert msg == "config.views.local.overrides.blur.p=-0.5: must be a number in [0, 1]"


def test_diagnostics_cadence_must_be_a_multiple_of_the_log_cadence():
  msg = _message(SMOKE, log_every_steps=2, diagnostics__every_steps=3)
  assert msg == ("config.diagnostics.every_steps=3: must be 0 (every log step) or a "
                 "multiple of config.log_every_steps=2")


def test_the_linear_probe_feature_must_exist_on_the_encoder():
  # SMOKE is a ResNet: no cls token, so DINO's ViT probe input cannot exist.
  msg = _message(SMOKE, eval__linear_feature="cls_last4")
  assert msg == ("config.eval.linear_feature='cls_last4': needs a ViT encoder, "
                 "config.model.name='resnet_tiny' has no cls token; use 'pre_logits'")
  msg = _message(SMOKE, eval__linear_feature="cls")
  assert msg == "config.eval.linear_feature='cls': must be one of 'pre_logits', 'cls_last4'"
  config = load_config("configs/ibot.py:smoke")
  config.eval.linear_feature = "cls_last4"
  assert config_check.problems(config) == []


def test_the_dtypes_and_sources_are_the_librarys():
  from jssl import models  # pylint: disable=import-outside-toplevel
  assert set(config_check.DTYPES) == set(models._DTYPES)  # pylint: disable=protected-access
  from jssl.data import pipeline  # pylint: disable=import-outside-toplevel
  assert config_check.SOURCES == pipeline.SOURCES


def test_train_run_validates_before_touching_the_workdir(tmp_path):
  from jssl import train  # pylint: disable=import-outside-toplevel
  config = load_config(SMOKE)
  config.checkpoint.every_steps = 0
  with pytest.raises(ConfigError, match=r"config\.checkpoint\.every_steps=0"):
    train.run(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")
