"""Run-time faults the training loop survives: preemption and divergence.

Preemption (`StopSignal`). SLURM, Kubernetes and Cloud TPU maintenance send
SIGTERM before killing a job; a person stopping a run sends SIGINT (Ctrl-C).
Either one asks the loop to finish the step in flight, save and commit a
checkpoint of that step, print one line naming it and leave; re-running the
same command resumes there, bit-identically (the data order is a function of
the step). Every process of a multi-host job must save the SAME step, or the
checkpoint is torn:
  * one process: Python signal handlers set a flag the loop reads after each
    step (a host-side check, no device sync);
  * several processes (`jax.distributed` initialised): JAX's preemption sync
    manager, created by `jax.distributed.initialize`, already listens for
    SIGTERM on every host and runs a background protocol that picks one step
    all hosts reach (`multihost_utils.reached_preemption_sync_point`, which
    the loop calls with the same step ids on every host; Orbax's
    `CheckpointManager.reached_preemption` is the same call). A Python SIGTERM
    handler would replace JAX's native one, so none is installed there; SIGINT
    is forwarded to it as SIGTERM.
After the last checkpoint of the run is committed the handlers are removed:
a signal during the final evaluation or export stops the process the usual
way, and re-running re-evaluates from that checkpoint.

Divergence (`FiniteGuard`). The jitted step returns `metrics['finite']`
(`isfinite(loss) & isfinite(grad_norm)`), computed on device every step at no
measurable cost. The host does not read it every step (that would sync the
device each step and stall dispatch); it keeps the flags of the steps since
the last check and reads them all at every log step, before every checkpoint
save (interval, preemption, final) and before the export. So training stops
at the first log or save step after a non-finite step, with a message naming
that step and the last good checkpoint, and no state computed at or after a
non-finite step is ever saved or exported: the good checkpoints are never
rotated away by bad ones.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

import jax
import numpy as np

from jssl.errors import DivergenceError

# Exit statuses of a preempted `jssl.main` process: the shells' 128 + signal
# number, so schedulers and wrappers see "stopped by SIGTERM/SIGINT" (and a
# `--requeue`d SLURM job or a restarting Kubernetes Job runs it again).
EXIT_STATUS = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}


def _distributed() -> bool:
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  return distributed.global_state.client is not None


class StopSignal:
  """SIGTERM / SIGINT -> "stop after this step", agreed by every process.

  Use as a context manager around the training loop; call `should_stop(step)`
  after every step with the number of steps done (the same ids on every
  host). `received` names the signal this process got ('SIGTERM', 'SIGINT'),
  or 'SIGTERM' when another host was preempted.
  """

  def __init__(self):
    self.received: Optional[str] = None
    self._multi = False
    self._previous: dict = {}

  def __enter__(self) -> "StopSignal":
    if threading.current_thread() is not threading.main_thread():
      return self  # signal handlers can only be set from the main thread
    self._multi = _distributed()
    sigs = (signal.SIGINT,) if self._multi else (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    name = signal.Signals(signum).name
    if name == "SIGINT" and self.received == "SIGINT":
      raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
    if self.received is None:
      self.received = name
      print(f"{name} received: finishing the current step, then saving a "
            "checkpoint and stopping" + (" (Ctrl-C again: stop now, without "
                                         "saving)" if name == "SIGINT" else ""),
            flush=True)
    if self._multi and signum == signal.SIGINT:
      # JAX's native handler turns SIGTERM into the hosts' agreement.
      signal.raise_signal(signal.SIGTERM)

  def should_stop(self, step: int) -> bool:
    if self._multi:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      if multihost_utils.reached_preemption_sync_point(step):
        self.received = self.received or "SIGTERM"
        return True
      return False
    return self.received is not None

  def __exit__(self, *exc) -> None:
    for sig, prev in self._previous.items():
      signal.signal(sig, prev)
    self._previous = {}


class FiniteGuard:
  """Collects the step's on-device `finite` flags; `check()` reads them.

  `last_good` is the last checkpointed step known to be finite (the loop sets
  it after each save) and appears in the divergence message.
  """

  def __init__(self, workdir: str, last_good: Optional[int]):
    self._pending: list[tuple[int, jax.Array]] = []
    self.workdir = workdir
    self.last_good = last_good

  def add(self, step: int, finite: jax.Array) -> None:
    """`finite` of the step that made `step` steps done (not read here)."""
    self._pending.append((step, finite))

  def check(self, metrics: Optional[dict] = None) -> None:
    """Raises `DivergenceError` if any collected step was non-finite.

    `metrics`, when given, are the host values of the latest step, quoted in
    the message (loss, grad_norm).
    """
    if not self._pending:
      return
    steps = [s for s, _ in self._pending]
    flags = np.asarray(jax.device_get([f for _, f in self._pending]))
    self._pending = []
    bad = np.flatnonzero(~flags.astype(bool))
    if bad.size:
      self.fail(steps[int(bad[0])], metrics)

  def fail(self, step: int, metrics: Optional[dict] = None) -> None:
    shown = ""
    if metrics:
      shown = " (" + ", ".join(f"{k} {float(metrics[k]):.4g}" for k in
                               ("loss", "grad_norm") if k in metrics) + " at the last log step)"
    good = (f"the last good checkpoint is step {self.last_good} in "
            f"{self.workdir}/checkpoints; re-running resumes from it"
            if self.last_good else "no checkpoint was written; re-running starts fresh")
    raise DivergenceError(
        f"training diverged: non-finite loss or gradient norm at step {step}"
        f"{shown}; nothing computed from step {step} on was saved or exported, "
        f"{good}. Lower the learning rate (config.optimizer.base_lr) or raise "
        "the temperature, or set config.optimizer.grad_clip_norm")
