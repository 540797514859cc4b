"""Any storage: a `gs://` workdir against a fake GCS server on localhost.

The fake is `gcp-storage-emulator` (pure Python, in the test extras). The run
reaches it the way a real job reaches GCS: etils.epath through fsspec/gcsfs
(`STORAGE_EMULATOR_HOST`; `EPATH_USE_TF=false` so epath does not pick
TensorFlow's GCS client) and Orbax's array data through TensorStore's own GCS
driver (`TENSORSTORE_GCS_HTTP_URL`, with a fixed test token). The tests read
the bucket back with gcsfs and check that nothing landed on local disk.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from jssl_testing import REPO

SMOKE = os.path.join(REPO, "configs", "simclr.py") + ":smoke"

# Every file jssl.storage serves, against the fake bucket, without a training
# run: export + load_encoder (equal to a local export), an evaluation report
# into the bucket, a MetricsLog resumed on gs://, and the run plots.
UNIT_CHECKS = textwrap.dedent("""\
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    import jssl
    from jssl import errors, evaluate, export, models, plots
    from jssl.data import digits
    from jssl.metrics_log import MetricsLog

    cfg = {"name": "resnet_tiny", "stem": "cifar"}
    variables = models.make_encoder(cfg).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)),
                                              train=False)
    mean, std = digits.digits_mean_std(16)
    pp = {"size": 16, "mean": list(mean), "std": list(std), "crop_fraction": 1.0,
          "channels": 3}
    for path in ("gs://bucket/unit/export", sys.argv[1]):
      export.export_encoder(path, variables=variables, model_config=cfg, preprocess=pp,
                            provenance={"method": "t"})
    arrays = digits.load_arrays("digits", size=16)
    imgs, labels = arrays.test_images[:40], arrays.test_labels[:40]
    feats = jssl.load_encoder("gs://bucket/unit/export")(imgs)
    np.testing.assert_array_equal(feats, jssl.load_encoder(sys.argv[1])(imgs))
    try:
      export.export_encoder("gs://bucket/unit/export", variables=variables,
                            model_config={**cfg, "width_multiplier": 2.0}, preprocess=pp)
      refused = None
    except errors.ExportError as e:
      refused = str(e)
    rep = evaluate.evaluate_export("gs://bucket/unit/export", "digits", protocols="knn",
                                   plots="pca", log=lambda *a: None)
    log = MetricsLog("gs://bucket/unit")
    log.start(0)
    for s in (1, 2, 3, 4):
      log.write(s, {"loss": float(s)})
    log.close()
    log = MetricsLog("gs://bucket/unit")
    log.start(2)  # resumed at step 2: rows 3 and 4 are dropped
    log.write(3, {"loss": 30.0})
    log.close()
    written = plots.write_run_plots("gs://bucket/unit", feats, labels)
    print("CHECKS " + json.dumps({"dim": feats.shape[1], "out": rep["out"],
                                  "export": rep["export"], "knn": rep["results"]["knn"],
                                  "refused": refused, "plots": written}))
    """)


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _refuse_move_to(request, response, storage, *args, **kwargs):
  from http import HTTPStatus  # pylint: disable=import-outside-toplevel
  response.status = HTTPStatus.BAD_REQUEST


def _patch_emulator(emulator):
  """Two gaps of the emulator that real GCS does not have (test-only fixes).

  `moveTo` (gcsfs's rename) is not implemented: the emulator answers 501,
  which gcsfs retries with backoff for ~30 s before copying and deleting.
  Answering 400 makes gcsfs fall back at once.
  """
  route = (rf"^{emulator.settings.API_ENDPOINT}/b/(?P<bucket_name>[-.\w]+)/o/"
           r"(?P<object_id>.*[^/]+)/moveTo/o/(?P<destination>.*[^/]+)$")
  if emulator.HANDLERS[0][0] != route:  # the router reads the table per request
    emulator.HANDLERS = ((route, {emulator.POST: _refuse_move_to}),) + emulator.HANDLERS
  _send_generation_on_download(emulator)


def _send_generation_on_download(emulator):
  """Real GCS sends an object's generation (`x-goog-generation`) with its
  content; TensorStore's OCDBT driver (Orbax's array store) needs it to
  update a manifest it has read, and fails with 'Malformed StorageGeneration'
  without it. The emulator omits the header: add it to its download handler."""
  from gcp_storage_emulator.handlers import objects  # pylint: disable=import-outside-toplevel
  download = objects.download
  if getattr(download, "sends_generation", False):
    return

  def with_generation(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params["bucket_name"],
                                 request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
    except Exception:  # pylint: disable=broad-except
      pass  # not found: the handler answers 404
    return download(request, response, storage, *args, **kwargs)

  with_generation.sends_generation = True
  objects.download = with_generation  # `get` with alt=media calls it by name
  for _, methods in emulator.HANDLERS:  # the routing table holds it directly
    for method, fn in list(methods.items()):
      if fn is download:
        methods[method] = with_generation


@pytest.fixture(scope="module")
def fake_gcs():
  """URL of a fake GCS server (in-memory, bucket 'bucket') and a gcsfs client."""
  pytest.importorskip("gcsfs")
  from gcsfs.core import GCSFileSystem  # pylint: disable=import-outside-toplevel
  emulator = pytest.importorskip("gcp_storage_emulator.server")
  _patch_emulator(emulator)
  port = _free_port()
  server = emulator.create_server("localhost", port, in_memory=True,
                                  default_bucket="bucket")
  server.start()
  url = f"http://localhost:{port}"
  fs = GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True)
  yield url, fs
  server.stop()


def _gcs_env(url):
  # GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false: gcsfs's default client asks a
  # storage-control API (not emulated) for each bucket's layout, and warns.
  return {"STORAGE_EMULATOR_HOST": url, "EPATH_USE_TF": "false",
          "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def _python(args, *, cwd, env_extra, timeout=400):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
             **env_extra)
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


@pytest.mark.slow
def test_gs_metrics_events_exports_evaluations_and_plots_go_to_the_bucket(fake_gcs, tmp_path):
  url, fs = fake_gcs
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  c = _python(["-c", UNIT_CHECKS, str(tmp_path / "local_export")], cwd=cwd,
              env_extra=_gcs_env(url))
  assert c.returncode == 0, c.stderr[-4000:]
  out = json.loads(c.stdout.split("CHECKS ", 1)[1])
  fs.invalidate_cache()
  files = {f[len("bucket/unit/"):] for f in fs.find("bucket/unit")}
  # The export: both files, loadable (features equal a local export's, checked
  # in the subprocess), and no second model written over it.
  assert {"export/export.json", "export/params.npz"} <= files
  assert "already holds an export of a different model" in out["refused"]
  assert json.loads(fs.cat("bucket/unit/export/export.json"))["model"]["name"] == "resnet_tiny"
  # The evaluation report, written next to the export in the bucket.
  assert out["export"] == "gs://bucket/unit/export"
  assert out["out"] == "gs://bucket/unit/export/eval_digits"
  report = json.loads(fs.cat("bucket/unit/export/eval_digits/eval.json"))
  assert report["results"]["knn"] == out["knn"] and report["num_test"] == 450
  assert {"export/eval_digits/eval.md", "export/eval_digits/spectrum.png",
          "export/eval_digits/projection.png"} <= files
  # metrics.jsonl resumed at step 2 on gs://: rows 3 and 4 of the first run
  # dropped, each step once; one event file per run.
  rows = [json.loads(l) for l in fs.cat("bucket/unit/metrics.jsonl").decode().splitlines()]
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]
  assert len([f for f in files if f.startswith("tensorboard/events.out.tfevents.")]) == 2
  # The run plots, drawn from the bucket's metrics.jsonl into the bucket.
  assert sorted(out["plots"]) == [f"gs://bucket/unit/plots/{n}.png"
                                  for n in ("projection", "spectrum", "training")]
  assert fs.cat("bucket/unit/plots/training.png")[:8] == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(cwd) == []  # nothing landed on local disk ('gs:' folder)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jssl.workdir") is None,
                    reason="needs the checkpoint branch: checkpoints and config.json "
                           "through etils.epath (jssl.workdir, jssl.checkpoint)")
def test_gs_workdir_smoke_run_keeps_everything_in_the_bucket(fake_gcs, tmp_path):
  url, fs = fake_gcs
  cwd = tmp_path / "cwd"  # where a path bug would leave a local 'gs:' folder
  cwd.mkdir()
  p = _python(["-m", "jssl.main", f"--config={SMOKE}", "--workdir=gs://bucket/run"],
              cwd=cwd, env_extra=_gcs_env(url))
  assert p.returncode == 0, p.stderr[-4000:]
  fs.invalidate_cache()
  files = {f[len("bucket/run/"):] for f in fs.find("bucket/run")}
  for name in ("config.json", "metrics.jsonl", "results.json", "export/export.json",
               "export/params.npz", "plots/training.png", "plots/spectrum.png",
               "plots/projection.png"):
    assert name in files, sorted(files)
  assert [f for f in files if f.startswith("tensorboard/events.out.tfevents.")]
  assert [f for f in files if f.startswith("checkpoints/6/")]
  rows = [json.loads(l) for l in fs.cat("bucket/run/metrics.jsonl").decode().splitlines()]
  assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
  results = json.loads(fs.cat("bucket/run/results.json"))
  assert results["steps"] == 6 and "linear_top1" in results["pretrained"]
  meta = json.loads(fs.cat("bucket/run/export/export.json"))
  assert meta["provenance"]["workdir"] == "gs://bucket/run"  # not $CWD/gs:/...
  assert "results in gs://bucket/run/results.json" in p.stdout
  assert os.listdir(cwd) == []  # nothing landed on local disk


def test_gs_path_without_gcsfs_is_one_clear_error(tmp_path):
  code = textwrap.dedent(f"""\
      import sys
      sys.modules["gcsfs"] = None  # as if not installed: import fails
      sys.path.insert(0, {os.path.join(REPO, "tests")!r})
      from jssl import errors, export, train
      from jssl.metrics_log import MetricsLog
      from jssl_testing import load_config
      for fn in (lambda: train.run(load_config("configs/simclr.py:smoke"), "gs://b/run"),
                 lambda: export.load_encoder("gs://b/run/export"),
                 lambda: MetricsLog("gs://b/run")):
        try:
          fn()
          print("NO ERROR")
        except errors.JsslError as e:
          print(type(e).__name__ + ": " + str(e))
      """)
  p = _python(["-c", code], cwd=tmp_path, env_extra={"EPATH_USE_TF": "false"})
  assert p.returncode == 0, p.stderr[-3000:]
  need = "gs:// paths need the gcsfs package, which is not installed: pip install"
  assert p.stdout.splitlines() == [
      f"WorkdirError: workdir 'gs://b/run': {need} 'jssl[gcs]' (or pip install gcsfs)",
      f"ExportError: export 'gs://b/run/export': {need} 'jssl[gcs]' (or pip install gcsfs)",
      f"WorkdirError: workdir 'gs://b/run': {need} 'jssl[gcs]' (or pip install gcsfs)"]
  assert os.listdir(tmp_path) == []  # no local 'gs:' folder


def test_unsupported_url_scheme_and_provenance_paths(tmp_path):
  from jssl import errors, storage  # pylint: disable=import-outside-toplevel
  with pytest.raises(errors.WorkdirError, match=r"memory:// scheme is not supported"):
    storage.path("memory://bucket/run")
  assert storage.display("gs://b/run") == "gs://b/run"
  rel = os.path.relpath(tmp_path)
  assert storage.display(rel) == str(tmp_path)
  # Local files: whole-file writes replace atomically; appends accumulate.
  storage.write_atomic(tmp_path / "a.json", "1")
  storage.write_atomic(tmp_path / "a.json", b"2")
  assert (tmp_path / "a.json").read_text() == "2"
  assert sorted(os.listdir(tmp_path)) == ["a.json"]
  f = storage.AppendFile(tmp_path / "d" / "log.txt")
  f.write("x\n")
  f.flush()
  assert (tmp_path / "d" / "log.txt").read_text() == "x\n"
  f.close()
  assert storage.is_remote("s3://b/k") and not storage.is_remote(tmp_path)
