"""The train state: one pytree the step consumes and returns, Orbax saves.

`key` holds raw key data (`jax.random.key_data`, uint32) rather than a typed
key array so that every leaf is a plain numeric array that Orbax can write and
read back without custom handlers; the step re-wraps it.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimiser steps taken
  params: Any              # trainable parameters, {'encoder': ..., <heads>: ...}
  opt_state: Any           # optax state
  method_state: Any        # batch_stats, EMA teachers, queues, centers, ...
  key: jax.Array           # uint32 raw PRNG key data (see module docstring)
  # Online linear probe (`jssl.step.OnlineProbe`): {'params', 'opt_state'},
  # or {} when the run has none.
  probe: Any = flax.struct.field(default_factory=dict)

  @property
  def rng(self) -> jax.Array:
    return jax.random.wrap_key_data(self.key)
