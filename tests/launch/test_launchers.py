"""launch/tpu_pod.sh and launch/slurm_gpu.sbatch, run end to end on localhost.

Stand-in `gcloud`, `sbatch` and `srun` (tests/launch/bin, first on PATH) start
the workers as two local CPU processes with the environment a TPU VM worker or
a SLURM task has as far as JAX's cluster detection reads it; the training
command each script builds runs for real, and the job must end with the
parameters of one process driving two devices. Equal parameters alone would
not prove one job (two separate single-process runs compute the same thing),
so each test also checks that the processes formed one 2-process job.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jssl_testing import REPO, export_params

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin")
TPU = os.path.join(REPO, "launch", "tpu_pod.sh")
SLURM = os.path.join(REPO, "launch", "slurm_gpu.sbatch")
CONFIG = "configs/simclr.py:smoke"
# Judged by the exported parameters: the end-of-run probes are off (their
# compile time, in every process, was a third of each test).
FLAGS = ["--config.total_steps=4", "--config.checkpoint.every_steps=2",
         "--config.eval.at_end=False"]


def _venv(tmp_path, python=None):
  """A directory with bin/activate that puts `python` (this interpreter, or a
  script) first on PATH: what the launchers activate on a worker / node."""
  bindir = tmp_path / "venv" / "bin"
  bindir.mkdir(parents=True)
  # A wrapper, not a symlink: a venv's python finds its site-packages from the
  # path it was started by.
  (bindir / "python").write_text(python or f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
  (bindir / "python").chmod(0o755)
  (bindir / "activate").write_text(f'export PATH="{bindir}:$PATH"\n')
  return str(bindir.parent)


def _env(devices, **extra):
  env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"], JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
  for k in list(env):  # the job's identity comes from the stand-ins only
    if k.startswith(("SLURM_", "TPU_", "MEGASCALE_", "OMPI_", "JAX_COORDINATOR")):
      del env[k]
  return env


def _run(cmd, env, timeout=600):
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
  """The reference: one process, two CPU devices, same config."""
  workdir = str(tmp_path_factory.mktemp("single") / "run")
  one = _run([sys.executable, "-m", "jssl.main", f"--config={CONFIG}",
              f"--workdir={workdir}", *FLAGS], _env(2))
  assert one.returncode == 0, one.stderr[-3000:]
  return export_params(workdir)


def _assert_same(single, workdir, out):
  assert "on 2 cpu device(s), 2 process(es)" in out, out[-3000:]
  assert out.count("step 4/4") == 1, out[-3000:]  # only process 0 prints progress
  multi = export_params(workdir)
  assert single.keys() == multi.keys()
  for k in single:
    np.testing.assert_allclose(single[k], multi[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.slow
def test_tpu_pod_two_workers_equal_one_process(tmp_path, single):
  # A workdir with a space and a quote: it must reach the workers as one word.
  workdir = str(tmp_path / "pod run's dir")
  log = tmp_path / "gcloud.jsonl"
  r = _run(["bash", TPU, "my-v4-16", "us-central2-b", CONFIG, workdir, *FLAGS],
           _env(1, JSSL_SETUP="skip", JSSL_REMOTE_DIR=REPO, JSSL_REMOTE_VENV=_venv(tmp_path),
                GCLOUD_STANDIN_LOG=str(log)))
  assert r.returncode == 0, r.stderr[-3000:]
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  assert len(calls) == 1 and calls[0][:7] == [  # JSSL_SETUP=skip: the training call only
      "compute", "tpus", "tpu-vm", "ssh", "my-v4-16", "--zone=us-central2-b", "--worker=all"]
  _assert_same(single, workdir, r.stdout)


@pytest.mark.slow
def test_slurm_two_tasks_per_node_equal_one_process(tmp_path, single):
  workdir = str(tmp_path / "slurm run")
  r = _run(["sbatch", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=2", SLURM, CONFIG,
            workdir, *FLAGS], _env(1, JSSL_VENV=_venv(tmp_path)))
  assert r.returncode == 0, r.stderr[-3000:]
  _assert_same(single, workdir, r.stdout)


RECORD = """#!/usr/bin/env bash
printf '%s\\0' "$@" > "{out}.$TPU_WORKER_ID"
"""


def test_tpu_pod_without_extra_flags_passes_no_empty_argument(tmp_path):
  """The old script turned 'no extra flags' into one empty argument, which
  jssl.main rejected (`unexpected arguments: ['']`)."""
  out = tmp_path / "argv"
  r = _run(["bash", TPU, "pod", "zone", CONFIG, "gs://bucket/run"],
           _env(1, JSSL_SETUP="skip", JSSL_REMOTE_DIR=REPO,
                JSSL_REMOTE_VENV=_venv(tmp_path, RECORD.format(out=out))))
  assert r.returncode == 0, r.stderr
  for worker in range(2):
    argv = (tmp_path / f"argv.{worker}").read_text().split("\0")[:-1]
    assert argv == ["-m", "jssl.main", f"--config={CONFIG}", "--workdir=gs://bucket/run",
                    "--distributed=on"]


@pytest.mark.parametrize("args", [[], ["pod", "zone", CONFIG], ["pod", "", CONFIG, "/w"]])
def test_tpu_pod_missing_arguments_print_usage_and_exit_2(tmp_path, args):
  log = tmp_path / "gcloud.jsonl"
  r = _run(["bash", TPU, *args], _env(1, GCLOUD_STANDIN_LOG=str(log)))
  assert r.returncode == 2, r.stderr
  assert "usage: launch/tpu_pod.sh NAME ZONE CONFIG WORKDIR" in r.stderr
  assert "JSSL_SETUP" in r.stderr
  assert not log.exists()  # nothing reached a worker


def test_tpu_pod_unknown_setup_mode_exits_2(tmp_path):
  r = _run(["bash", TPU, "pod", "zone", CONFIG, "/w"], _env(1, JSSL_SETUP="git"))
  assert r.returncode == 2
  assert "JSSL_SETUP=git: expected copy or skip" in r.stderr


@pytest.mark.parametrize("args", [[], [CONFIG], ["", "/w"]])
def test_slurm_missing_arguments_print_usage_and_exit_2(args):
  r = _run(["bash", SLURM, *args], _env(1))
  assert r.returncode == 2, r.stderr
  assert "usage: sbatch [--nodes=N] launch/slurm_gpu.sbatch CONFIG WORKDIR" in r.stderr


def test_slurm_fewer_tasks_than_gpus_exits_2(tmp_path):
  """The old script ran one task per node, so a 4x8-GPU job trained on 4 GPUs."""
  r = _run(["sbatch", "--ntasks-per-node=1", "--gpus-per-node=8", SLURM, CONFIG,
            str(tmp_path / "w")], _env(1))
  assert r.returncode == 2, r.stderr
  assert "--ntasks-per-node=1 but 8 GPUs per node" in r.stderr
  assert not (tmp_path / "w").exists()


SRUN_RECORD = """#!/usr/bin/env bash
echo "$SLURM_NODEID $SLURM_LOCALID $SLURM_PROCID $SLURM_GPUS_ON_NODE" > "{out}.$SLURM_PROCID"
"""


def test_slurm_defaults_start_one_task_per_gpu(tmp_path):
  """`sbatch --nodes=2 launch/slurm_gpu.sbatch ...` as documented: the script's
  own #SBATCH lines give 8 GPUs and 8 tasks per node, so 16 processes, each
  with its SLURM_LOCALID (the GPU JAX gives it) in 0..7 on its node."""
  out = tmp_path / "task"
  r = _run(["sbatch", "--nodes=2", SLURM, CONFIG, str(tmp_path / "w")],
           _env(1, JSSL_VENV=_venv(tmp_path, SRUN_RECORD.format(out=out))))
  assert r.returncode == 0, r.stderr
  tasks = sorted(tuple(map(int, p.read_text().split()))
                 for p in tmp_path.glob("task.*"))
  assert tasks == [(n, l, 8 * n + l, 8) for n in range(2) for l in range(8)]
