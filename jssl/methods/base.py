"""The contract every SSL method implements.

A method is a factory of pure functions (optax's `GradientTransformation`
shape; BYOL's experiment state): nothing in it holds arrays, so the step can
jit it, shard it and Orbax can save what it returns.

Shapes: views are a tuple of V arrays `[B, H, W, C]` (float, normalised); the
resolution may differ between views (multi-crop).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn


# Key of `loss`'s metrics holding `[B, D]` encoder features of the first view
# (train mode, the pass the loss made anyway) for the online linear probe; the
# step pops it (stop-gradient) and never logs it.
PROBE_FEATURES = "probe_features"


class TrainLength(NamedTuple):
  """How long the run is, for methods whose schedules depend on it
  (BYOL's momentum, DINO's teacher temperature, SwAV's prototype freeze)."""
  total_steps: int
  steps_per_epoch: float


def require_length(length: TrainLength | None, what: str) -> TrainLength:
  """`length`, or a clear error when a method needing it was built without."""
  if length is None:
    raise ValueError(
        f"{what} depends on the run length: build the method with "
        "methods.make(config, length=TrainLength(total_steps, steps_per_epoch))")
  if length.total_steps <= 0 or length.steps_per_epoch <= 0:
    raise ValueError(f"{what}: invalid run length {length}")
  return length


class DualEncoder(NamedTuple):
  """What an image-text method (CLIP, SigLIP, LiT) adds to `Method` (`dual`).

  variables(params, method_state) -> pytree
      Everything the two embedding functions need (image tower, text tower,
      projections, temperature/bias): what the dual-encoder export keeps.
  embed_images(variables, images) -> [B, D] float32, L2-normalised
      Eval-mode image embeddings of preprocessed images `[B, H, W, C]`
      (normalised like the views).
  embed_texts(variables, tokens) -> [B, D] float32, L2-normalised
      Eval-mode text embeddings of token ids `[B, L]` int32 (padded with 0,
      each row ending in a non-zero EOS; `jssl.text.tokenizers`).
  """
  variables: Callable[..., Any]
  embed_images: Callable[..., Any]
  embed_texts: Callable[..., Any]


class Method(NamedTuple):
  """Pure functions of one SSL method.

  init(key, views) -> (params, method_state)
      `method_state` holds the non-trained state (batch-norm statistics under
      `'batch_stats'`, EMA teachers, queues, centers).
  loss(params, method_state, views, batch, key, step)
      -> (loss, (new_method_state, metrics))
      Differentiated w.r.t. `params` only. `batch` is the raw global batch
      (labels for supervised variants and online probes). `metrics` should
      include `PROBE_FEATURES`: the encoder's `pre_logits` of the first view.
  update_state(params, method_state, step) -> method_state
      Runs after the optimiser update (EMA teachers, prototype
      normalisation); identity for SimCLR.
  encoder: the backbone module (`apply(vars, x, train=False)` returns a dict
      of named features, `'pre_logits'` `[B, D]` among them).
  encoder_variables(params, method_state) -> {'params', 'batch_stats'}
      The variables of the encoder used for evaluation and export (the EMA
      teacher for methods that evaluate it).
  frozen: `((param_path_prefix, until_step), ...)`: parameters whose updates
      are zeroed before `until_step` (DINO's last layer and SwAV's
      prototypes in the first epoch); see `jssl.schedules.freeze`.
  constant_lr: parameter path prefixes that keep the peak learning rate for
      the whole run instead of the schedule (SimSiam's fixed predictor lr);
      see `jssl.schedules.scale_by_grouped_lr`.
  project: `params -> params` applied right after each optimiser update
      (CLIP clamps its logit scale there, as openai's training code does in
      place); None: nothing.
  dual: image-text methods only (`DualEncoder`); None for image methods.
      Their `batch` carries `'text'` token ids `[B, K, L]` (K captions per
      image) next to `'image'`.
  """
  init: Callable[..., Any]
  loss: Callable[..., Any]
  update_state: Callable[..., Any]
  encoder: nn.Module
  encoder_variables: Callable[..., Any]
  frozen: tuple = ()
  constant_lr: tuple = ()
  dual: Optional["DualEncoder"] = None
  project: Optional[Callable[..., Any]] = None

  def encode(self, params, method_state, images):
    """Eval-mode features of preprocessed images `[B, H, W, C]`."""
    return self.encoder.apply(self.encoder_variables(params, method_state),
                              images, train=False)


def keep_state(params, method_state, step):
  """`update_state` of methods with nothing to update after the optimiser
  step (SimCLR, Barlow Twins, VICReg, SimSiam, SupCon, SwAV)."""
  del params, step
  return method_state


def trunk_variables(params: dict, method_state: dict) -> dict:
  """`encoder_variables` of methods that evaluate the trained encoder at
  `params['encoder']` (all but the teacher-evaluated ones): its parameters
  and, for a batch-norm network, its running statistics (a ViT has none)."""
  variables = {"params": params["encoder"]}
  stats = method_state.get("batch_stats", {})
  if "encoder" in stats:
    variables["batch_stats"] = stats["encoder"]
  return variables
