"""jssl.plots: PNGs from a metrics log and features. Checked by what a user
sees: the PNG's size and pixels, and the data drawn in the figure against
values known independently of the code (a log written here, matrices built
with known singular values and principal axes)."""
import json
import os

import numpy as np
import pytest

from jssl import plots

pytest.importorskip("matplotlib")


def _png(path):
  """The PNG's pixels `[H, W, C]` (matplotlib reads it back)."""
  import matplotlib.image  # pylint: disable=import-outside-toplevel
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  return matplotlib.image.imread(path)


@pytest.fixture
def figures(monkeypatch):
  """Every figure the plots module saves, kept (the module closes them)."""
  kept = []
  save = plots._save  # pylint: disable=protected-access

  def keep(fig, plt, path):
    kept.append(fig)
    return save(fig, plt, path)

  monkeypatch.setattr(plots, "_save", keep)
  return kept


def _log(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_training_curves_from_a_resumed_log(tmp_path, figures):
  rows = [{"step": 2, "loss": 3.0}, {"step": 4, "loss": 2.5},
          {"step": 4, "loss": 2.4},  # a resumed run re-logs step 4: last wins
          {"step": 6, "loss": 2.0, "eval/knn_top1": 0.5}]
  log = _log(tmp_path / "metrics.jsonl", rows)
  assert [r["loss"] for r in plots.read_metrics(log)] == [3.0, 2.4, 2.0]
  out = plots.training_curves(log, str(tmp_path / "p" / "training.png"))
  assert out == str(tmp_path / "p" / "training.png")
  # Two panels of 5 x 3.6 in at 120 dpi: 1200 x 432 pixels.
  assert _png(out).shape[:2] == (432, 1200)
  loss_ax, acc_ax = figures[-1].axes
  np.testing.assert_array_equal(loss_ax.lines[0].get_xydata(),
                                [[2, 3.0], [4, 2.4], [6, 2.0]])
  [knn] = acc_ax.lines
  assert knn.get_label() == "eval/knn_top1"
  np.testing.assert_array_equal(knn.get_xydata(), [[6, 0.5]])

  # Loss only: one panel (600 x 432); another log draws other pixels.
  a = plots.training_curves(_log(tmp_path / "a.jsonl", rows[:3]), str(tmp_path / "a.png"))
  b = plots.training_curves(_log(tmp_path / "b.jsonl", [{"step": 2, "loss": 1.0},
                                                        {"step": 4, "loss": 9.0}]),
                            str(tmp_path / "b.png"))
  pa, pb = _png(a), _png(b)
  assert pa.shape[:2] == pb.shape[:2] == (432, 600)
  assert np.abs(pa - pb).max() > 0.5  # whole lines moved, not a rounding speck


def test_spectrum_shows_the_known_singular_values_and_rankme(tmp_path, figures):
  rng = np.random.default_rng(0)
  s = np.array([8.0, 4.0, 2.0, 1.0, 0.5, 0.25])
  u, _ = np.linalg.qr(rng.normal(size=(40, 6)))
  v, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  x = (u * s) @ v.T  # singular values s by construction
  np.testing.assert_allclose(plots.singular_values(x), s, rtol=1e-10)
  out = plots.spectrum(x, str(tmp_path / "s.png"))
  assert _png(out).shape[:2] == (432, 600)
  ax = figures[-1].axes[0]
  np.testing.assert_allclose(ax.lines[0].get_ydata(), s / 8.0, rtol=1e-10)
  p = s / s.sum()
  rankme = np.exp(-np.sum(p * np.log(p)))  # Garrido et al. 2023 eq. 1
  assert ax.get_title() == f"spectrum (RankMe {rankme:.1f} of 6)"
  flat = plots.spectrum(np.ones((40, 1)) @ rng.normal(size=(1, 6)),  # rank 1
                        str(tmp_path / "s1.png"))
  assert np.abs(_png(out) - _png(flat)).max() > 0.5


def test_pca_recovers_known_axes_and_the_scatter_draws_it(tmp_path, figures):
  rng = np.random.default_rng(0)
  n = 60
  labels = np.repeat(np.arange(3), 20)
  t = np.stack([np.linspace(-3, 3, n), 0.3 * np.sin(np.arange(n))], 1)
  t -= t.mean(0)
  t[:, 1] -= t[:, 1] @ t[:, 0] / (t[:, 0] @ t[:, 0]) * t[:, 0]  # uncorrelated axes
  rot, _ = np.linalg.qr(rng.normal(size=(8, 8)))
  x = np.concatenate([t, np.zeros((n, 6))], 1) @ rot.T  # 2 known axes in 8-D
  xy = plots.project_2d(x, "pca")
  # The 2-D PCA is the coordinates along those axes, up to each axis' sign.
  np.testing.assert_allclose(np.abs(xy), np.abs(t), atol=1e-4)
  out = plots.projection(x, labels, str(tmp_path / "pca.png"), method="pca")
  assert _png(out).shape[:2] == (552, 624)  # 5.2 x 4.6 in at 120 dpi
  ax = figures[-1].axes[0]
  drawn = [c.get_offsets() for c in ax.collections]
  assert len(drawn) == 3  # one scatter per class
  for c, pts in enumerate(drawn):
    np.testing.assert_allclose(pts, xy[labels == c], rtol=1e-6)


def test_tsne_keeps_separated_classes_apart(tmp_path):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 20)
  x = rng.normal(size=(60, 8)) + 10 * np.eye(8)[labels]
  xy = plots.project_2d(x, "tsne")
  d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
  np.fill_diagonal(d, np.inf)
  assert np.all(labels[d.argmin(1)] == labels)  # each point's neighbour: its class
  assert plots.projection(x, labels, str(tmp_path / "t.png"), method="tsne")


def test_write_run_plots_and_bad_input(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
  x = np.random.default_rng(1).normal(size=(10, 4))
  written = plots.write_run_plots(str(tmp_path), x, np.arange(10) % 2)
  assert sorted(os.path.basename(p) for p in written) == [
      "projection.png", "spectrum.png", "training.png"]
  for p in written:
    assert _png(p).shape[2] in (3, 4)
  with pytest.raises(ValueError, match="projection 'umap'"):
    plots.project_2d(x, "umap")
  with pytest.raises(ValueError, match="differ in length"):
    plots.projection(x, np.arange(3), str(tmp_path / "x.png"))
