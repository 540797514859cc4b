"""FILIP token-wise late interaction: float64 parity with the fixture (values
and gradients; padding excluded), and the multi-positive CE at K = 1 is CLIP."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses_testing as lt
from jssl import losses
from jssl.losses.filip import filip_similarities, symmetric_ce

FIXTURE = "filip_c0_b8_n6x5_d16"




def test_filip_parity_float64(x64):
  # The second wave of parity fixtures, next to `lt.parity_dir()`'s.
  path = os.path.join(lt.shared_dir(), "parity", "fixtures_wave2", FIXTURE + ".npz")
  if not os.path.exists(path):
    pytest.skip(f"parity fixture {FIXTURE} not found")
  with np.load(path, allow_pickle=False) as d:
    a = {k: d[k] for k in d.files if k != "meta_json"}
  img, txt = jnp.asarray(a["img"]), jnp.asarray(a["txt"])
  mask = jnp.asarray(a["txt_mask"])
  s_img, s_txt = filip_similarities(img, txt, mask)
  lt.assert_close(s_img, a["s_img"], name="s_img")
  lt.assert_close(s_txt, a["s_txt"], name="s_txt")
  value, grads = jax.value_and_grad(losses.filip, argnums=(0, 1, 3))(
      img, txt, mask, jnp.asarray(a["logit_scale"]))
  lt.assert_close(value, a["loss"], name="loss")
  for g, name in zip(grads, ("grad_img", "grad_txt", "grad_logit_scale")):
    lt.assert_close(g, a[name], name=name)
  # Padding tokens (junk values in the fixture) get exactly zero gradient.
  assert np.all(np.asarray(grads[1])[~np.asarray(mask)] == 0)


def test_symmetric_ce_k1_is_clip_and_k2_matches_a_loop():
  rng = np.random.default_rng(0)
  img = rng.normal(size=(5, 4)).astype(np.float32)
  txt = rng.normal(size=(5, 4)).astype(np.float32)
  un = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  logits = (np.exp(2.0) * un(img) @ un(txt).T).astype(np.float32)
  np.testing.assert_allclose(symmetric_ce(logits, logits, 1), losses.clip(img, txt, 2.0),
                             rtol=1e-6)
  # K = 2: 3 images, 6 texts; text t belongs to image t // 2.
  lg = rng.normal(size=(3, 6)).astype(np.float32)
  lse = lambda v: np.log(np.sum(np.exp(v)))  # noqa: E731
  i2t = np.mean([lse(lg[i]) - np.mean(lg[i, 2 * i:2 * i + 2]) for i in range(3)])
  t2i = np.mean([lse(lg[:, t]) - lg[t // 2, t] for t in range(6)])
  np.testing.assert_allclose(symmetric_ce(lg, lg, 2), 0.5 * (i2t + t2i), rtol=1e-6)
