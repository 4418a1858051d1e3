"""The workdir contract that every training run and every study leaves (local or gs://):

  config.json            the resolved config
  metrics.jsonl          one JSON object per logged step (and TensorBoard events beside it)
  artifacts/summary.json the final numbers, with the headline metric names
  artifacts/metrics.png  curves of what was logged

Only the chief process writes them.
"""

from __future__ import annotations

import json
import os

from jaxml.core import files
from jaxml.core.plots import plot_metrics


def write_config(workdir: str, config) -> None:
  files.write_json(os.path.join(workdir, "config.json"),
                   json.loads(config.to_json_best_effort()), sort_keys=True)


def write_artifacts(workdir: str, summary: dict, metrics_path: str) -> None:
  """summary.json, and metrics.png drawn from `metrics_path` (the run's metrics.jsonl)."""
  artifacts = os.path.join(workdir, "artifacts")
  files.makedirs(artifacts)
  files.write_json(os.path.join(artifacts, "summary.json"), summary, sort_keys=True)
  plot_metrics(metrics_path, os.path.join(artifacts, "metrics.png"))
