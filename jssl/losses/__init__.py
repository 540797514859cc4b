"""jssl.losses: every major SSL objective as a pure, jit-able, sharding-invariant function.

Conventions (see README.md in this folder for the one-line-per-loss table):
arrays are positional, hyperparameters keyword-only with the paper defaults; learnable
scalars (CLIP logit scale, SigLIP temperature/bias) are positional so `jax.grad` can
take them. Under `jax.jit` on global batch-sharded arrays the loss sees the global batch;
inside `jax.shard_map` pass `axis_name`. Stop-gradients sit where the papers put them
(targets, keys, queues, codes, teacher, center). Bad shapes raise ValueError.

Public API (stable names):
  Contrastive:   ntxent, ntxent_chunked, info_nce, supcon, dcl, dclw
  MoCo:          moco, mocov3, enqueue, QueueState
  NNCLR:         nnclr, nearest_neighbour, NNCLRAux
  TiCo:          tico
  Cosine:        byol, byol_regression, simsiam, negative_cosine
  Redundancy:    barlow_twins, vicreg, VICRegTerms
  Manifold:      mmcr, mmcr_official, MMCRTerms
  Whitening:     wmse
  Clustering:    sinkhorn, swav
  Distillation:  dino
  DINOv2:        koleo, ibot_patch, ibot_patch_dense, sinkhorn_knopp_teacher
  MSN:           msn, pmsn, MSNTerms, power_law_prior
  Image-text:    clip, siglip, siglip_chunked, siglip_ring, clip_ring, filip
  Masked:        mae, simmim, patchify
  Joint-embedding predictive: ijepa
  Metrics:       alignment, uniformity, hypersphere, rankme, effective_rank, feature_std
  Wrappers:      matryoshka
"""
from jssl.losses.chunked import ntxent_chunked, siglip_chunked
from jssl.losses.contrastive import dcl, dclw, info_nce, ntxent, supcon
from jssl.losses.cosine import byol, byol_regression, negative_cosine, simsiam
from jssl.losses.dino import dino
from jssl.losses.dinov2 import ibot_patch, ibot_patch_dense, koleo, sinkhorn_knopp_teacher
from jssl.losses.filip import filip
from jssl.losses.ijepa import ijepa
from jssl.losses.image_text import clip, siglip
from jssl.losses.mae import mae
from jssl.losses.matryoshka import matryoshka
from jssl.losses.mmcr import MMCRTerms, mmcr, mmcr_official
from jssl.losses.metrics import (alignment, effective_rank, feature_std, hypersphere, rankme,
                                 uniformity)
from jssl.losses.msn import MSNTerms, msn, pmsn, power_law_prior
from jssl.losses.moco import QueueState, enqueue, moco, mocov3
from jssl.losses.nnclr import NNCLRAux, nearest_neighbour, nnclr
from jssl.losses.ring import clip_ring, siglip_ring
from jssl.losses.redundancy import VICRegTerms, barlow_twins, vicreg
from jssl.losses.simmim import simmim
from jssl.losses.swav import sinkhorn, swav
from jssl.losses.tico import tico
from jssl.losses.wmse import wmse
# MAE's target reshaping: a layer-neutral array op (the ViT uses it too, and models
# never import losses), kept in the public API as `losses.patchify`.
from jssl.patches import patchify

__all__ = [
    "ntxent", "ntxent_chunked", "info_nce", "supcon", "dcl", "dclw",
    "moco", "mocov3", "enqueue", "QueueState",
    "nnclr", "nearest_neighbour", "NNCLRAux", "tico",
    "byol", "byol_regression", "simsiam", "negative_cosine",
    "barlow_twins", "vicreg", "VICRegTerms",
    "mmcr", "mmcr_official", "MMCRTerms", "wmse",
    "sinkhorn", "swav", "dino",
    "koleo", "ibot_patch", "ibot_patch_dense", "sinkhorn_knopp_teacher",
    "msn", "pmsn", "MSNTerms", "power_law_prior",
    "clip", "siglip", "siglip_chunked", "siglip_ring", "clip_ring", "filip",
    "mae", "simmim", "patchify",
    "ijepa",
    "alignment", "uniformity", "hypersphere", "rankme", "effective_rank", "feature_std",
    "matryoshka",
]
