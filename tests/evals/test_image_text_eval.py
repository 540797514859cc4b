"""`jssl.evals.image_text`: the sharded embedding pass and caption flattening."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import sharding as shd
from jssl.evals import image_text


@pytest.mark.parametrize("n", [1, 7, 16, 21])
def test_embed_rows_equals_one_unsharded_call(n):
  mesh = shd.make_mesh()
  rows = np.arange(n * 3, dtype=np.int32).reshape(n, 3)
  w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
  fn = jax.jit(lambda v, x: x.astype(jnp.float32) @ v,
               in_shardings=(shd.replicated(mesh), shd.data_sharding(mesh)),
               out_shardings=shd.data_sharding(mesh))
  got = image_text.embed_rows(fn, w, rows, mesh, batch_size=8)
  np.testing.assert_allclose(got, rows.astype(np.float32) @ np.asarray(w), rtol=1e-6)
  assert got.shape == (n, 4) and got.dtype == np.float32


def test_embed_rows_refuses_an_empty_set():
  with pytest.raises(ValueError, match="empty"):
    image_text.embed_rows(lambda v, x: x, None, np.zeros((0, 3)), shd.make_mesh(),
                          batch_size=8)


def test_flatten_captions_keeps_each_captions_images_and_merges_copies():
  texts, pairs = image_text.flatten_captions([["a", "b"], [], ["c", "a", "c"]])
  assert texts == ["a", "b", "c"]
  assert pairs.tolist() == [[0, 0], [0, 1], [2, 2], [2, 0]]
  texts, pairs = image_text.flatten_captions(None)
  assert texts == [] and pairs.shape == (0, 2)


def test_summary_names_the_baseline():
  line = image_text.summary({"zeroshot_top1": 0.5, "i2t_R@1": 0.25},
                            {"zeroshot_top1": 0.1, "i2t_R@1": 0.05})
  assert line == ("zeroshot_top1 0.5000 (random init 0.1000) | "
                  "i2t_R@1 0.2500 (random init 0.0500)")
