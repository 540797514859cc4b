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
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jssl import config_check
from jssl import configs
from jssl import errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "The run book and preset, NAME:PRESET (e.g. simclr:quickstart; installed with jssl, "
    "works from any directory). Run books: " + ", ".join(configs.names()) + "; each "
    "one's presets and expected results are in its docstring, jssl/configs/NAME.py "
    "(jssl.configs.presets(NAME) lists them). A config file PATH.py[:PRESET] works too "
    "(e.g. configs/simclr.py:quickstart in a checkout). Override any field with "
    "--config.FIELD=VALUE (e.g. --config.total_steps=100); a misspelled field fails. "
    "Your own data: --config.data.source=folder --config.data.path=DIR "
    "(DIR/<class>/*.jpg|png labelled by folder, or a flat DIR/*.jpg|png unlabelled), "
    "or --config.data.source=npz --config.data.path=FILE.npz ('images' uint8 "
    "[N,H,W,C], optional 'labels' [N]), or --config.data.source=tfds "
    "--config.data.name=NAME; --config.data.eval_path=DIR|FILE.npz adds a labelled "
    "set for the probes (README 'Your own data').",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None,
    "Directory (or gs:// URL) for checkpoints, metrics, plots, the export and "
    "results.json. Re-running on the same workdir resumes. Required.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' does so when the coordinator "
    "flags are set or JAX's cluster detection finds a job of several processes "
    "(a SLURM step, a Cloud TPU VM pod slice, Open MPI); 'on' always does and "
    "fails when neither describes the job (the launchers pass it); 'off' never.")
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


def _detected_cluster():
  """The cluster JAX itself would bootstrap from, or None.

  `jax.distributed.initialize()` without arguments takes the first of JAX's
  `ClusterEnv` types whose `is_env_present()` holds (Open MPI, SLURM step,
  GKE TPU, Cloud TPU VM, Kubernetes; mpi4py is opt-in). Asking the same
  classes keeps 'auto' exact: our own env-var guesses missed TPU VMs, whose
  worker number and worker list live in the VM metadata, not in the
  environment (JAX's GceTpuCluster reads `agent-worker-number` and
  `worker-network-endpoints` there). The classes are private JAX API, so a JAX
  without them counts as 'no cluster' and the launchers pass --distributed=on.
  """
  try:
    from jax._src import clusters  # pylint: disable=import-outside-toplevel
    types = clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return None
  for env in types:
    if env.opt_in_only_method:
      continue
    try:
      present = env.is_env_present()
    except Exception as e:  # pylint: disable=broad-except
      # e.g. a TPU VM without `requests` (JAX's metadata client).
      logging.warning("JAX's %s check failed (%s); not using it.", env.__name__, e)
      continue
    if present:
      return env
  return None


def _multi_host_env() -> bool:
  """Whether JAX's cluster detection finds a job of more than one process.

  A one-task SLURM step or a single-host TPU VM is a cluster to JAX but needs
  no distributed runtime, so it trains as a plain single process.
  """
  env = _detected_cluster()
  if env is None:
    return False
  try:
    return env.get_process_count() > 1
  except Exception as e:  # pylint: disable=broad-except
    # e.g. Kubernetes API denied: train alone rather than crash a 1-host run.
    logging.warning("%s found, but its process count is unreadable (%s): running "
                    "as one process; pass --distributed=on to insist.", env.__name__, e)
    return False


def maybe_initialize_distributed() -> None:
  """Initialises jax.distributed per --distributed (see the flag's help).

  Must run before anything touches a JAX backend. Explicit coordinator flags
  win; JAX fills any left unset from the detected cluster.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from jssl.errors import ConfigError  # pylint: disable=import-outside-toplevel
  mode = _DISTRIBUTED.value
  given = {"--coordinator_address": (_COORDINATOR.value
                                     or os.environ.get("JAX_COORDINATOR_ADDRESS")),
           "--num_processes": _NUM_PROCESSES.value, "--process_id": _PROCESS_ID.value}
  explicit = any(v is not None for v in (_COORDINATOR.value, _NUM_PROCESSES.value,
                                         _PROCESS_ID.value))
  if mode == "off" or (mode == "auto" and not explicit and not _multi_host_env()):
    return
  missing = [k for k, v in given.items() if v is None]
  if missing and _detected_cluster() is None:
    raise ConfigError(
        f"--distributed={mode}: no SLURM step, TPU pod slice or MPI job found and "
        f"{', '.join(missing)} not given; run under srun / on every TPU worker, or "
        "pass --coordinator_address, --num_processes and --process_id")
  # Multi-process CPU jobs need cross-process collectives (gloo by default);
  # the flag only affects the CPU backend.
  jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
  jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                             num_processes=_NUM_PROCESSES.value,
                             process_id=_PROCESS_ID.value)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def _tune_cpu() -> None:
  """XLA:CPU flag and conv_impl measured for this CPU (`jssl.cpu_tuning`):
  before JAX starts, and only when the run can only use the CPU."""
  from jssl import cpu_tuning  # pylint: disable=import-outside-toplevel
  cpu_tuning.apply_for_run()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. "
                         "--config=simclr:quickstart")
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
  _tune_cpu()
  maybe_initialize_distributed()
  from jssl import faults, train  # pylint: disable=import-outside-toplevel
  result = train.run(_CONFIG.value, _WORKDIR.value)
  if result.get("preempted"):  # checkpoint saved; tell the scheduler why we left
    sys.exit(faults.EXIT_STATUS[result["preempted"]])


def _key_flags_for_help() -> None:
  """absl's --help lists the key flags of the module named by sys.argv[0]. For
  `python -m jssl.main` that is this module; for the `jssl-train` console
  script it is the generated wrapper, which defines none, so --help listed no
  flags. Register this module's flags as the wrapper's key flags, and show this
  docstring as its usage text."""
  here = flags.FLAGS.find_module_defining_flag(_WORKDIR.name)
  if here != sys.argv[0]:
    for flag in flags.FLAGS.get_key_flags_for_module(here):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  main_module = sys.modules.get("__main__")
  if main_module is not None and not main_module.__doc__:
    main_module.__doc__ = __doc__


def cli():
  """`jssl-train` and `python -m jssl.main`."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  _key_flags_for_help()
  try:
    sys.argv = configs.resolve_argv(sys.argv)  # ml_collections reads sys.argv too
  except (errors.JsslError, flags.Error) as e:  # a wrong run-book name: one line
    print(f"error: {e}", file=sys.stderr)
    sys.exit(errors.USER_ERROR_EXIT)
  # User errors (flags, config, data, workdir): one 'error:' line, exit 2.
  app.run(errors.absl_main(main, _VERBOSE), flags_parser=errors.parse_absl_flags)


if __name__ == "__main__":
  cli()
