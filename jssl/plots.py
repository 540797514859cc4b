"""PNG plots of a run, drawn with matplotlib (optional: `pip install jssl[plots]`).

  training_curves(metrics_jsonl, path)   loss (and eval / probe accuracies) vs step
  spectrum(features, path)               singular values of the centred features
  projection(features, labels, path)     2-D PCA or t-SNE of features, by class
  write_run_plots(workdir, ...)          all three into `workdir/plots/`

The 2-D projections come from scikit-learn (`PCA`, `TSNE`); nothing here
re-implements them. Every function returns the path it wrote, or None when
matplotlib is not installed (the GPU image has none); plots never fail a run.
Paths may be local or URLs (`gs://...`): files are rendered in memory and
written through `jssl.storage`.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

from absl import logging
import numpy as np

from jssl import storage

PROJECTIONS = ("pca", "tsne")


def _pyplot():
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    logging.info("matplotlib is not installed: no plots (pip install jssl[plots])")
    return None
  matplotlib.use("Agg", force=True)  # files only, no display
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _save(fig, plt, path) -> str:
  fig.tight_layout()
  out = storage.savefig(fig, path, dpi=120)
  plt.close(fig)
  return out


def read_metrics(metrics_jsonl: str) -> list[dict]:
  """The rows of a run's `metrics.jsonl`; a resumed run's repeated steps keep
  the last row written for each step."""
  rows: dict[int, dict] = {}
  with storage.path(metrics_jsonl, what="metrics file").open() as f:
    for line in f:
      line = line.strip()
      if line:
        row = json.loads(line)
        rows.setdefault(int(row["step"]), {}).update(row)
  return [rows[s] for s in sorted(rows)]


def training_curves(metrics_jsonl: str, path: str) -> Optional[str]:
  """Training loss vs step (left) and, when logged, accuracies vs step (right:
  `eval/*_top1`, `online_probe/*`, `final/*_top1`)."""
  plt = _pyplot()
  if plt is None:
    return None
  rows = read_metrics(metrics_jsonl)
  loss = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
  acc_keys = sorted({k for r in rows for k in r
                     if k.endswith("top1") or k.startswith("online_probe/")})
  fig, axes = plt.subplots(1, 2 if acc_keys else 1, figsize=(10 if acc_keys else 5, 3.6),
                           squeeze=False)
  ax = axes[0, 0]
  if loss:
    ax.plot(*zip(*loss), color="C0")
  ax.set(xlabel="step", ylabel="training loss", title="loss")
  ax.grid(alpha=0.3)
  if acc_keys:
    ax = axes[0, 1]
    for i, k in enumerate(acc_keys):
      pts = [(r["step"], r[k]) for r in rows if r.get(k) is not None]
      if pts:
        ax.plot(*zip(*pts), marker="o" if len(pts) < 20 else None, label=k,
                color=f"C{i % 10}")
    ax.set(xlabel="step", ylabel="top-1", title="accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return _save(fig, plt, path)


def singular_values(features: np.ndarray) -> np.ndarray:
  """Singular values of the raw `[N, D]` features, descending (the spectrum
  `jssl.evals.diagnostics` reports and RankMe is computed from)."""
  return np.linalg.svd(np.asarray(features, np.float64), compute_uv=False)


def spectrum(features: np.ndarray, path: str, *, title: str = "") -> Optional[str]:
  """Singular-value spectrum (log scale, relative to the largest) with RankMe
  (`jssl.losses.metrics.rankme`, Garrido et al. 2023 eq. 1)."""
  plt = _pyplot()
  if plt is None:
    return None
  s = singular_values(features)
  p = s / max(s.sum(), 1e-12) + 1e-7  # RankMe's eps
  rank = float(np.exp(-np.sum(p * np.log(p))))
  fig, ax = plt.subplots(figsize=(5, 3.6))
  ax.semilogy(np.arange(1, len(s) + 1), np.maximum(s / max(s[0], 1e-12), 1e-12))
  ax.set(xlabel="index", ylabel="singular value / largest",
         title=(title + " " if title else "") + f"spectrum (RankMe {rank:.1f} of {len(s)})")
  ax.grid(alpha=0.3, which="both")
  return _save(fig, plt, path)


def project_2d(features: np.ndarray, method: str = "pca", *, seed: int = 0) -> np.ndarray:
  """`[N, 2]` scikit-learn PCA or t-SNE embedding of `[N, D]` features."""
  if method not in PROJECTIONS:
    raise ValueError(f"projection {method!r}: choose one of {PROJECTIONS}")
  x = np.asarray(features, np.float32)
  if x.ndim != 2 or len(x) < 3:
    raise ValueError(f"projection needs features [N >= 3, D], got shape {x.shape}")
  from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
  if method == "pca":
    return PCA(n_components=2, random_state=seed).fit_transform(x)
  from sklearn.manifold import TSNE  # pylint: disable=import-outside-toplevel
  # PCA to 50 dims first, as scikit-learn's docs recommend for dense features.
  if x.shape[1] > 50 and len(x) > 50:
    x = PCA(n_components=50, random_state=seed).fit_transform(x)
  perplexity = float(min(30.0, (len(x) - 1) / 3))
  return TSNE(n_components=2, init="pca", perplexity=perplexity,
              random_state=seed).fit_transform(x)


def projection(features: np.ndarray, labels: np.ndarray, path: str, *,
               method: str = "pca", max_points: int = 5000, seed: int = 0,
               class_names: Optional[Sequence[str]] = None,
               title: str = "") -> Optional[str]:
  """Scatter of a 2-D projection of (at most `max_points`, a fixed random
  subset of) the features, coloured by class."""
  plt = _pyplot()
  if plt is None:
    return None
  features, labels = np.asarray(features), np.asarray(labels)
  if len(features) != len(labels):
    raise ValueError(f"features ({len(features)}) and labels ({len(labels)}) differ in length")
  if len(features) > max_points:
    keep = np.sort(np.random.default_rng(seed).choice(len(features), max_points,
                                                      replace=False))
    features, labels = features[keep], labels[keep]
  xy = project_2d(features, method, seed=seed)
  fig, ax = plt.subplots(figsize=(5.2, 4.6))
  classes = np.unique(labels)
  cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
  for i, c in enumerate(classes):
    m = labels == c
    name = class_names[c] if class_names is not None else str(c)
    ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(i % cmap.N), label=name)
  ax.set(title=(title + " " if title else "") + f"{method.upper()} of test features",
         xticks=[], yticks=[])
  if len(classes) <= 20:
    ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2)
  return _save(fig, plt, path)


def write_run_plots(workdir: str, features: Optional[np.ndarray] = None,
                    labels: Optional[np.ndarray] = None, *,
                    method: str = "pca") -> list[str]:
  """`workdir/plots/{training,spectrum,projection}.png`; returns the paths
  written (empty without matplotlib)."""
  workdir = storage.path(workdir)
  out = workdir / "plots"
  written = []
  metrics = workdir / "metrics.jsonl"
  if metrics.exists():
    written.append(training_curves(metrics, out / "training.png"))
  if features is not None:
    written.append(spectrum(features, out / "spectrum.png"))
    if labels is not None:
      written.append(projection(features, labels, out / "projection.png",
                                method=method))
  return [p for p in written if p]
