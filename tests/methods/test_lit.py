"""LiT: the locked tower is loaded from an export, gets exactly zero update,
the text side trains; missing export and size mismatch are one-line errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dual_testing as dt
import methods_testing as mt
from jssl import errors, export, methods, models
from jssl import sharding as shd


def _export_tower(path, size=16):
  cfg = dict(name="resnet_tiny", stem="cifar")
  enc = models.make_encoder(cfg)
  variables = enc.init(jax.random.key(3), jnp.zeros((1, size, size, 3)), train=False)
  # Non-trivial running statistics, so a batch-stats update would show.
  variables = jax.tree.map(lambda x: x + 0.1, variables)
  export.export_encoder(path, variables=variables, model_config=cfg,
                        preprocess=dict(size=size, mean=[0.5] * 3, std=[0.25] * 3,
                                        crop_fraction=1.0, channels=3))
  return jax.device_get(variables)


def test_locked_tower_is_bit_identical_after_steps_and_text_trains(tmp_path):
  exported = _export_tower(tmp_path / "run" / "export")
  config = dt.smoke_config("lit")
  config.lit.image_tower = str(tmp_path / "run")   # a workdir with export/
  config.optimizer.warmup_epochs = 0.0
  batches = dt.synthetic_batches(config, 3)
  mesh = shd.make_mesh()
  _, init_fn, step = mt.build(config, mesh, batches[0])
  state = init_fn()
  assert "encoder" not in state.params and "image_proj" not in state.params
  first = None
  for b in batches:
    state, m = step(state, shd.to_global(b, mesh))
    first = jax.device_get(state.params["text"]) if first is None else first
  host = jax.device_get(state)
  jax.tree.map(np.testing.assert_array_equal, host.method_state["image_tower"], exported)
  # No optimiser state for the tower: nothing of its size in opt_state.
  n_tower = sum(x.size for x in jax.tree.leaves(exported))
  n_opt = sum(np.size(x) for x in jax.tree.leaves(host.opt_state))
  n_params = sum(x.size for x in jax.tree.leaves(host.params))
  assert n_opt <= 2 * n_params + 16 and n_tower > 0
  # The text side moved.
  assert not np.allclose(jax.tree.leaves(first)[0], jax.tree.leaves(host.params["text"])[0])
  # Text projection maps to the locked tower's width (no image head).
  assert host.params["text_proj"]["kernel"].shape[-1] == models.make_encoder(
      dict(name="resnet_tiny")).feature_dim
  before, after = mt.step_loss_before_after(step, host, batches[0], mesh)
  assert after < before


def test_missing_export_and_wrong_size_are_one_line_errors(tmp_path):
  config = dt.smoke_config("lit")
  config.lit.image_tower = str(tmp_path / "nothing")
  with pytest.raises(errors.ExportNotFoundError, match="is not a jssl export") as e:
    methods.make(config)
  assert "\n" not in str(e.value)
  _export_tower(tmp_path / "exp", size=24)
  config.lit.image_tower = str(tmp_path / "exp")
  with pytest.raises(errors.ConfigError, match="views.image_size=16.*24 px") as e:
    methods.make(config)
  assert "\n" not in str(e.value)


def test_lit_one_device_equals_eight_and_trains(tmp_path):
  _export_tower(tmp_path / "export")
  config = dt.smoke_config("lit", **{"loss.name": "siglip"})
  config.lit.image_tower = str(tmp_path / "export")
  mt.assert_one_device_equals_eight(config, dt.synthetic_batches(config, 2))
