"""SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training",
ICCV; google-research/big_vision `trainers/proj/image_text/siglip.py`).

An image tower and a text tower (`jssl.methods.dual`) trained with the
pairwise sigmoid loss (Algorithm 1; `jssl.losses.siglip`): every image-text
pair of the global batch is a binary classification, positive for matching
pairs, with logits exp(t') x cos + b; t' (init log 10,
`config.loss.t_prime_init`) and b (init -10, `config.loss.bias_init`) are
learned. Sum over the B x B pairs divided by B.

`config.loss.impl` (Sec. 3.3, "efficient chunked implementation"):
  'global'   `losses.siglip` on the global arrays (XLA inserts the gathers;
             the B x B logits exist, sharded).
  'chunked'  `losses.siglip_chunked` under `jax.shard_map` over the mesh's
             data axis: each device scores its images against the gathered
             texts `chunk_size` rows at a time (`config.loss.chunk_size`), so
             no device holds the global B x B logits. Equal to 'global' to
             float tolerance (tested).
  'ring'     `jssl.losses.ring.siglip_ring` under shard_map (texts passed
             around the devices, as the paper's Fig. 1).
Built without a mesh (notebooks), every impl computes 'global'.

K captions per image (`config.data.captions_per_image`): z = +1 for all K
captions of the image (`dual` module docstring).

Config: `config.model`, `config.text`, `config.embed_dim`, `config.loss` =
{name 'siglip', impl, chunk_size, t_prime_init, bias_init}, views.num_views 1.
Parameters: see `jssl.methods.dual` (`params['t_prime']`, `params['bias']`).
"""
from __future__ import annotations

from jssl import errors
from jssl.methods import dual
from jssl.methods.base import Method


def make(config, length=None, *, mesh=None) -> Method:
  del length
  name = config.loss.get("name", "siglip")
  if name != "siglip":
    raise errors.ConfigError(f"config.loss.name={name!r}: the siglip method trains with "
                             "the 'siglip' loss (config.method='clip' for the softmax one)")
  return dual.make_trainable(config, mesh)
