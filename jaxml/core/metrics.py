"""The one metric writer: `metrics.jsonl` plus TensorBoard event files, process 0 only."""

from __future__ import annotations

import json
import math
import os

import jax
from tensorboardX import SummaryWriter


def _finite_or_str(value: float):
  # JSON has no NaN/Inf; keep them readable rather than writing invalid JSON.
  return value if math.isfinite(value) else str(value)


class MetricWriter:
  """Appends one JSON object per logged step (always with `step`) and mirrors scalars to TB.

  On resume from step S, rows with step > S (written after the last checkpoint of the
  interrupted run) are dropped, so the file reads as if the run was never interrupted.
  """

  def __init__(self, workdir: str, *, start_step: int = 0, active: bool | None = None):
    self.active = jax.process_index() == 0 if active is None else active
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.active:
      return
    _truncate_after(self.path, start_step)
    self._file = open(self.path, "a", encoding="utf-8")
    # purge_step makes TensorBoard discard events past the resume point, like the jsonl.
    self._tb = SummaryWriter(logdir=workdir, purge_step=start_step or None,
                             flush_secs=10)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: _finite_or_str(float(v)) for k, v in metrics.items()}}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    for name, value in metrics.items():
      self._tb.add_scalar(name, float(value), global_step=int(step))

  def close(self) -> None:
    if self.active:
      self._file.close()
      self._tb.close()


def read_metrics(path: str) -> list[dict]:
  """All rows of a metrics.jsonl file."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _truncate_after(path: str, step: int) -> None:
  if not os.path.exists(path):
    return
  keep = [r for r in read_metrics(path) if r["step"] <= step]
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in keep)
  os.replace(tmp, path)
