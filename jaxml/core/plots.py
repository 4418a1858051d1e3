"""Training curves from metrics.jsonl, as a PNG a person can look at."""

from __future__ import annotations

import io
import math

from jaxml.core import files
from jaxml.core.metrics import read_metrics


def curve_names(rows: list[dict]) -> list[str]:
  """Metrics with a numeric value at two or more steps (timings excluded)."""
  counts: dict[str, int] = {}
  for row in rows:
    for k, v in row.items():
      if k != "step" and not k.startswith("perf/") and isinstance(v, (int, float)):
        counts[k] = counts.get(k, 0) + 1
  return sorted(k for k, n in counts.items() if n >= 2)


def plot_metrics(metrics_path: str, out_png: str, keys: tuple[str, ...] | None = None) -> str:
  """One panel per metric logged at two or more steps (single final values such as the
  linear probe's belong in summary.json, not in a plot)."""
  # The object API, not pyplot: a notebook that calls the runner keeps its own backend.
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import

  rows = read_metrics(metrics_path)
  names = keys or curve_names(rows)
  cols = min(3, max(len(names), 1))
  rows_n = math.ceil(max(len(names), 1) / cols)
  fig = Figure(figsize=(4 * cols, 3 * rows_n))
  axes = fig.subplots(rows_n, cols, squeeze=False)
  for ax, name in zip(axes.flat, names):
    points = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), (int, float))]
    ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.tight_layout()
  return save_figure(fig, out_png, dpi=100)


def save_figure(fig, path, dpi: int = 110) -> str:
  """Writes a matplotlib figure as PNG whole (atomically on disk, and to a gs:// workdir too),
  so no reader ever sees half an image."""
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=dpi)
  files.write_bytes(path, png.getvalue())
  return str(path)
