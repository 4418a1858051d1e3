"""The one metric writer: `metrics.jsonl` plus TensorBoard event files, process 0 only.

The workdir may be remote (`gs://...`). metrics.jsonl is then rewritten whole on every write
(object stores cannot append). tensorboardX writes gs:// event files only when
google-cloud-storage is installed (the `gcs` extra) and s3:// ones only with boto3; without
them, a remote run writes no event files and says so once.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import jax
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams as hparams_summary

from jaxml.core import files

log = logging.getLogger(__name__)
# What tensorboardX needs to write each remote scheme's event files.
_TENSORBOARD_NEEDS = {"gs": "google.cloud.storage", "s3": "boto3"}
_warned: set[str] = set()


def _finite_or_str(value: float):
  # JSON has no NaN/Inf; keep them readable rather than writing invalid JSON.
  return value if math.isfinite(value) else str(value)


class MetricWriter:
  """Appends one JSON object per logged step (always with `step`) and mirrors scalars to TB.

  On resume from step S, rows with step > S (written after the last checkpoint of the
  interrupted run) are dropped, so the file reads as if the run was never interrupted; a torn
  or damaged line is cut out first (kept in metrics.jsonl.damaged, see `files.read_jsonl`).
  """

  def __init__(self, workdir: str, *, start_step: int = 0, active: bool | None = None):
    self.active = jax.process_index() == 0 if active is None else active
    self.path = files.as_str(files.as_path(workdir) / "metrics.jsonl")
    self._tb = None
    if not self.active:
      return
    _truncate_after(self.path, start_step)
    self._jsonl = files.JsonlAppender(self.path)
    if _tensorboard_can_write(workdir):
      # purge_step makes TensorBoard discard events past the resume point, like the jsonl.
      self._tb = SummaryWriter(logdir=files.as_str(workdir), purge_step=start_step or None,
                               flush_secs=10)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: _finite_or_str(float(v)) for k, v in metrics.items()}}
    self._jsonl.write([row])
    if self._tb is not None:
      for name, value in metrics.items():
        self._tb.add_scalar(name, float(value), global_step=int(step))

  def write_hparams(self, values: Mapping[str, Any], metrics: Iterable[str] = ()) -> None:
    """The run's TensorBoard hparams: `values` flattened (`flat_hparams`), with `metrics`
    the scalar tags the hparams dashboard shows beside them. Written into the run's own
    event file (not a side folder, as `SummaryWriter.add_hparams` would), once per start."""
    if not self.active or self._tb is None:
      return
    experiment, session_start, _ = hparams_summary(flat_hparams(values), dict.fromkeys(metrics))
    for summary in (experiment, session_start):
      self._tb.file_writer.add_summary(summary)

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


def flat_hparams(values: Mapping[str, Any], prefix: str = "") -> dict[str, str | bool | float]:
  """`values` as TensorBoard hparams: nested mappings flattened to dotted keys, numbers as
  floats, lists and other values as their JSON text, None left out."""
  flat = {}
  for key, value in values.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flat_hparams(value, f"{name}."))
    elif isinstance(value, (str, bool)):
      flat[name] = value
    elif isinstance(value, (int, float)):
      flat[name] = float(value)
    elif value is not None:
      flat[name] = json.dumps(value, default=str)
  return flat


def _tensorboard_can_write(workdir) -> bool:
  scheme = files.scheme(workdir)
  if scheme is None:
    return True
  needs = _TENSORBOARD_NEEDS.get(scheme)
  try:
    found = needs is not None and importlib.util.find_spec(needs) is not None
  except ModuleNotFoundError:  # a missing parent package (google.cloud)
    found = False
  if not found and scheme not in _warned:
    _warned.add(scheme)
    log.warning("no TensorBoard event files for %s:// workdirs: tensorboardX writes them only "
                "with %s installed%s; metrics.jsonl has every logged value", scheme,
                needs or "a backend it does not have",
                " (pip install 'jaxml[gcs]')" if scheme == "gs" else "")
  return found


def is_row(row) -> bool:
  """A metrics.jsonl row: a JSON object with an integer `step`."""
  return (isinstance(row, dict) and isinstance(row.get("step"), int)
          and not isinstance(row["step"], bool))


def read_metrics(path: str) -> list[dict]:
  """All rows of a metrics.jsonl file: a torn last row (from a killed writer) skipped, a
  damaged one elsewhere skipped with a warning (`files.read_jsonl`)."""
  return files.read_jsonl(path, valid=is_row)


def _truncate_after(path: str, step: int) -> None:
  # The repair runs first: a log damaged by a full disk or a kill must not block the resume.
  rows = files.read_jsonl(path, repair=True, valid=is_row)
  keep = [r for r in rows if r["step"] <= step]
  if len(keep) < len(rows):
    files.write_jsonl(path, keep)
