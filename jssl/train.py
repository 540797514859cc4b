"""The pretraining loop, top to bottom.

mesh -> data -> method/optimiser -> state (created sharded) -> restore ->
jitted step -> periodic log / checkpoint / eval -> final eval (pretrained and
random-init encoder) -> export -> results.json.

The loop only moves arrays and logs them; all maths lives in the method, the
step and the probes.
"""
from __future__ import annotations

import contextlib
import json
import math
import time

import jax
import numpy as np

from jssl import checkpoint as ckpt_lib
from jssl import config_check
from jssl import export as export_lib
from jssl import faults
from jssl import methods
from jssl import models
from jssl import plots as plots_lib
from jssl import schedules
from jssl import sharding as shd
from jssl import step as step_lib
from jssl import storage
from jssl import workdir as workdir_lib
from jssl.data import device_views as views_lib
from jssl.data.pipeline import Datasets, build_datasets  # noqa: F401 (re-exported)
from jssl.evals import diagnostics as diag_lib
from jssl.evals import features as features_lib
from jssl.evals import image_text as image_text_lib
from jssl.evals import knn as knn_lib
from jssl.evals import linear_probe as linear_lib
from jssl.evals import paired as paired_lib
from jssl.metrics_log import MetricsLog


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
             return_details: bool = False):
  """Linear probe and weighted kNN on frozen features: kNN on `pre_logits`,
  the linear probe on `config.eval.linear_feature` (`pre_logits`, or a ViT's
  `cls_last4`), both from one encoder pass.

  Returns the metrics dict, or `(metrics, details)` with `return_details`:
  host numpy `test_features` (`pre_logits`) and `test_labels` for plots, and
  `linear_correct` / `knn_correct`, `[M]` bools per test image for the paired
  test against the random-init encoder (`jssl.evals.paired`).
  """
  pp = preprocess_config(config, data.image_shape[-1])
  # TFDS, folder and npz eval batches arrive resized and centre-cropped on
  # host; cropping them again would keep crop_fraction^2.
  crop = 1.0 if data.eval_cropped_on_host else pp["crop_fraction"]

  encode = features_lib.preprocessed_apply(method.encoder, pp, crop_fraction=crop)
  ec = config.eval
  linear_feature = ec.get("linear_feature", "pre_logits")
  fn = features_lib.make_feature_fn(encode, mesh,
                                    feature=tuple(dict.fromkeys(("pre_logits", linear_feature))))
  variables = method.encoder_variables(state.params, state.method_state)
  t0 = time.time()
  tr, tr_y = features_lib.extract(fn, variables, data.eval_batches("train"), mesh)
  te, te_y = features_lib.extract(fn, variables, data.eval_batches("test"), mesh)
  t_feat = time.time() - t0
  tr_x, te_x = tr["pre_logits"], te["pre_logits"]
  knn = knn_lib.knn_accuracy(tr_x, tr_y, te_x, te_y,
                             num_classes=data.probe_classes, k=ec.knn_k,
                             temperature=ec.knn_temperature, per_example=True)
  lin = linear_lib.linear_probe(tr[linear_feature], tr_y, te[linear_feature], te_y,
                                num_classes=data.probe_classes, per_example=True)
  res = {"linear_top1": float(lin["top1"]), "knn_top1": float(knn["top1"]),
         "linear_l2": float(lin["l2"]), "feature_dim": int(tr_x.shape[1]),
         **({"linear_feature": linear_feature,
             "linear_feature_dim": int(tr[linear_feature].shape[1])}
            if linear_feature != "pre_logits" else {}),
         "eval_seconds": round(time.time() - t0, 2),
         "feature_seconds": round(t_feat, 2)}
  if not return_details:
    return res
  return res, {"test_features": te_x, "test_labels": te_y,
               "linear_correct": lin["correct"], "knn_correct": knn["correct"]}


def run(config, workdir: str) -> dict:
  """Pretrains, evaluates and exports; returns the results dict.

  Holds the workdir lock (`jssl.workdir`) for the whole run: a second run on
  the same workdir raises WorkdirError naming this one.
  """
  config_check.validate(config)  # bad counts / rates fail before any work
  # A local path or a URL (gs://bucket/run): checked before anything writes.
  workdir = storage.path(workdir)
  with workdir_lib.hold(workdir):
    return _run(config, workdir)


def _run(config, workdir) -> dict:
  mesh = shd.make_mesh(config.mesh)
  log = MetricsLog(workdir, logging=config.get("logging"),
                   run_config=ckpt_lib.config_to_dict(config))
  # Image-text runs (CLIP, SigLIP, LiT): captions are tokenised on host.
  tokenizer = _tokenizer(config)
  data = build_datasets(config, mesh, tokenizer=tokenizer)
  steps, steps_per_epoch = total_steps(config, data.num_train)
  method = methods.make(config, methods.TrainLength(steps, steps_per_epoch), mesh=mesh)
  tx, schedule = schedules.make_optimizer(
      config.optimizer, global_batch=config.batch_size, total_steps=steps,
      steps_per_epoch=steps_per_epoch, frozen=method.frozen, model=config.model,
      constant_lr=method.constant_lr)
  view_fn = views_lib.make_view_fn(config.views, config.views.num_views)
  # Unlabelled training data: no online probe (nothing to fit it to).
  probe = step_lib.make_online_probe(
      config.get("online_probe") if data.num_classes else None,
      num_classes=data.num_classes, total_steps=steps)
  if data.probes_skipped or not data.num_classes:
    log.info("probes skipped: " + "; ".join(
        ([] if data.num_classes else ["online probe: the training data has no labels"])
        + ([f"end-of-run probes: {data.probes_skipped}"] if data.probes_skipped else [])))
  init_fn, state_sh = step_lib.make_init(method, tx, view_fn, mesh,
                                         data.batch_spec, seed=config.seed,
                                         probe=probe)
  diag = step_lib.make_diagnostics(config.get("diagnostics"),
                                   every=config.log_every_steps, total_steps=steps,
                                   num_classes=data.num_classes)
  train_step = step_lib.make_train_step(method, tx, view_fn, schedule, mesh,
                                        state_sh, probe=probe, diagnostics=diag)
  if method.dual is not None:
    evaluate_image_text = image_text_evaluator(method, data, mesh, config, tokenizer)
  # Only now, once the data, method and step are built: a run that fails
  # before this point (a bad data path, a batch the devices cannot split)
  # leaves no config.json to block its corrected re-run.
  ckpt_lib.write_or_check_config(workdir, config)
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
  log.start(start)  # drops metrics rows past the restored step
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
  guard = faults.FiniteGuard(workdir, last_good=start or None)

  def save(done, force=False):
    # Never a state computed after a non-finite step (jssl.faults).
    guard.check()
    if ckpt.save(done, state, force=force):
      guard.last_good = done

  with faults.StopSignal() as signals, _closing_on_error(batches, ckpt, log):
    for step in range(start, stop):
      batch = next(batches)
      t0 = time.time()
      state, metrics = train_step(state, batch)
      done = step + 1
      ckpt.raise_if_save_failed()  # a failed async save stops the run here
      guard.add(done, metrics.pop("finite"))
      if t_compile is None:
        jax.block_until_ready(metrics)
        t_compile = time.time() - t0
        log.info(f"first step (compile + run) took {t_compile:.1f}s")
        meter.restart()
      else:
        meter.tick()
      if done % config.log_every_steps == 0 or done == steps:
        metrics = jax.device_get(metrics)  # waits for the step: timing is real
        guard.check(metrics)
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
        save(done, force=(done == steps))
        meter.restart()
      if (config.eval_every_steps and done % config.eval_every_steps == 0
          and done != steps and not data.probes_skipped):
        jax.block_until_ready(state.step)
        guard.check()
        meter.lap()
        if method.dual is not None:
          res = evaluate_image_text(state)
          log.info(f"eval at step {done}: {image_text_lib.summary(res)}")
        else:
          res = evaluate(method, state, data, mesh, config)
          log.info(f"eval at step {done}: linear {res['linear_top1']:.4f} "
                   f"kNN {res['knn_top1']:.4f}")
        log.write(done, {f"eval/{k}": v for k, v in res.items()})
        meter.restart()
      # Called after every step with the same ids on every host (jssl.faults).
      if signals.should_stop(done):
        stop = done
        break
    batches.close()  # ends the prefetch thread
    if stop < steps or signals.received:  # preempted, or a planned stop
      if ckpt.latest_step() != stop:
        save(stop, force=True)
      ckpt.close()  # waits until the checkpoint is committed
      result = {"stopped_at": stop}
      if signals.received:
        result["preempted"] = signals.received
        why = f"{signals.received}: saved checkpoint at step {stop} in {ckpt.directory}"
      else:
        why = f"stopped at step {stop} (stop_at_step)"
      log.info(f"{why}; re-run the same command to resume")
      log.close()
      return result
    guard.check()
    ckpt.close()
  train_seconds = time.time() - t_start

  results = {"method": config.method, "steps": steps,
             "train_seconds": round(train_seconds, 1),
             "compile_seconds": round(t_compile or 0.0, 1),
             "images_per_sec": round(config.batch_size * meter.mean_rate, 1)
                               if meter.mean_rate else None}
  test_features = (None, None)
  if data.probes_skipped:
    results["probes"] = f"skipped: {data.probes_skipped}"
  elif config.eval.at_end and method.dual is not None:
    res = evaluate_image_text(state)
    rnd = evaluate_image_text(init_fn())
    results.update({"pretrained": res, "random_init": rnd})
    log.write(steps, {f"final/{k}": v for k, v in res.items()}
              | {f"random_init/{k}": v for k, v in rnd.items()})
  elif config.eval.at_end:
    res, details = evaluate(method, state, data, mesh, config, return_details=True)
    test_features = (details["test_features"], details["test_labels"])
    # The same encoder at its initialisation (same seed): the baseline a
    # pretrained encoder must beat, judged per test image (paired test).
    rnd, rnd_details = evaluate(method, init_fn(), data, mesh, config, return_details=True)
    results.update({"pretrained": res, "random_init": rnd,
                    "vs_random_init": {
                        probe: paired_lib.compare(details[f"{probe}_correct"],
                                                  rnd_details[f"{probe}_correct"])
                        for probe in ("linear", "knn")}})
    log.write(steps, {f"final/{k}": v for k, v in res.items()}
              | {f"random_init/{k}": v for k, v in rnd.items()})

  if config.export.enabled:
    export_lib.export_encoder(
        workdir / "export",
        variables=method.encoder_variables(state.params, state.method_state),
        model_config=ckpt_lib.config_to_dict(config)["model"],
        preprocess=preprocess_config(config, data.image_shape[-1]),
        provenance={"method": config.method, "step": steps,
                    "workdir": storage.display(workdir)},
        linear_feature=config.eval.get("linear_feature", "pre_logits"))
    if method.dual is not None:
      export_lib.export_dual(
          workdir / "export",
          variables=method.dual.variables(state.params, state.method_state),
          config=ckpt_lib.config_to_dict(config),
          preprocess=preprocess_config(config, data.image_shape[-1]),
          tokenizer=tokenizer,
          provenance={"method": config.method, "step": steps,
                      "workdir": storage.display(workdir)})
  if jax.process_index() == 0:
    storage.write_atomic(workdir / "results.json", json.dumps(results, indent=2))
    if config.eval.get("plots", ""):
      log.flush()  # the plots read metrics.jsonl (remote files upload lazily)
      written = plots_lib.write_run_plots(workdir, *test_features,
                                          method=config.eval.plots)
      if written:
        log.info(f"plots: {', '.join(written)}")
  if config.eval.at_end and not data.probes_skipped and method.dual is not None:
    log.info(f"done: {image_text_lib.summary(res, rnd)} | results in "
             f"{workdir / 'results.json'}")
  elif config.eval.at_end and not data.probes_skipped:
    vs = results["vs_random_init"]
    log.info(
        f"done: linear top-1 {res['linear_top1']:.4f} (random init "
        f"{rnd['linear_top1']:.4f}, p={vs['linear']['p_value']:.2g}) | kNN top-1 "
        f"{res['knn_top1']:.4f} (random init {rnd['knn_top1']:.4f}, "
        f"p={vs['knn']['p_value']:.2g}) | results in {workdir / 'results.json'}")
  log.close()
  return results


def _tokenizer(config):
  """The host tokenizer of an image-text run (`config.text.tokenizer`); None
  for image-only runs."""
  if config.get("text") is None:
    return None
  from jssl.text import tokenizers  # pylint: disable=import-outside-toplevel
  return tokenizers.make(config.text.tokenizer)


def image_text_evaluator(method, data, mesh, config, tokenizer):
  """`state -> metrics`: zero-shot and retrieval of a dual encoder on the
  held-out set (`jssl.evals.image_text`). Its jitted embedding functions are
  made once, so every eval of a run (periodic, final, random init) reuses
  their compilation."""
  # The held-out images come resized and centre-cropped on host.
  pp = dict(preprocess_config(config, data.image_shape[-1]), crop_fraction=1.0)
  fns = []

  def run(state) -> dict:
    t0 = time.time()
    if not fns:
      fns.extend(image_text_lib.make_embed_fns(method.dual, pp, mesh))
    variables = method.dual.variables(state.params, state.method_state)
    res = image_text_lib.evaluate(method.dual, variables, data.heldout, tokenizer, pp,
                                  mesh, batch_size=config.eval.batch_size,
                                  embed_fns=tuple(fns))
    res["eval_seconds"] = round(time.time() - t0, 2)
    return res
  return run


@contextlib.contextmanager
def _closing_on_error(batches, ckpt, log):
  """On an error in the loop (divergence included): stop the prefetch thread
  and let the checkpoint saves already started (all of finite states) commit,
  so the last good checkpoint is complete when the error is reported."""
  try:
    yield
  except BaseException:
    batches.close()
    try:
      ckpt.close()
    except Exception:  # pylint: disable=broad-except
      pass  # a failed save is the error being raised, or follows from it
    log.close()
    raise


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
