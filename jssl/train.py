"""The pretraining loop, top to bottom.

mesh -> data -> method/optimiser -> state (created sharded) -> restore ->
jitted step -> periodic log / checkpoint / eval -> final eval (pretrained and
random-init encoder) -> export -> results.json.

The loop only moves arrays and logs them; all maths lives in the method, the
step and the probes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable, Iterator

import jax
import numpy as np

from jssl import checkpoint as ckpt_lib
from jssl import export as export_lib
from jssl import methods
from jssl import models
from jssl import plots as plots_lib
from jssl import schedules
from jssl import sharding as shd
from jssl import step as step_lib
from jssl import workdir as workdir_lib
from jssl.data import views as views_lib
from jssl.evals import diagnostics as diag_lib
from jssl.evals import features as features_lib
from jssl.evals import knn as knn_lib
from jssl.evals import linear_probe as linear_lib
from jssl.metrics_log import MetricsLog


@dataclasses.dataclass
class Datasets:
  """What the loop needs from the input pipeline."""
  train_batches: Callable[[int], Iterator[dict]]   # start_step -> host batches
  eval_batches: Callable[[str], Iterator[dict]]    # split -> padded host batches
  num_train: int
  num_classes: int
  batch_spec: dict          # global-batch jax.ShapeDtypeStruct pytree
  image_shape: tuple        # raw eval image shape (H, W, C)


def build_datasets(config, mesh) -> Datasets:
  """Dispatches on `config.data.source` ('arrays' by name, or 'tfds')."""
  dc = config.data
  per_process = shd.check_global_batch(config.batch_size, mesh)
  eval_per_process = shd.check_global_batch(config.eval.batch_size, mesh)
  num_views = config.views.num_views
  if dc.source == "arrays":
    from jssl.data import digits, sources  # pylint: disable=import-outside-toplevel
    arrays = digits.load_arrays(dc.name, **dict(dc.get("kwargs", {})))
    train = sources.ArraySource(arrays.train_images, arrays.train_labels)
    test = sources.ArraySource(arrays.test_images, arrays.test_labels)
    splits = {"train": train, "test": test}
    image_shape = tuple(arrays.train_images.shape[1:])

    def train_batches(start_step):
      return train.train_batches(per_process, seed=config.seed,
                                 start_step=start_step)

    def eval_batches(split):
      return splits[split].eval_batches(eval_per_process)

    spec = {"image": jax.ShapeDtypeStruct((config.batch_size, *image_shape),
                                          np.uint8),
            "label": jax.ShapeDtypeStruct((config.batch_size,), np.int32)}
    return Datasets(train_batches, eval_batches, len(arrays.train_labels),
                    int(arrays.num_classes), spec, image_shape)
  if dc.source == "tfds":
    from jssl.data import tfds_source  # pylint: disable=import-outside-toplevel
    num_train, num_classes, channels = _tfds_info(dc)
    size, vc = config.views.image_size, config.views
    # Multi-crop: the local crops are taken on host too ('local_views').
    local = views_lib.local_crops(vc)

    def train_batches(start_step):
      return tfds_source.tfds_train_batches(
          dc.name, dc.train_split, data_dir=dc.data_dir,
          batch_size_per_process=per_process, image_size=size,
          num_views=num_views, crop_on_host=True, crop_scale=vc.crop.scale,
          crop_ratio=vc.crop.ratio, num_local_views=local.num,
          local_image_size=local.image_size, local_crop_scale=local.scale,
          seed=config.seed, start_step=start_step)

    def eval_batches(split):
      return tfds_source.tfds_eval_batches(
          dc.name, dc[f"{split}_split"], data_dir=dc.data_dir,
          batch_size_per_process=eval_per_process,
          image_size=config.eval.image_size,
          crop_fraction=config.eval.crop_fraction)

    spec = {"views": jax.ShapeDtypeStruct(
        (config.batch_size, num_views, size, size, channels), np.uint8),
            "label": jax.ShapeDtypeStruct((config.batch_size,), np.int32)}
    if local.num:
      spec["local_views"] = jax.ShapeDtypeStruct(
          (config.batch_size, local.num, local.image_size, local.image_size,
           channels), np.uint8)
    return Datasets(train_batches, eval_batches, num_train, num_classes, spec,
                    (config.eval.image_size, config.eval.image_size, channels))
  raise ValueError(
      f"config.data.source={dc.source!r}: expected 'arrays' or 'tfds'")


def _tfds_info(dc) -> tuple[int, int, int]:
  """(train examples, classes, channels) of a prepared TFDS dataset."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from jssl.data import tfds_source  # pylint: disable=import-outside-toplevel
  try:
    builder = tfds.builder(dc.name, data_dir=dc.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"config.data.name={dc.name!r} is not a TFDS dataset: "
                     f"{str(e).splitlines()[0]}") from None
  if not builder.is_prepared():
    raise tfds_source._not_prepared(dc.name, dc.data_dir)  # pylint: disable=protected-access
  info = builder.info
  return (info.splits[dc.train_split].num_examples,
          info.features["label"].num_classes, info.features["image"].shape[-1])


def preprocess_config(config, channels: int) -> dict:
  return {"size": int(config.eval.image_size),
          "mean": [float(m) for m in config.views.mean],
          "std": [float(s) for s in config.views.std],
          "crop_fraction": float(config.eval.get("crop_fraction", 1.0)),
          "channels": int(channels)}


def total_steps(config, num_train: int) -> tuple[int, float]:
  steps_per_epoch = num_train / config.batch_size
  if config.total_steps > 0:
    return int(config.total_steps), steps_per_epoch
  return int(math.ceil(config.total_epochs * steps_per_epoch)), steps_per_epoch


def evaluate(method, state, data: Datasets, mesh, config, *,
             return_test_features: bool = False):
  """Linear probe and weighted kNN on frozen `pre_logits` features.

  Returns the metrics dict, or `(metrics, (test_features, test_labels))`
  with `return_test_features` (host numpy, for plots).
  """
  pp = preprocess_config(config, data.image_shape[-1])
  # TFDS eval batches arrive resized and centre-cropped on host
  # (`tfds_eval_batches`); cropping them again would keep crop_fraction^2.
  crop = 1.0 if config.data.source == "tfds" else pp["crop_fraction"]

  encode = features_lib.preprocessed_apply(method.encoder, pp, crop_fraction=crop)
  fn = features_lib.make_feature_fn(encode, mesh)
  variables = method.encoder_variables(state.params, state.method_state)
  t0 = time.time()
  tr_x, tr_y = features_lib.extract(fn, variables, data.eval_batches("train"), mesh)
  te_x, te_y = features_lib.extract(fn, variables, data.eval_batches("test"), mesh)
  t_feat = time.time() - t0
  ec = config.eval
  knn = knn_lib.knn_accuracy(tr_x, tr_y, te_x, te_y,
                             num_classes=data.num_classes, k=ec.knn_k,
                             temperature=ec.knn_temperature)
  lin = linear_lib.linear_probe(tr_x, tr_y, te_x, te_y,
                                num_classes=data.num_classes)
  res = {"linear_top1": float(lin["top1"]), "knn_top1": float(knn["top1"]),
         "linear_l2": float(lin["l2"]), "feature_dim": int(tr_x.shape[1]),
         "eval_seconds": round(time.time() - t0, 2),
         "feature_seconds": round(t_feat, 2)}
  return (res, (te_x, te_y)) if return_test_features else res


def run(config, workdir: str) -> dict:
  """Pretrains, evaluates and exports; returns the results dict.

  Holds the workdir lock (`jssl.workdir`) for the whole run: a second run on
  the same workdir raises WorkdirError naming this one.
  """
  with workdir_lib.hold(workdir):
    return _run(config, workdir)


def _run(config, workdir: str) -> dict:
  if config.eval.get("plots", "") not in ("",) + plots_lib.PROJECTIONS:
    raise ValueError(f"config.eval.plots={config.eval.plots!r}: one of "
                     f"{plots_lib.PROJECTIONS} or '' (no plots)")
  ckpt_lib.write_or_check_config(workdir, config)
  mesh = shd.make_mesh(config.mesh)
  log = MetricsLog(workdir)
  data = build_datasets(config, mesh)
  steps, steps_per_epoch = total_steps(config, data.num_train)
  method = methods.make(config, methods.TrainLength(steps, steps_per_epoch))
  tx, schedule = schedules.make_optimizer(
      config.optimizer, global_batch=config.batch_size, total_steps=steps,
      steps_per_epoch=steps_per_epoch, frozen=method.frozen)
  view_fn = views_lib.make_view_fn(config.views, config.views.num_views)
  probe = step_lib.make_online_probe(config.get("online_probe"),
                                     num_classes=data.num_classes,
                                     total_steps=steps)
  init_fn, state_sh = step_lib.make_init(method, tx, view_fn, mesh,
                                         data.batch_spec, seed=config.seed,
                                         probe=probe)
  diag = step_lib.make_diagnostics(config.get("diagnostics"),
                                   every=config.log_every_steps, total_steps=steps,
                                   num_classes=data.num_classes)
  train_step = step_lib.make_train_step(method, tx, view_fn, schedule, mesh,
                                        state_sh, probe=probe, diagnostics=diag)
  ckpt = ckpt_lib.Checkpointer(workdir, every_steps=config.checkpoint.every_steps,
                               keep=config.checkpoint.keep,
                               use_async=config.checkpoint.use_async)
  abstract = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      jax.eval_shape(init_fn), state_sh)
  state = ckpt.restore_latest(abstract)
  if state is None:
    state = init_fn()
  start = int(state.step)
  log.info(f"{config.method}: {steps} steps ({steps / steps_per_epoch:.1f} "
           f"epochs) of global batch {config.batch_size} on "
           f"{jax.device_count()} {jax.devices()[0].platform} device(s), "
           f"{jax.process_count()} process(es); "
           + (f"resuming from step {start}" if start else "starting fresh"))

  batches = shd.prefetch_to_mesh(data.train_batches(start), mesh,
                                 size=config.prefetch)
  t_start, t_compile = time.time(), None
  meter = _Throughput()
  stop = steps if config.stop_at_step < 0 else min(steps, config.stop_at_step)
  for step in range(start, stop):
    batch = next(batches)
    t0 = time.time()
    state, metrics = train_step(state, batch)
    done = step + 1
    if t_compile is None:
      jax.block_until_ready(metrics)
      t_compile = time.time() - t0
      log.info(f"first step (compile + run) took {t_compile:.1f}s")
      meter.restart()
    else:
      meter.tick()
    if done % config.log_every_steps == 0 or done == steps:
      metrics = jax.device_get(metrics)  # waits for the step: timing is real
      steps_per_s = meter.lap()
      eta = (steps - done) / steps_per_s if steps_per_s else float("nan")
      ips = config.batch_size * steps_per_s
      # Diagnostics are NaN on the steps they skip: not logged there.
      row = {k: float(v) for k, v in metrics.items()
             if not (k.startswith("diag/") and np.isnan(v))}
      log.write(done, {**row, "images_per_sec": ips,
                       "epoch": done / steps_per_epoch})
      online, rankme = row.get("online_probe/top1"), row.get("diag/rankme")
      log.info(f"step {done}/{steps} | loss {row['loss']:.4f} | "
               + (f"online probe {online:.3f} | " if online is not None else "")
               + (f"RankMe {rankme:.1f} | " if rankme is not None else "")
               + f"lr {row['lr']:.3g} | {ips:.0f} img/s | "
               f"ETA {_fmt_secs(eta)}")
      ratio = row.get("diag/feature_std_ratio")
      if ratio is not None and diag_lib.collapse_ratio_warning(
          ratio, models.feature_dim(config.model)):
        log.info(f"WARNING step {done}: representation collapse? feature std "
                 f"ratio {ratio:.3g} < {diag_lib.COLLAPSE_THRESHOLD} (about 1 "
                 "when features spread over the sphere; jssl.evals.diagnostics)")
    if done % config.checkpoint.every_steps == 0 or done == steps:
      # Only on save steps: Orbax's first save() call costs seconds even for
      # steps it skips. Checkpointing is not counted as training time.
      jax.block_until_ready(state.step)
      meter.lap()
      ckpt.save(done, state, force=(done == steps))
      meter.restart()
    if (config.eval_every_steps and done % config.eval_every_steps == 0
        and done != steps):
      jax.block_until_ready(state.step)
      meter.lap()
      res = evaluate(method, state, data, mesh, config)
      log.write(done, {f"eval/{k}": v for k, v in res.items()})
      log.info(f"eval at step {done}: linear {res['linear_top1']:.4f} "
               f"kNN {res['knn_top1']:.4f}")
      meter.restart()
  batches.close()  # ends the prefetch thread
  if stop < steps:  # Planned stop (time-limited job): save and leave.
    if ckpt.latest_step() != stop:
      ckpt.save(stop, state, force=True)
    ckpt.close()
    log.info(f"stopped at step {stop} (stop_at_step); re-run the same command "
             "to resume")
    log.close()
    return {"stopped_at": stop}
  ckpt.close()
  train_seconds = time.time() - t_start

  results = {"method": config.method, "steps": steps,
             "train_seconds": round(train_seconds, 1),
             "compile_seconds": round(t_compile or 0.0, 1),
             "images_per_sec": round(config.batch_size * meter.mean_rate, 1)
                               if meter.mean_rate else None}
  test_features = (None, None)
  if config.eval.at_end:
    res, test_features = evaluate(method, state, data, mesh, config,
                                  return_test_features=True)
    # The same encoder at its initialisation (same seed): the baseline a
    # pretrained encoder must beat.
    rnd = evaluate(method, init_fn(), data, mesh, config)
    results.update({"pretrained": res, "random_init": rnd})
    log.write(steps, {f"final/{k}": v for k, v in res.items()}
              | {f"random_init/{k}": v for k, v in rnd.items()})

  if config.export.enabled:
    export_lib.export_encoder(
        os.path.join(workdir, "export"),
        variables=method.encoder_variables(state.params, state.method_state),
        model_config=ckpt_lib.config_to_dict(config)["model"],
        preprocess=preprocess_config(config, data.image_shape[-1]),
        provenance={"method": config.method, "step": steps,
                    "workdir": os.path.abspath(workdir)})
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    if config.eval.get("plots", ""):  # metrics.jsonl is flushed per row
      written = plots_lib.write_run_plots(workdir, *test_features,
                                          method=config.eval.plots)
      if written:
        log.info(f"plots: {', '.join(written)}")
  if config.eval.at_end:
    log.info(
        f"done: linear top-1 {res['linear_top1']:.4f} (random init "
        f"{rnd['linear_top1']:.4f}) | kNN top-1 {res['knn_top1']:.4f} (random "
        f"init {rnd['knn_top1']:.4f}) | results in "
        f"{os.path.join(workdir, 'results.json')}")
  log.close()
  return results


class _Throughput:
  """Steps per second of training only: compilation, checkpoint writes and
  evaluations happen between `lap()` and `restart()` and are not counted."""

  def __init__(self):
    self.t, self.n, self.total_steps, self.total_secs = time.time(), 0, 0, 0.0

  def tick(self):
    self.n += 1

  def lap(self) -> float:
    """Closes the window (the caller has waited for the device); steps/s."""
    dt = time.time() - self.t
    rate = self.n / dt if self.n and dt > 0 else float("nan")
    if self.n:
      self.total_steps, self.total_secs = self.total_steps + self.n, self.total_secs + dt
    self.restart()
    return rate

  def restart(self):
    self.t, self.n = time.time(), 0

  @property
  def mean_rate(self) -> float | None:
    return self.total_steps / self.total_secs if self.total_secs else None


def _fmt_secs(s: float) -> str:
  if not np.isfinite(s):
    return "?"
  s = int(s)
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
