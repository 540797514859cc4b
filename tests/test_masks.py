"""Mask samplers (jssl.masks): I-JEPA multi-block and iBOT/DINOv2 block-wise.

Shapes are static under jit; masks are a pure function of the key; targets are
whole h x w blocks of the sampled size, disjoint from the context; the block-size
tables reproduce ijepa's `_sample_block_size` by hand; bad settings raise
ConfigError naming the field."""
import jax
import numpy as np
import pytest

from jssl import masks
from jssl.errors import ConfigError

GRID = (8, 8)
B = 16
KW = dict(min_keep=4)


@pytest.fixture(scope="module")
def sample():
  with jax.threefry_partitionable(False):
    f = jax.jit(lambda k: masks.multiblock(k, B, GRID, **KW))
    yield lambda seed: jax.device_get(f(jax.random.key(seed)))


def test_block_size_table_matches_ijepa_formula_by_hand():
  hs, ws = masks.block_size_table(GRID, (0.15, 0.2), (0.75, 1.5))
  # u = 0: max_keep = int(64 * 0.15) = 9, aspect 0.75: h = round(sqrt(6.75)) = 3,
  # w = round(sqrt(12)) = 3.
  assert (hs[0], ws[0]) == (3, 3)
  # u = 0.5: scale 0.175 -> max_keep 11, aspect 1.125: h = round(3.52) = 4, w = round(3.13) = 3.
  assert (hs[2048], ws[2048]) == (4, 3)
  # Context on 14 x 14 at scale ~1: h = w = 14 clipped to 13 (`while h >= height`).
  ch, cw = masks.block_size_table((14, 14), (0.85, 1.0), (1.0, 1.0))
  assert ch[-1] == cw[-1] == 13 and masks.max_block_area((14, 14), (0.85, 1.0), (1, 1)) == 169
  assert masks.max_block_area(GRID, (0.15, 0.2), (0.75, 1.5)) == int(np.max(hs * ws))


def test_multiblock_shapes_blocks_disjointness_and_determinism(sample):
  a, b, c = sample(0), sample(0), sample(1)
  n_t = masks.max_block_area(GRID, (0.15, 0.2), (0.75, 1.5))
  n_c = masks.max_block_area(GRID, (0.85, 1.0), (1.0, 1.0))
  assert a.targets.shape == a.target_valid.shape == (4, B, n_t)
  assert a.context.shape == a.context_valid.shape == (1, B, n_c)
  assert a.targets.dtype == a.context.dtype == np.int32
  jax.tree.map(np.testing.assert_array_equal, a, b)          # same key, same masks
  assert not np.array_equal(a.targets, c.targets)
  hs, ws = masks.block_size_table(GRID, (0.15, 0.2), (0.75, 1.5))
  areas = set((hs * ws).tolist())
  for m in (a, c):
    sizes = set()
    for i in range(B):
      ctx = m.context[0, i][m.context_valid[0, i]]
      assert len(ctx) > KW["min_keep"] and len(set(ctx.tolist())) == len(ctx)
      assert np.all(np.diff(ctx) > 0)                        # raster order
      # Padding is a suffix of each row.
      assert not np.any(np.diff(m.context_valid[0, i].astype(int)) > 0)
      for j in range(4):
        t = m.targets[j, i][m.target_valid[j, i]]
        r, col = t // 8, t % 8
        h, w = r.max() - r.min() + 1, col.max() - col.min() + 1
        assert len(t) == h * w == len(set(t.tolist()))       # a full h x w block
        assert r.max() < 7 and col.max() < 7                  # torch.randint's exclusive high
        sizes.add(len(t))
        assert not set(t.tolist()) & set(ctx.tolist())        # disjoint from the context
    assert len(sizes) == 1 and sizes <= areas                 # one block size per batch
    # The target scale is within range: 0.15 * 64 = 9.6 -> 9 .. 0.2 * 64 = 12.8.
    assert 9 <= sizes.pop() <= 13


def test_multiblock_static_shapes_and_fallback():
  """Every draw has the same shapes (jit), and an impossible context still gives
  a finite, padded answer (the fullest candidate)."""
  with jax.threefry_partitionable(False):
    f = jax.jit(lambda k: masks.multiblock(k, 4, (4, 4), num_targets=2, min_keep=0,
                                           target_scale=(0.3, 0.4)))
    shapes = {jax.tree.map(lambda x: x.shape, f(jax.random.key(s))) for s in range(3)}
  assert len(shapes) == 1


def _coverage(placement, grid=(4, 4), draws=40, **kw):
  """How often each grid token is context / target over `draws` batches of 8."""
  ctx, tgt = np.zeros(grid[0] * grid[1]), np.zeros(grid[0] * grid[1])
  with jax.threefry_partitionable(False):
    f = jax.jit(lambda k: masks.multiblock(k, 8, grid, placement=placement, **kw))
    for s in range(draws):
      m = jax.device_get(f(jax.random.key(s)))
      for i in range(8):
        np.add.at(ctx, m.context[0, i][m.context_valid[0, i]], 1)
        for j in range(m.targets.shape[0]):
          t = m.targets[j, i][m.target_valid[j, i]]
          np.add.at(tgt, t, 1)
          assert not set(t.tolist()) & set(m.context[0, i][m.context_valid[0, i]].tolist())
  return ctx.reshape(grid), tgt.reshape(grid)


def test_multiblock_placement_ijepa_never_reaches_last_row_and_column():
  """The official placement (exclusive corner bound, blocks <= grid - 1): on a
  4 x 4 grid the context is always the top-left 3 x 3 block, nothing ever
  touches row / column 3, and the centre token (1, 1) is always a target."""
  kw = dict(num_targets=1, target_scale=(0.25, 0.3), min_keep=0)
  ctx, tgt = _coverage("ijepa", **kw)
  assert ctx[3].sum() == ctx[:, 3].sum() == tgt[3].sum() == tgt[:, 3].sum() == 0
  assert tgt[1, 1] == 320 and ctx[1, 1] == 0
  assert masks.max_block_area((4, 4), (0.85, 1.0), (1, 1)) == 9


def test_multiblock_placement_uniform_covers_the_whole_grid():
  """`placement="uniform"`: corners over every fitting position and blocks up to
  the grid, so every token is sometimes context and sometimes target, and the
  context is the whole 4 x 4 grid minus the 2 x 2 target (12 tokens)."""
  kw = dict(num_targets=1, target_scale=(0.25, 0.3), min_keep=0)
  ctx, tgt = _coverage("uniform", **kw)
  assert np.all(ctx > 0) and np.all(tgt > 0)
  assert ctx.sum() == 320 * 12 and tgt.sum() == 320 * 4
  # The static context length is N minus the smallest target (12), not the
  # 16 of a whole-grid block: the context never overlaps a target.
  m = masks.multiblock(jax.random.key(0), 2, (4, 4), placement="uniform", **kw)
  assert m.context.shape == (1, 2, 12) and bool(np.all(m.context_valid))
  assert masks.max_block_area((4, 4), (0.85, 1.0), (1, 1), "uniform") == 16
  # The by-hand table: scale 1.0 on 14 x 14 is the whole grid, not 13 x 13.
  ch, cw = masks.block_size_table((14, 14), (0.85, 1.0), (1.0, 1.0), "uniform")
  assert ch[-1] == cw[-1] == 14 and ch[0] == cw[0] == 13     # int(196 * .85) = 166 -> 13


def test_multiblock_config_errors():
  with pytest.raises(ConfigError, match=r"masks.min_keep=10 must be below the smallest target"):
    masks.multiblock(jax.random.key(0), 2, GRID, min_keep=10)
  with pytest.raises(ConfigError, match=r"masks.target_scale=\(0.001, 0.002\) gives target "):
    masks.multiblock(jax.random.key(0), 2, GRID, target_scale=(0.001, 0.002), min_keep=0)
  with pytest.raises(ConfigError, match=r"masks.num_targets=8 .*leaving no context"):
    masks.multiblock(jax.random.key(0), 2, GRID, num_targets=8, min_keep=0)
  with pytest.raises(ConfigError, match=r"masks.context_scale=\(1.2, 1.0\)"):
    masks.multiblock(jax.random.key(0), 2, GRID, context_scale=(1.2, 1.0), min_keep=0)
  with pytest.raises(ConfigError, match=r"config.masks.num_context=0"):
    masks.check_multiblock(GRID, num_targets=4, target_scale=(0.15, 0.2),
                           target_aspect=(0.75, 1.5), num_context=0,
                           context_scale=(0.85, 1.0), context_aspect=(1, 1), min_keep=0,
                           prefix="config.masks")
  with pytest.raises(ConfigError, match="too small"):
    masks.multiblock(jax.random.key(0), 2, (1, 8), min_keep=0)
  with pytest.raises(ConfigError, match=r"masks.placement='paper' must be one of"):
    masks.multiblock(jax.random.key(0), 2, GRID, min_keep=0, placement="paper")


def test_blockwise_ratios_shapes_and_determinism():
  b, grid = 8, (14, 14)
  with jax.threefry_partitionable(False):
    f = jax.jit(lambda k: masks.blockwise(k, b, grid))
    m = np.asarray(f(jax.random.key(0)))
    assert m.shape == (b, 196) and m.dtype == bool
    np.testing.assert_array_equal(m, f(jax.random.key(0)))
    assert not np.array_equal(m, f(jax.random.key(1)))
  counts = np.sort(m.sum(1))
  # Half the images unmasked; the others' counts in the slices of (0.1, 0.5):
  # int(196 r), r in [0.1, 0.2), [0.2, 0.3), [0.3, 0.4), [0.4, 0.5], never above.
  np.testing.assert_array_equal(counts[:4], 0)
  for k, c in enumerate(counts[4:]):
    assert c <= int(196 * (0.2 + 0.1 * k)), counts
  assert counts[-1] > int(196 * 0.3)                 # the blocks do fill the largest slice
  with pytest.raises(ConfigError, match=r"masks.mask_ratio_range=\(0.5, 0.1\)"):
    masks.blockwise(jax.random.key(0), 4, grid, mask_ratio_range=(0.5, 0.1))
  with pytest.raises(ConfigError, match=r"masks.mask_probability=1.5"):
    masks.blockwise(jax.random.key(0), 4, grid, mask_probability=1.5)
