"""jssl.plots: PNGs from a metrics log and features; projections are
scikit-learn's."""
import json
import os

import numpy as np
import pytest

from jssl import plots

pytest.importorskip("matplotlib")


def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_training_curves_from_a_resumed_log(tmp_path):
  log = tmp_path / "metrics.jsonl"
  rows = [{"step": 2, "loss": 3.0}, {"step": 4, "loss": 2.5},
          {"step": 4, "loss": 2.4},  # a resumed run re-logs step 4: last wins
          {"step": 6, "loss": 2.0, "eval/knn_top1": 0.5}]
  log.write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert [r["loss"] for r in plots.read_metrics(str(log))] == [3.0, 2.4, 2.0]
  out = plots.training_curves(str(log), str(tmp_path / "p" / "training.png"))
  assert _is_png(out)


def test_spectrum_and_projection(tmp_path):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 20)
  x = rng.normal(size=(60, 8)) + 5 * np.eye(8)[labels]
  s = plots.singular_values(x)
  np.testing.assert_allclose(s, np.linalg.svd(x, compute_uv=False))
  assert _is_png(plots.spectrum(x, str(tmp_path / "s.png")))
  for method in plots.PROJECTIONS:
    assert _is_png(plots.projection(x, labels, str(tmp_path / f"{method}.png"),
                                    method=method))
  from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
  np.testing.assert_allclose(plots.project_2d(x, "pca"),
                             PCA(n_components=2, random_state=0).fit_transform(
                                 x.astype(np.float32)), rtol=1e-4, atol=1e-4)


def test_write_run_plots_and_bad_input(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
  x = np.random.default_rng(1).normal(size=(10, 4))
  written = plots.write_run_plots(str(tmp_path), x, np.arange(10) % 2)
  assert sorted(os.path.basename(p) for p in written) == [
      "projection.png", "spectrum.png", "training.png"]
  with pytest.raises(ValueError, match="projection 'umap'"):
    plots.project_2d(x, "umap")
  with pytest.raises(ValueError, match="differ in length"):
    plots.projection(x, np.arange(3), str(tmp_path / "x.png"))
