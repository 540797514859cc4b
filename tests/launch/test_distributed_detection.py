"""When `jssl.main` calls jax.distributed.initialize(): exactly when JAX's own
cluster detection finds a job of several processes (`--distributed=auto`), and
`--distributed=on` without any cluster is a one-line error, not a hang."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jssl import main
from jssl_testing import REPO

_PREFIXES = ("SLURM_", "TPU_", "MEGASCALE_", "OMPI_", "KUBERNETES_", "JAX_COORDINATOR")


@pytest.fixture
def clean_env(monkeypatch):
  for k in list(os.environ):
    if k.startswith(_PREFIXES):
      monkeypatch.delenv(k)
  return monkeypatch


def _slurm_step(env, ntasks):
  for k, v in dict(SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="gpu[001-002]",
                   SLURM_STEP_NODELIST="gpu[001-002]", SLURM_NTASKS=str(ntasks),
                   SLURM_PROCID="0", SLURM_LOCALID="0").items():
    env.setenv(k, v)


def test_slurm_job_is_an_srun_step_of_several_tasks(clean_env):
  """Only an srun step is a job to JAX. In the batch script itself (no step)
  SLURM_NTASKS describes the allocation, but this one process is all there is:
  initialising would wait forever for its peers. (The old rule said yes.)"""
  _slurm_step(clean_env, ntasks=16)
  assert main._multi_host_env()
  _slurm_step(clean_env, ntasks=1)
  assert not main._multi_host_env()  # one task: nothing to coordinate
  for k in ("SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID"):
    clean_env.delenv(k)
  clean_env.setenv("SLURM_NTASKS", "16")
  assert not main._multi_host_env()


def test_gke_worker_list_off_a_tpu_vm_is_not_a_job(clean_env):
  """TPU_WORKER_HOSTNAMES alone is not a TPU job to JAX (it also needs a
  Cloud TPU VM); the old rule initialised on it."""
  assert not main._multi_host_env()
  clean_env.setenv("TPU_WORKER_HOSTNAMES", "host-a,host-b")
  assert not main._multi_host_env()


def test_tpu_vm_pod_slice_is_found_through_jax_metadata_detection(clean_env):
  """On a TPU VM the worker number and list live in the VM metadata, which
  only JAX's GceTpuCluster reads (the old rule looked at env vars a TPU VM
  does not set). Its metadata client needs a real TPU VM, so the two answers
  are stubbed here: this checks that jssl asks JAX, and counts the workers."""
  from jax._src.clusters import GceTpuCluster  # pylint: disable=import-outside-toplevel
  clean_env.setattr(GceTpuCluster, "is_env_present", classmethod(lambda cls: True))
  clean_env.setattr(GceTpuCluster, "get_process_count", classmethod(lambda cls: 4))
  assert main._multi_host_env()
  clean_env.setattr(GceTpuCluster, "get_process_count", classmethod(lambda cls: 1))
  assert not main._multi_host_env()  # a single-host TPU VM needs no distributed runtime


def test_distributed_on_without_a_cluster_is_a_config_error(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)}
  r = subprocess.run([sys.executable, "-m", "jssl.main", "--config=configs/simclr.py:smoke",
                      f"--workdir={tmp_path / 'w'}", "--distributed=on"],
                     cwd=REPO, env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True,
                     text=True, timeout=300)
  assert r.returncode != 0
  assert ("--distributed=on: no SLURM step, TPU pod slice or MPI job found and "
          "--coordinator_address, --num_processes, --process_id not given") in r.stderr
  assert not (tmp_path / "w").exists()
