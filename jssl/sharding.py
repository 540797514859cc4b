"""Device mesh, sharding rules and host-batch -> global-array conversion.

One mesh for the whole job, built from the config (big_vision style
`config.mesh = [('data', -1)]`). The train step, evaluators and feature
extraction all use it; nothing else in jssl names devices.

Sharding choices (and why):
  * Batches are split over the `data` axis along their first (B) dimension;
    every process feeds only its local rows
    (`jax.make_array_from_process_local_data`), so hosts never see other
    hosts' data.
  * Parameters, optimiser state and method state are replicated (`P()`): the
    ResNets and heads of the SSL recipes are at most ~100 MB, and data
    parallelism over the global batch is what SSL needs (global negatives,
    global batch-norm statistics). Rules are a function so that larger models
    can later map parameter paths to `model` axes without touching the step.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jssl import errors

DATA_AXIS = "data"


def make_mesh(mesh_axes: Sequence[Sequence[Any]] = ((DATA_AXIS, -1),),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh from `[(name, size), ...]`; one size may be -1 (the rest).

  Axis types are `Auto` on purpose: the losses rely on XLA's sharding
  propagation to insert the collectives (all-gathers of embeddings for global
  negatives), which `Explicit` axes would make every op spell out.

  Raises:
    ValueError: if the sizes do not multiply to the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = [str(a[0]) for a in mesh_axes]
  sizes = [int(a[1]) for a in mesh_axes]
  if DATA_AXIS not in names:
    raise errors.ConfigError(f"mesh {list(mesh_axes)} has no {DATA_AXIS!r} axis")
  if sizes.count(-1) > 1:
    raise errors.ConfigError(f"mesh {list(mesh_axes)}: at most one axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise errors.ConfigError(
          f"mesh {list(mesh_axes)} does not divide {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise errors.ConfigError(
        f"mesh {list(mesh_axes)} needs {math.prod(sizes)} devices, "
        f"found {len(devices)}")
  device_array = np.asarray(devices).reshape(sizes)
  return Mesh(device_array, tuple(names),
              axis_types=tuple(AxisType.Auto for _ in names))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis, rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def example_keys(key, images: jax.Array):
  """One key per example, sharded like `images` on the batch axis.

  Used wherever each example draws its own randomness inside the jitted step:
  the device views (`jssl.data.device_views`), MAE's masks
  (`jssl.methods.mae`) and fine-tuning's augmentations (`jssl.evals.finetune`).
  It lives here, not in `jssl.data`, because it is a sharding rule, and
  methods never import the data package (the layering of DESIGN rules 2 and
  15, enforced by tests/test_layering.py).

  Under an Explicit-axes mesh, vmap needs every mapped input
  sharded alike; keys split from one replicated key are unsharded, so reshard
  them onto the batch axis. The values do not change: jax's threefry is
  partitionable (`jax_threefry_partitionable`, default), so views do not depend
  on the sharding (tested: 8 devices == 1).
  """
  keys = jax.random.split(key, images.shape[0])
  sharding = getattr(jax.typeof(images), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if spec and spec[0] is not None:
    keys = jax.sharding.reshard(
        keys, jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(spec[0])))
  return keys


def state_shardings(mesh: Mesh, state_shapes: Any) -> Any:
  """Sharding for every leaf of the train state: replicated (see module doc)."""
  return jax.tree.map(lambda _: replicated(mesh), state_shapes)


def check_global_batch(global_batch: int, mesh: Mesh) -> int:
  """Returns the per-process batch size, or raises a readable error."""
  n_data = mesh.shape[DATA_AXIS]
  if global_batch % n_data:
    raise errors.ConfigError(
        f"global batch size {global_batch} is not divisible by the {n_data} "
        f"devices of the '{DATA_AXIS}' mesh axis; choose a multiple of {n_data}")
  if global_batch % jax.process_count():
    raise errors.ConfigError(
        f"global batch size {global_batch} is not divisible by the "
        f"{jax.process_count()} processes")
  return global_batch // jax.process_count()


def to_global(batch: Any, mesh: Mesh) -> Any:
  """Host-local numpy batch (pytree) -> global `jax.Array`s sharded on data.

  Each process passes its own rows; the global batch is their concatenation in
  process order.
  """
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      batch)


def prefetch_to_mesh(batches: Iterable[Any], mesh: Mesh,
                     size: int = 2) -> Iterator[Any]:
  """Converts host batches to global arrays `size` batches ahead.

  The host iterator and the host->device copy run in a background thread
  (`jssl.data.sources.prefetch`: producer errors re-raised here, closing the
  generator ends the thread) so the next batch is ready when the step asks.
  """
  from jssl.data import sources  # pylint: disable=import-outside-toplevel
  global_batches = (to_global(b, mesh) for b in batches)
  if size <= 0:
    return global_batches
  return sources.prefetch(global_batches, size)
