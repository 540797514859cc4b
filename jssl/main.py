r"""Command-line entry point: `python -m jssl.main --config=... --workdir=...`.

  python -m jssl.main --config=configs/simclr.py:quickstart --workdir=/tmp/qs
  python -m jssl.main --config=configs/simclr.py:cifar10 --workdir=gs://b/run \
      --config.batch_size=1024 --config.data.data_dir=/data/tfds

Re-running the same command on the same workdir resumes from the latest
checkpoint. Multi-process jobs (TPU pod slices, multi-host GPU under SLURM, or
several CPU processes) call `jax.distributed.initialize`: automatically when
the environment describes a multi-host job, or when the coordinator flags are
given. This is the only module that reads FLAGS.
"""
from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jssl import config_check
from jssl import errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file path, with an optional ':preset' suffix.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory for checkpoints, logs, export.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' does so when the coordinator "
    "flags are set or SLURM / a TPU pod describes several processes.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_COLLECTIVES = flags.DEFINE_string(
    "cpu_collectives", "gloo",
    "Collectives implementation for multi-process CPU jobs.")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Print the traceback of a user error too (or set "
    "JSSL_VERBOSE=1); without it a user error is one 'error:' line, exit 2.")


def _multi_host_env() -> bool:
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return "," in hosts or int(os.environ.get("CLOUD_TPU_TASK_ID", "0")) > 0


def maybe_initialize_distributed() -> None:
  import jax  # pylint: disable=import-outside-toplevel
  mode = _DISTRIBUTED.value
  explicit = _COORDINATOR.value is not None
  if mode == "off" or (mode == "auto" and not explicit and not _multi_host_env()):
    return
  if explicit:
    jax.config.update("jax_cpu_collectives_implementation",
                      _CPU_COLLECTIVES.value)
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  else:  # TPU pods and SLURM: JAX reads the cluster from the environment.
    jax.distributed.initialize()
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. "
                         "--config=configs/simclr.py:quickstart")
  config_check.validate(_CONFIG.value)  # here too: before the seconds of TF/JAX imports
  if not flags.FLAGS["verbosity"].present:
    # Progress goes to stdout (metrics_log); library INFO logs (Orbax, TFDS)
    # would drown it. `-v 0` brings them back.
    logging.set_verbosity(logging.WARNING)
  # TF is used only for input pipelines: it must not take GPU/TPU memory.
  try:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.set_visible_devices([], "GPU")
  except ImportError:
    pass
  maybe_initialize_distributed()
  from jssl import train  # pylint: disable=import-outside-toplevel
  train.run(_CONFIG.value, _WORKDIR.value)


def cli():
  # User errors (flags, config, data, workdir): one 'error:' line, exit 2.
  app.run(errors.absl_main(main, _VERBOSE), flags_parser=errors.parse_absl_flags)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  cli()
