r"""Every standard probe of an exported encoder, as a JSON and a Markdown table.

  python -m jssl.evaluate --export=WORKDIR/export --dataset=digits
  python -m jssl.evaluate --export=DIR --dataset=cifar10 --data_dir=$HOME/tensorflow_datasets \
      --protocols=linear,knn,fewshot --out=DIR/eval_cifar10

One feature pass per split (the export's own preprocessing, on the default
JAX device) feeds the cached-feature protocols; `--protocols` picks them
(default `features`: all of these):

  linear       cached-feature logistic regression, L2 chosen on a held-out split
               (`jssl.evals.linear_probe`; the fast probe, not the augmented-crop
               SGD protocol of the SimCLR / BYOL papers), on the feature the
               run's own probe read (`--linear_feature`: 'pre_logits', or a
               ViT's 'cls_last4', DINO / iBOT's ViT-S probe input)
  knn          weighted kNN, k=200, T=0.1 (InstDisc; `jssl.evals.knn`), train side
               streamed so memory stays bounded
  ncm          nearest class mean, cosine and Euclidean (`jssl.evals.ncm`)
  gda          closed-form shrunk-covariance GDA, training-free (`jssl.evals.gda`)
  fewshot      N-way K-shot episodes, ridge (big_vision) and NCM, mean +- 95% CI
               (`jssl.evals.fewshot`)
  moments      linear probe on first + second moments of ViT tokens or ResNet
               feature maps (`jssl.evals.moments`)
  diagnostics  RankMe, spectrum, uniformity, std collapse ratio, Vendi, NC1,
               intra-class variance, class separation, on test features
               (`jssl.evals.diagnostics`, at most --diagnostics_max examples)

An image-text export (CLIP, SigLIP, LiT: `dual.json` next to the image tower)
gets these on its image tower, and by default two more (`jssl.evals.image_text`):

  zeroshot     class names x prompt templates, mean of normalised text
               embeddings per class (CLIP), top-1 / top-5 on the test split;
               `digits`: the quickstart's held-out prompts; cifar10 / cifar100:
               CLIP's CIFAR templates; other TFDS sets: CLIP's 80 ImageNet ones
  retrieval    image->text and text->image Recall@1/5/10 (ties count against the
               model); needs captions: `digits` has the quickstart's held-out ones

Two more protocols train through the encoder on augmented crops, as the
papers' tables do (`jssl.evals.finetune`; minutes to hours, so only when
named, or with `--protocols=all`), data-parallel over every local device:

  linear_sgd   frozen encoder, linear classifier trained with SGD / LARS on
               random resized crops + flips (`--linear_preset`: simclr | mae)
  finetune     encoder + classifier fine-tuned on class-balanced 1% / 10% of
               the train labels (`--label_fractions`, `--finetune_preset`)

`--train_epochs`, `--train_batch_size`, `--train_lr` (base lr, scaled by
B/256) override the presets' epochs / batch / lr for both.

`--baseline=EXPORT2` compares the export with another image encoder on the
same test images (`jssl.evals.paired`): the baseline gets its own feature
pass (its own preprocessing and recorded linear feature) and the same linear
and kNN protocols, and each reports `wins` (test images only the export gets
right), `losses` (only the baseline) and the one-sided exact McNemar p-value
that the export is better (`results.vs_baseline`; a table in `eval.md`).

  python -m jssl.evaluate --export=RUN_B/export --baseline=RUN_A/export \
      --dataset=digits --protocols=linear,knn

Writes `OUT/eval.json` (every number, with the settings), `OUT/eval.md` (the
table) and, with matplotlib, `OUT/spectrum.png` and `OUT/projection.png`
(`--plots=pca|tsne|''`). OUT defaults to `EXPORT/eval_<dataset>`. An existing
`eval.json` there is not overwritten unless `--overwrite`. A user error
(argument, dataset, export) is one `error:` line and exit status 2
(`--verbose` or JSSL_VERBOSE=1 adds the traceback).

Datasets: `digits` (the offline quickstart data, at the export's input size)
or any prepared TFDS image classification dataset (`--data_dir`; see
`python -m jssl.data.offline` for offline preparation). Images are resized and
centre-cropped on host with the export's `size` / `crop_fraction`.
"""
from __future__ import annotations

import json
import time
from typing import Iterable, Iterator, Optional, Sequence

import jax
import numpy as np

from jssl import errors

PROTOCOLS = ("linear", "knn", "ncm", "gda", "fewshot", "moments", "diagnostics")
# Protocols of image-text exports (CLIP, SigLIP, LiT; `jssl.evals.image_text`).
IMAGE_TEXT_PROTOCOLS = ("zeroshot", "retrieval")
# Protocols that train through the encoder on augmented crops (jssl.evals.finetune).
TRAINED_PROTOCOLS = ("linear_sgd", "finetune")
# Spatial outputs the moments protocol can use, in order of preference.
TOKEN_OUTPUTS = ("tokens", "feature_map")
# Protocols whose predictions `--baseline` compares image by image.
PAIRED_PROTOCOLS = ("linear", "knn")


class Split:
  """Features of one split: `pre_logits` `[N, D]`, labels `[N]`, the
  spatial output `[N, T, D]` / `[N, h, w, C]` when the moments probe needs it,
  and the linear probe's own input `[N, D']` when it is another output
  (`linear_features`; None: the linear probe reads `features`)."""

  def __init__(self, features: np.ndarray, labels: np.ndarray,
               tokens: Optional[np.ndarray] = None,
               linear_features: Optional[np.ndarray] = None):
    self.features, self.labels, self.tokens = features, labels, tokens
    self.linear_features = linear_features


def parse_protocols(spec: str | Sequence[str], *, image_text: bool = False
                    ) -> tuple[str, ...]:
  """'features' (or empty): the cached-feature protocols, and for an
  image-text export (`image_text`) zero-shot and retrieval too; 'all': those
  and the trained ones; else a comma-separated list of names."""
  names = ([p.strip() for p in spec.split(",") if p.strip()]
           if isinstance(spec, str) else list(spec))
  extra = IMAGE_TEXT_PROTOCOLS if image_text else ()
  if not names or names == ["features"]:
    return PROTOCOLS + extra
  if names == ["all"]:
    return PROTOCOLS + extra + TRAINED_PROTOCOLS
  known = PROTOCOLS + TRAINED_PROTOCOLS + IMAGE_TEXT_PROTOCOLS
  unknown = [p for p in names if p not in known]
  if unknown:
    raise errors.ConfigError(f"unknown protocol(s) {unknown}; choose from {list(known)}, "
                             "'features' or 'all'")
  if not image_text and any(p in IMAGE_TEXT_PROTOCOLS for p in names):
    raise errors.ConfigError(
        f"protocols {list(IMAGE_TEXT_PROTOCOLS)} need an image-text export (CLIP, SigLIP, "
        "LiT: one with dual.json); this export is an image encoder")
  return tuple(dict.fromkeys(names))


def image_text_set(dataset: str, *, size: int, crop_fraction: float,
                   data_dir: Optional[str], batch_size: int, split: str = "test"):
  """The held-out set (`jssl.data.captions.HeldOut`) zero-shot and retrieval
  score an image-text export on: 'digits' is the offline quickstart's
  held-out digits with their held-out captions and prompts; a TFDS
  classification dataset gives its `split` with class names and prompt
  templates (CLIP's CIFAR set for cifar10 / cifar100, else CLIP's 80
  ImageNet templates) and no captions (retrieval is then skipped)."""
  from jssl.data import captions  # pylint: disable=import-outside-toplevel
  from jssl.text import templates  # pylint: disable=import-outside-toplevel
  if dataset == "digits":
    return captions.digits_heldout(size, crop_fraction)
  num_classes, batches = dataset_batches(dataset, size=size, crop_fraction=crop_fraction,
                                         data_dir=data_dir, batch_size=batch_size,
                                         splits=(split, split))
  images, labels = [], []
  for b in batches["test"]:
    m = np.asarray(b["mask"], bool)
    images.append(np.asarray(b["image"])[m])
    labels.append(np.asarray(b["label"])[m])
  known = dataset.split(":")[0].split("/")[0]
  if known in ("cifar10", "cifar100", "imagenet2012"):
    key = "imagenet" if known == "imagenet2012" else known
    names, prompts = templates.class_names(key), templates.templates(key)
  else:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    label = tfds.builder(dataset, data_dir=data_dir).info.features["label"]
    names = [n.replace("_", " ") for n in label.names]
    prompts = templates.templates("imagenet")
  if len(names) != num_classes:
    raise errors.DataError(f"{dataset}: {len(names)} class names for {num_classes} classes")
  return captions.HeldOut(np.concatenate(images), np.concatenate(labels).astype(np.int32),
                          list(names), [[] for _ in range(sum(map(len, labels)))],
                          list(prompts))


def run_image_text(model, dataset: str, protocols: Sequence[str], *,
                   data_dir: Optional[str], batch_size: int) -> dict:
  """Zero-shot and / or retrieval of a loaded image-text export
  (`jssl.export.DualModel`) on `dataset` (see `image_text_set`)."""
  from jssl.evals import image_text  # pylint: disable=import-outside-toplevel
  pp = model.preprocess_config
  heldout = image_text_set(dataset, size=int(pp["size"]),
                           crop_fraction=float(pp.get("crop_fraction", 1.0)),
                           data_dir=data_dir, batch_size=batch_size)
  mesh = jax.sharding.Mesh(np.array([model.device]), ("data",))
  if "retrieval" not in protocols:
    heldout.captions = []
  if "zeroshot" not in protocols:
    heldout.class_names = None
  res = image_text.evaluate(model.dual, model.variables, heldout, model.tokenizer,
                            dict(pp, crop_fraction=1.0), mesh, batch_size=batch_size)
  out = {}
  if "zeroshot" in protocols:
    out["zeroshot"] = ({"top1": res["zeroshot_top1"], "num_classes": len(heldout.class_names),
                        "num_templates": len(heldout.templates or ()),
                        **({"top5": res["zeroshot_top5"]} if "zeroshot_top5" in res else {})}
                       if "zeroshot_top1" in res else {"skipped": f"{dataset} has no labels"})
  if "retrieval" in protocols:
    out["retrieval"] = ({k: v for k, v in res.items() if "_R@" in k}
                        | {"num_images": res["num_images"], "num_texts": res["num_texts"]}
                        if "num_texts" in res else {"skipped": f"{dataset} has no captions"})
  return out


# --------------------------------------------------------------------------
# Data.

def _array_batches(images: np.ndarray, labels: np.ndarray,
                   batch_size: int) -> Iterator[dict]:
  for i in range(0, len(images), batch_size):
    yield {"image": images[i:i + batch_size], "label": labels[i:i + batch_size],
           "mask": np.ones(len(images[i:i + batch_size]), bool)}


def dataset_batches(dataset: str, *, size: int, crop_fraction: float,
                    data_dir: Optional[str], batch_size: int,
                    splits: tuple[str, str] = ("train", "test")):
  """`(num_classes, {split: batch iterator})` of host-prepared uint8 images
  `[b, size, size, C]` with `label` and `mask` (padding rows are False)."""
  if dataset == "digits":
    from jssl.data import digits  # pylint: disable=import-outside-toplevel
    arrays = digits.load_arrays("digits", size=size)
    by_split = {"train": (arrays.train_images, arrays.train_labels),
                "test": (arrays.test_images, arrays.test_labels)}
    bad = [k for k in splits if k not in by_split]
    if bad:
      raise errors.DataError(f"digits has splits {sorted(by_split)}, not {bad}")
    return arrays.num_classes, {
        s: _array_batches(*by_split[k], batch_size)
        for s, k in zip(("train", "test"), splits)}
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"--dataset={dataset} is a TFDS dataset, which needs "
                      "tensorflow-datasets (pip install 'jssl[tf]'); "
                      "--dataset=digits works without it") from e
  from jssl.data import tfds_source  # pylint: disable=import-outside-toplevel
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.DataError(f"--dataset={dataset!r} is neither 'digits' nor a TFDS dataset: "
                           f"{str(e).splitlines()[0]}") from None
  if not builder.is_prepared():
    raise tfds_source._not_prepared(dataset, data_dir)  # pylint: disable=protected-access
  num_classes = builder.info.features["label"].num_classes
  return num_classes, {
      s: tfds_source.tfds_eval_batches(
          dataset, k, data_dir=data_dir, batch_size_per_process=batch_size,
          image_size=size, crop_fraction=crop_fraction, process_index=0,
          process_count=1)
      for s, k in zip(("train", "test"), splits)}


def extract(encoder, batches: Iterable[dict], *, tokens: Optional[str] = None,
            linear_feature: str = "pre_logits") -> Split:
  """One pass of the loaded encoder over host-prepared batches (already at
  the export's size, so the on-device transform only normalises)."""
  from jssl.evals import features  # pylint: disable=import-outside-toplevel
  linear = linear_feature if linear_feature != "pre_logits" else None
  keys = ("pre_logits",) + ((tokens,) if tokens else ()) + ((linear,) if linear else ())
  fn = jax.jit(features.preprocessed_apply(encoder.module, encoder.preprocess_config,
                                           crop_fraction=1.0, keys=keys))

  feats, toks, lins, labels = [], [], [], []
  for batch in batches:
    images = encoder._check(batch["image"])  # pylint: disable=protected-access
    out = jax.device_get(fn(encoder.variables, jax.device_put(images, encoder.device)))
    keep = np.asarray(batch["mask"], bool)
    feats.append(np.asarray(out["pre_logits"], np.float32)[keep])
    labels.append(np.asarray(batch["label"], np.int32)[keep])
    if tokens:
      toks.append(np.asarray(out[tokens], np.float32)[keep])
    if linear:
      lins.append(np.asarray(out[linear], np.float32)[keep])
  if not feats:
    raise errors.DataError("the split yielded no examples")
  return Split(np.concatenate(feats), np.concatenate(labels),
               np.concatenate(toks) if tokens else None,
               np.concatenate(lins) if linear else None)


def check_linear_feature(encoder, name: str) -> None:
  """A clear error when `name` is not a `[B, D]` output of the export's encoder."""
  flat = sorted(k for k, shape in encoder.output_shapes.items() if len(shape) == 2)
  if name not in flat:
    raise errors.ConfigError(
        f"--linear_feature={name!r} is not a [B, D] output of this export's encoder "
        f"({encoder.model_config.get('name')}); choose from {flat}")


def token_output(encoder) -> str:
  """The spatial output the moments probe uses ('tokens' of a ViT,
  'feature_map' of a ResNet), or a clear error when the export has none."""
  spec = encoder.output_shapes
  for k in TOKEN_OUTPUTS:
    if k in spec and len(spec[k]) in (3, 4):
      return k
  raise errors.ConfigError(
      f"the moments protocol needs token or feature-map outputs {TOKEN_OUTPUTS}; "
      f"this export's encoder ({encoder.model_config.get('name')}) gives only "
      f"{sorted(spec)}. Drop 'moments' from --protocols.")


# --------------------------------------------------------------------------
# Protocols.

def _fewshot_settings(train_y, test_y, num_classes, shots, n_way, n_query):
  """Shots / way / query clipped to what the data allows (logged in the JSON)."""
  smallest_train = int(np.bincount(train_y, minlength=num_classes).min())
  smallest_test = int(np.bincount(test_y, minlength=num_classes).min())
  usable = tuple(k for k in shots if k <= smallest_train)
  return usable, min(n_way, num_classes), min(n_query, smallest_test)


def run_protocols(train: Split, test: Split, *, num_classes: int,
                  protocols: Sequence[str], shots: Sequence[int] = (1, 5, 10, 25),
                  n_way: int = 5, n_query: int = 15, n_episodes: int = 100,
                  diagnostics_max: int = 4096, knn_train_chunk: int = 8192,
                  seed: int = 0, correct: Optional[dict] = None) -> dict:
  """Runs the chosen protocols on cached features; returns a JSON-able dict
  (accuracies as fractions in [0, 1]) with each protocol's seconds. With a
  `correct` dict, fills it with `{protocol: [M] bools}` for the linear and kNN
  protocols run: whether each test image is classified right."""
  from jssl.evals import diagnostics as diag_lib  # pylint: disable=import-outside-toplevel
  from jssl.evals import fewshot as fewshot_lib  # pylint: disable=import-outside-toplevel
  from jssl.evals import gda as gda_lib  # pylint: disable=import-outside-toplevel
  from jssl.evals import knn as knn_lib  # pylint: disable=import-outside-toplevel
  from jssl.evals import linear_probe as linear_lib  # pylint: disable=import-outside-toplevel
  from jssl.evals import moments as moments_lib  # pylint: disable=import-outside-toplevel
  from jssl.evals import ncm as ncm_lib  # pylint: disable=import-outside-toplevel

  args = (train.features, train.labels, test.features, test.labels)
  out: dict = {}
  timings: dict = {}
  for name in protocols:
    t0 = time.time()
    if name == "linear":
      lin_args = (train.features if train.linear_features is None else train.linear_features,
                  train.labels,
                  test.features if test.linear_features is None else test.linear_features,
                  test.labels)
      r = linear_lib.linear_probe(*lin_args, num_classes=num_classes, seed=seed,
                                  per_example=correct is not None)
      out[name] = {k: r[k] for k in ("top1", "top5", "l2") if k in r}
    elif name == "knn":
      r = knn_lib.knn_accuracy(*args, num_classes=num_classes,
                               train_chunk_size=min(knn_train_chunk, len(train.labels)),
                               per_example=correct is not None)
      out[name] = {"top1": r["top1"], "top5": r["top5"], "k": r["k"], "temperature": 0.1}
    elif name == "ncm":
      out[name] = {m: ncm_lib.ncm_accuracy(*args, num_classes=num_classes, metric=m)
                   for m in ("cosine", "euclidean")}
    elif name == "gda":
      out[name] = gda_lib.gda_accuracy(*args, num_classes=num_classes)
    elif name == "fewshot":
      usable, way, query = _fewshot_settings(train.labels, test.labels, num_classes,
                                             shots, n_way, n_query)
      if not usable:
        raise errors.ConfigError(f"few-shot: every K in {list(shots)} exceeds the smallest "
                                 "train class")
      r = fewshot_lib.fewshot_accuracy(*args, num_classes=num_classes, shots=usable,
                                       n_way=way, n_query=query, n_episodes=n_episodes)
      out[name] = {c: {str(k): {kk: v[kk] for kk in ("mean", "ci95")}
                       for k, v in r[c].items()}
                   for c in r if c != "config"}
      out[name]["config"] = r["config"]
    elif name == "moments":
      if train.tokens is None or test.tokens is None:
        raise ValueError("moments: features were extracted without tokens")
      # moment_probe's default r = 64, at most the token width.
      r = moments_lib.moment_probe(train.tokens, train.labels, test.tokens, test.labels,
                                   num_classes=num_classes,
                                   dim=min(64, int(train.tokens.shape[-1])))
      out[name] = {k: r[k] for k in ("top1", "top5", "l2", "feature_dim") if k in r}
    elif name == "diagnostics":
      x, y = test.features, test.labels
      if len(x) > diagnostics_max:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), diagnostics_max,
                                                          replace=False))
        x, y = x[keep], y[keep]
      r = jax.device_get(diag_lib.diagnostics(x, y, num_classes=num_classes))
      out[name] = {k: float(v) for k, v in r.items() if np.ndim(v) == 0}
      out[name]["examples"] = int(len(x))
    if correct is not None and name in PAIRED_PROTOCOLS:
      correct[name] = r["correct"]
    timings[name] = round(time.time() - t0, 2)
  out["seconds"] = timings
  return _jsonable(out)


def trained_jobs(protocols: Sequence[str], *, linear_preset: str = "simclr",
                 finetune_preset: str = "simclr",
                 label_fractions: Sequence[float] = (0.01, 0.1),
                 overrides: Optional[dict] = None) -> list:
  """`[(protocol, label_fraction or None, preset, config)]` of the trained protocols
  named in `protocols`; raises on a bad preset, fraction or setting."""
  from jssl.evals import finetune  # pylint: disable=import-outside-toplevel
  overrides = dict(overrides or {})
  jobs = []
  if "linear_sgd" in protocols:
    jobs.append(("linear_sgd", None, linear_preset, finetune.protocol_config(
        "linear", linear_preset, **overrides)))
  if "finetune" in protocols:
    if not label_fractions:
      raise errors.ConfigError("finetune: no --label_fractions given")
    for frac in label_fractions:
      jobs.append(("finetune", float(frac), finetune_preset, finetune.protocol_config(
          "finetune", finetune_preset, label_fraction=float(frac), **overrides)))
  return jobs


def run_trained(encoder, dataset: str, protocols: Sequence[str], *,
                data_dir: Optional[str] = None, splits: tuple[str, str] = ("train", "test"),
                batch_size: int = 256, log=print, **settings) -> dict:
  """Runs the trained protocols (`TRAINED_PROTOCOLS`) on `encoder`'s module
  and variables; returns `{'linear_sgd': {...}, 'finetune': {'0.01': {...}}}`
  (`jssl.evals.finetune.train_classifier` results). `settings`: those of
  `trained_jobs` (presets, label fractions, overrides)."""
  from jssl.evals import finetune  # pylint: disable=import-outside-toplevel
  jobs = trained_jobs(protocols, **settings)
  if not jobs:
    return {}
  pp = encoder.preprocess_config
  size, crop = int(pp["size"]), float(pp.get("crop_fraction", 1.0))

  if dataset == "digits":
    from jssl.data import digits  # pylint: disable=import-outside-toplevel
    arrays = digits.load_arrays("digits", size=size)
    if splits[0] != "train":
      raise errors.DataError(f"digits trains on split 'train', not {splits[0]!r}")
    labels = arrays.train_labels

    def train_data(cfg, indices):
      del cfg
      return finetune.array_train_data(arrays.train_images, arrays.train_labels, indices)
  else:
    from jssl.data import tfds_source  # pylint: disable=import-outside-toplevel
    labels = None

    def train_data(cfg, indices):
      return finetune.tfds_train_data(
          dataset, split=splits[0], data_dir=data_dir, image_size=size,
          crop_scale=tuple(cfg.crop_scale), crop_ratio=tuple(cfg.crop_ratio),
          indices=indices)

  out: dict = {}
  for name, frac, preset, cfg in jobs:
    indices = None
    if frac is not None and frac < 1.0:
      if labels is None:
        labels = tfds_source.split_labels(dataset, splits[0], data_dir)
      indices = finetune.label_subset(labels, frac, seed=int(cfg.seed))
    num_classes, batches = dataset_batches(
        dataset, size=size, crop_fraction=crop, data_dir=data_dir,
        batch_size=batch_size, splits=splits)
    what = name if frac is None else f"{name} on {100 * frac:g}% of the labels"
    log(f"{what}: training ({cfg.epochs:g} epochs, batch <= {cfg.batch_size})")
    r = finetune.train_classifier(
        encoder.module, encoder.variables, train_data(cfg, indices), batches["test"],
        num_classes=num_classes, preprocess=pp, cfg=cfg, log=log)
    r["preset"] = preset
    log(f"{what}: top-1 {100 * r['top1']:.2f}% after {r['steps']} steps "
        f"({r['seconds']:.0f} s)")
    if frac is None:
      out[name] = r
    else:
      out.setdefault(name, {})[f"{frac:g}"] = r
  return out


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "dtype"):
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x.tolist()
  return x


def _pct(v) -> str:
  return f"{100 * v:.2f}"


def markdown(report: dict) -> str:
  """The results as a Markdown table (accuracies in %)."""
  r = report["results"]
  lines = [f"# {report['export']} on {report['dataset']}", "",
           f"{report['num_train']} train / {report['num_test']} test examples, "
           f"{report['num_classes']} classes, feature dim {report['feature_dim']}, "
           f"{report['device']}.", "",
           "| protocol | setting | top-1 (%) | top-5 (%) |", "|---|---|---|---|"]

  def row(protocol, setting, d):
    top5 = _pct(d["top5"]) if "top5" in d else ""
    lines.append(f"| {protocol} | {setting} | {_pct(d['top1'])} | {top5} |")

  if "linear" in r:
    feature = report.get("linear_feature", "pre_logits")
    on = "" if feature == "pre_logits" else f", on {feature}"
    row("linear (cached features)", f"L2 {r['linear']['l2']:.3g}{on}", r["linear"])
  if "knn" in r:
    row("kNN", f"k={r['knn']['k']}, T=0.1", r["knn"])
  if "ncm" in r:
    for m in ("cosine", "euclidean"):
      row("NCM", m, r["ncm"][m])
  if "gda" in r:
    row("GDA (training-free)", f"shrinkage {r['gda']['shrinkage']:.3g}", r["gda"])
  if "moments" in r:
    row("moment probe", f"{r['moments']['feature_dim']}-d moments", r["moments"])
  if "linear_sgd" in r:
    d = r["linear_sgd"]
    row("linear (augmented crops)", f"{d['preset']} protocol, {d['epochs']:.3g} epochs, batch "
        f"{d['batch_size']}, lr {d['lr']:.3g}", d)
  for frac, d in r.get("finetune", {}).items():
    row(f"fine-tune, {100 * float(frac):g}% labels", f"{d['preset']} protocol, "
        f"{d['num_train']} examples, "
        f"{d['epochs']:.3g} epochs, batch {d['batch_size']}, lr {d['lr']:.3g}", d)
  zs = r.get("zeroshot", {})
  if "top1" in zs:
    row("zero-shot", f"{zs['num_classes']} class names x {zs['num_templates']} prompts", zs)
  ret = r.get("retrieval", {})
  for direction, what in (("i2t", "image -> text"), ("t2i", "text -> image")):
    recalls = {k.split("_")[1]: v for k, v in ret.items() if k.startswith(direction + "_R@")}
    if recalls:
      lines.append(f"| retrieval {what} | {ret['num_images']} images, {ret['num_texts']} "
                   "captions | " + ", ".join(f"{k} {_pct(v)}" for k, v in recalls.items())
                   + " | |")
  if "fewshot" in r:
    cfg = r["fewshot"]["config"]
    for clf, by_k in r["fewshot"].items():
      if clf == "config":
        continue
      for k, v in by_k.items():
        lines.append(f"| few-shot {clf} | {cfg['n_way']}-way {k}-shot, "
                     f"{cfg['n_episodes']} episodes x {len(cfg['seeds'])} seeds | "
                     f"{_pct(v['mean'])} +- {_pct(v['ci95'])} | |")
  if "vs_baseline" in r:
    vs = r["vs_baseline"]
    lines += ["", f"Paired test against {vs['baseline']} on the same {report['num_test']} "
              "test images: W = images only this export gets right, L = only the "
              "baseline; p = one-sided exact McNemar p-value that this export is better.", "",
              "| protocol | top-1 (%) | baseline top-1 (%) | W / L | p |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {_pct(vs[name]['top1'])} | {_pct(vs[name]['baseline_top1'])} | "
              f"{vs[name]['wins']} / {vs[name]['losses']} | {vs[name]['p_value']:.3g} |"
              for name in PAIRED_PROTOCOLS if name in vs]
  if "diagnostics" in r:
    d = r["diagnostics"]
    lines += ["", f"Diagnostics on {d['examples']} test features:", "",
              "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in d.items() if k != "examples"]
  lines += ["", "Seconds per protocol: "
            + ", ".join(f"{k} {v}" for k, v in r["seconds"].items()), ""]
  return "\n".join(lines)


def evaluate_export(export: str, dataset: str, *, out: Optional[str] = None,
                    data_dir: Optional[str] = None,
                    protocols: str | Sequence[str] = "features", batch_size: int = 256,
                    plots: str = "pca", overwrite: bool = False,
                    splits: tuple[str, str] = ("train", "test"),
                    trained_kwargs: Optional[dict] = None, log=print,
                    linear_feature: Optional[str] = None,
                    baseline: Optional[str] = None,
                    **protocol_kwargs) -> dict:
  """Loads `export`, extracts features of `dataset`, runs `protocols`, writes
  `eval.json`, `eval.md` (and plots) to `out`; returns the report dict.

  `linear_feature`: the encoder output the linear protocol reads (default:
  the one the run's own probe read, recorded in the export: 'pre_logits',
  or 'cls_last4' for the ViT presets that use DINO's probe); every other
  protocol reads 'pre_logits'.

  `baseline`: another image export to compare with, test image by test image,
  on the linear and kNN protocols (module docstring; `results.vs_baseline`).

  `protocols`: as `parse_protocols` ('features' by default: the
  cached-feature ones). `trained_kwargs` go to `trained_jobs` (presets, label
  fractions, overrides; checked before any feature pass); `protocol_kwargs` to
  `run_protocols`.
  """
  from jssl import export as export_lib  # pylint: disable=import-outside-toplevel
  from jssl import plots as plots_lib  # pylint: disable=import-outside-toplevel
  from jssl import storage  # pylint: disable=import-outside-toplevel
  is_dual = (storage.path(export, what="--export", error=errors.ExportError)
             / "dual.json").exists()
  protocols = parse_protocols(protocols, image_text=is_dual)
  trained = [p for p in protocols if p in TRAINED_PROTOCOLS]
  trained_jobs(trained, **(trained_kwargs or {}))  # bad settings fail before any work
  if plots and plots not in plots_lib.PROJECTIONS:
    raise errors.ConfigError(f"--plots={plots!r}: one of {plots_lib.PROJECTIONS} or ''")
  # Local paths or URLs (gs://...): every read and write goes through epath.
  out = storage.path(out, what="--out") if out else (
      storage.path(export, what="--export") / f"eval_{dataset.replace('/', '_')}")
  if (out / "eval.json").exists() and not overwrite:
    raise errors.OutputExistsError(f"{out}/eval.json exists; pass --overwrite or another --out")
  paired = [p for p in protocols if p in PAIRED_PROTOCOLS]
  if baseline and not paired:
    raise errors.ConfigError(
        f"--baseline compares the linear and kNN predictions image by image; --protocols="
        f"{','.join(protocols)} has neither")
  base_encoder = _image_encoder(baseline, "--baseline") if baseline else None
  dual_model = (export_lib.load_clip(export, device=jax.devices()[0]) if is_dual else None)
  encoder = (dual_model.image_tower if dual_model else _image_encoder(export, "--export"))
  tokens = token_output(encoder) if "moments" in protocols else None
  linear_feature = linear_feature or encoder.linear_feature
  if "linear" in protocols:
    check_linear_feature(encoder, linear_feature)
  else:
    linear_feature = "pre_logits"
  pp = encoder.preprocess_config
  num_classes, batches = dataset_batches(
      dataset, size=int(pp["size"]), crop_fraction=float(pp.get("crop_fraction", 1.0)),
      data_dir=data_dir, batch_size=batch_size, splits=splits)
  t0 = time.time()
  train = extract(encoder, batches["train"], tokens=tokens, linear_feature=linear_feature)
  test = extract(encoder, batches["test"], tokens=tokens, linear_feature=linear_feature)
  t_feat = round(time.time() - t0, 2)
  cached = [p for p in protocols if p in PROTOCOLS]
  correct = {} if baseline else None
  results = run_protocols(train, test, num_classes=num_classes, protocols=cached,
                          correct=correct, **protocol_kwargs)
  results["seconds"]["features"] = t_feat
  if baseline:
    t0 = time.time()
    results["vs_baseline"] = compare_with_baseline(
        base_encoder, baseline, dataset, results, correct, test.labels, data_dir=data_dir,
        batch_size=batch_size, splits=splits, **protocol_kwargs)
    results["seconds"]["baseline"] = round(time.time() - t0, 2)
  image_text = [p for p in protocols if p in IMAGE_TEXT_PROTOCOLS]
  if image_text:
    t0 = time.time()
    results.update(_jsonable(run_image_text(dual_model, dataset, image_text,
                                            data_dir=data_dir, batch_size=batch_size)))
    results["seconds"]["image_text"] = round(time.time() - t0, 2)
  if trained:
    t0 = time.time()
    results.update(_jsonable(run_trained(
        encoder, dataset, trained, data_dir=data_dir, splits=splits,
        batch_size=batch_size, log=log, **(trained_kwargs or {}))))
    results["seconds"]["trained"] = round(time.time() - t0, 2)
  report = {"export": storage.display(export), "dataset": dataset,
            "out": storage.display(out),
            "splits": list(splits), "num_train": int(len(train.labels)),
            "num_test": int(len(test.labels)), "num_classes": int(num_classes),
            "feature_dim": int(train.features.shape[1]),
            **({"linear_feature": linear_feature,
                "linear_feature_dim": int(train.linear_features.shape[1])}
               if train.linear_features is not None else {}),
            "device": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})",
            "provenance": encoder.provenance, "protocols": list(protocols),
            "results": results}
  out.mkdir(parents=True, exist_ok=True)
  storage.write_atomic(out / "eval.json", json.dumps(report, indent=2))
  storage.write_atomic(out / "eval.md", markdown(report))
  if plots:
    written = [plots_lib.spectrum(test.features, out / "spectrum.png"),
               plots_lib.projection(test.features, test.labels,
                                    out / "projection.png", method=plots)]
    report["plots"] = [p for p in written if p]
  return report


def _image_encoder(path: str, flag: str):
  """The image encoder of an export, or the image tower of an image-text one."""
  from jssl import export as export_lib  # pylint: disable=import-outside-toplevel
  from jssl import storage  # pylint: disable=import-outside-toplevel
  if (storage.path(path, what=flag, error=errors.ExportError) / "dual.json").exists():
    return export_lib.load_clip(path, device=jax.devices()[0]).image_tower
  return export_lib.load_encoder(path, device=jax.devices()[0])


def compare_with_baseline(encoder, baseline: str, dataset: str, results: dict,
                          correct: dict, test_labels: np.ndarray, *,
                          data_dir: Optional[str], batch_size: int,
                          splits: tuple[str, str], **protocol_kwargs) -> dict:
  """The paired test of an export's linear / kNN predictions (`correct`,
  `results`) against those of the baseline `encoder` (loaded from `baseline`)
  on the same test images: its own preprocessing and linear feature, the same
  protocols."""
  from jssl import storage  # pylint: disable=import-outside-toplevel
  from jssl.evals import paired as paired_lib  # pylint: disable=import-outside-toplevel
  pp = encoder.preprocess_config
  num_classes, batches = dataset_batches(
      dataset, size=int(pp["size"]), crop_fraction=float(pp.get("crop_fraction", 1.0)),
      data_dir=data_dir, batch_size=batch_size, splits=splits)
  protocols = [p for p in PAIRED_PROTOCOLS if p in correct]
  feature = encoder.linear_feature if "linear" in protocols else "pre_logits"
  train = extract(encoder, batches["train"], linear_feature=feature)
  test = extract(encoder, batches["test"], linear_feature=feature)
  if not np.array_equal(test.labels, test_labels):
    raise ValueError(f"--baseline={baseline}: its pass over {dataset!r} {splits[1]} gave "
                     f"{len(test.labels)} labels in another order than the export's "
                     f"{len(test_labels)}; the paired test needs the same images in order")
  base_correct: dict = {}
  base = run_protocols(train, test, num_classes=num_classes, protocols=protocols,
                       correct=base_correct, **protocol_kwargs)
  out = {"baseline": storage.display(baseline), "baseline_provenance": encoder.provenance,
         **({"baseline_linear_feature": feature} if "linear" in protocols else {})}
  for name in protocols:
    out[name] = {"top1": results[name]["top1"], "baseline_top1": base[name]["top1"],
                 **paired_lib.compare(correct[name], base_correct[name])}
  return _jsonable(out)


def main(argv: Optional[Sequence[str]] = None) -> None:
  import argparse  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(prog="python -m jssl.evaluate",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--export", required=True,
                 help="an export directory (WORKDIR/export); image encoder or image-text")
  p.add_argument("--dataset", required=True, help="'digits' or a prepared TFDS dataset")
  p.add_argument("--data_dir", default=None, help="TFDS data dir")
  p.add_argument("--train_split", default="train")
  p.add_argument("--test_split", default="test")
  p.add_argument("--protocols", default="features",
                 help=f"comma-separated subset of {','.join(PROTOCOLS + TRAINED_PROTOCOLS)}; "
                      "'features' (default): the cached-feature ones; 'all': every one")
  p.add_argument("--out", default=None, help="output dir (default EXPORT/eval_DATASET)")
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--shots", default="1,5,10,25", help="few-shot K values")
  p.add_argument("--n_way", type=int, default=5)
  p.add_argument("--n_episodes", type=int, default=100)
  p.add_argument("--plots", default="pca", help="'pca', 'tsne' or '' (none)")
  p.add_argument("--linear_feature", default=None,
                 help="encoder output the linear protocol reads: 'pre_logits' or a ViT's "
                      "'cls_last4' (default: the one recorded in the export)")
  p.add_argument("--baseline", default=None,
                 help="another export to compare with on the same test images: linear and "
                      "kNN wins / losses and a paired (McNemar) p-value")
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--linear_preset", default="simclr", help="linear_sgd: simclr | mae")
  p.add_argument("--finetune_preset", default="simclr", help="finetune: simclr")
  p.add_argument("--label_fractions", default="0.01,0.1",
                 help="finetune: label fractions in (0, 1]")
  p.add_argument("--train_epochs", type=float, default=None,
                 help="linear_sgd / finetune: epochs (default: the preset's)")
  p.add_argument("--train_batch_size", type=int, default=None,
                 help="linear_sgd / finetune: global batch (default: the preset's)")
  p.add_argument("--train_lr", type=float, default=None,
                 help="linear_sgd / finetune: base lr, scaled by B/256 (default: preset)")
  p.add_argument("--log_every_steps", type=int, default=50,
                 help="linear_sgd / finetune: progress every N steps (0: quiet)")
  p.add_argument("--verbose", action="store_true",
                 help="print the traceback of a user error too (or set JSSL_VERBOSE=1)")
  a = p.parse_args(argv)
  overrides = {"log_every_steps": a.log_every_steps}
  if a.train_epochs is not None:
    overrides["epochs"] = a.train_epochs
  if a.train_batch_size is not None:
    overrides["batch_size"] = a.train_batch_size
  if a.train_lr is not None:
    overrides["optimizer"] = {"base_lr": a.train_lr}
  trained_kwargs = dict(
      linear_preset=a.linear_preset, finetune_preset=a.finetune_preset,
      label_fractions=tuple(float(f) for f in a.label_fractions.split(",") if f),
      overrides=overrides)
  report = evaluate_export(
      a.export, a.dataset, out=a.out, data_dir=a.data_dir, protocols=a.protocols,
      batch_size=a.batch_size, plots=a.plots, overwrite=a.overwrite,
      splits=(a.train_split, a.test_split), trained_kwargs=trained_kwargs,
      shots=tuple(int(k) for k in a.shots.split(",") if k), n_way=a.n_way,
      n_episodes=a.n_episodes, linear_feature=a.linear_feature, baseline=a.baseline)
  print(markdown(report))
  print(f"wrote {report['out']}/eval.json and eval.md")


def cli(argv: Optional[Sequence[str]] = None) -> None:
  """`python -m jssl.evaluate`: `main`, with a user error (bad argument,
  dataset or export) printed as one `error:` line and exit status 2; the
  traceback only with --verbose or JSSL_VERBOSE=1. Bugs keep theirs (exit 1)."""
  import argparse  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--verbose", action="store_true")
  verbose = pre.parse_known_args(argv)[0].verbose
  sys.exit(errors.call(main, argv, verbose=verbose) or 0)


if __name__ == "__main__":
  cli()
