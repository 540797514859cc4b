"""Process-0 metrics log: `workdir/metrics.jsonl` plus human-readable lines.

One JSON object per line (`{"step": ..., name: value, ...}`), appended, so a
resumed run continues the same file and plots can be drawn from it alone.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

from absl import logging
import jax


class MetricsLog:

  def __init__(self, workdir: str):
    self._primary = jax.process_index() == 0
    self._f = None
    if self._primary:
      os.makedirs(workdir, exist_ok=True)
      self._f = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def write(self, step: int, metrics: dict) -> None:
    if not self._f:
      return
    row = {"step": int(step), "time": round(time.time(), 3)}
    for k, v in metrics.items():
      v = float(v) if not isinstance(v, (str, bool)) and v is not None else v
      row[k] = None if isinstance(v, float) and not math.isfinite(v) else v
    self._f.write(json.dumps(row) + "\n")
    self._f.flush()

  def info(self, msg: str) -> None:
    """A progress line: printed by process 0 (stdout) and sent to absl."""
    logging.info(msg)
    if self._primary:
      print(msg, file=sys.stdout, flush=True)

  def close(self) -> None:
    if self._f:
      self._f.close()
      self._f = None
