"""Training curves from metrics.jsonl, as a PNG a person can look at."""

from __future__ import annotations

import math

from jaxml.core.metrics import read_metrics


def plot_metrics(metrics_path: str, out_png: str, keys: tuple[str, ...] | None = None) -> str:
  """One panel per scalar metric (train loss/accuracy, eval metrics) against step."""
  import matplotlib  # pylint: disable=import-outside-toplevel  # host-only, slow import
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  rows = read_metrics(metrics_path)
  names = keys or sorted({k for r in rows for k, v in r.items()
                          if k != "step" and isinstance(v, (int, float))
                          and not k.startswith("perf/")})
  cols = min(3, max(len(names), 1))
  fig, axes = plt.subplots(math.ceil(max(len(names), 1) / cols), cols,
                           figsize=(4 * cols, 3 * math.ceil(max(len(names), 1) / cols)),
                           squeeze=False)
  for ax, name in zip(axes.flat, names):
    points = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), (int, float))]
    ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return out_png
