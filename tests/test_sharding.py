import jax
import numpy as np
import pytest

from jssl import sharding as shd


def test_mesh_uses_all_devices_and_names_data_axis():
  mesh = shd.make_mesh()
  assert mesh.shape[shd.DATA_AXIS] == jax.device_count() == 8
  mesh = shd.make_mesh([("data", 4), ("model", -1)])
  assert dict(mesh.shape) == {"data": 4, "model": 2}


@pytest.mark.parametrize("axes,msg", [
    ([("data", 3)], "needs 3 devices, found 8"),
    ([("data", 3), ("model", -1)], "does not divide 8 devices"),
    ([("model", -1)], "no 'data' axis"),
])
def test_bad_mesh_is_explained(axes, msg):
  with pytest.raises(ValueError, match=msg):
    shd.make_mesh(axes)


def test_batch_not_divisible_by_devices_names_both_numbers():
  mesh = shd.make_mesh()
  with pytest.raises(ValueError, match=r"batch size 12 is not divisible by the 8"):
    shd.check_global_batch(12, mesh)
  assert shd.check_global_batch(16, mesh) == 16


def test_to_global_shards_rows_over_data_axis():
  mesh = shd.make_mesh()
  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  g = shd.to_global({"x": x}, mesh)["x"]
  assert g.shape == (16, 3)
  assert len(g.addressable_shards) == 8
  assert g.addressable_shards[1].data.shape == (2, 3)
  np.testing.assert_array_equal(np.asarray(g), x)


def test_prefetch_keeps_order_and_reraises_producer_errors():
  mesh = shd.make_mesh()

  def batches():
    for i in range(3):
      yield {"x": np.full((8, 2), i, np.float32)}
    raise RuntimeError("disk on fire")

  it = shd.prefetch_to_mesh(batches(), mesh, size=2)
  assert [int(next(it)["x"][0, 0]) for _ in range(3)] == [0, 1, 2]
  with pytest.raises(RuntimeError, match="disk on fire"):
    next(it)
