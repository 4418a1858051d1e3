"""Summaries of a sweep: rows of (method, x, seed, value) -> mean ± std table and a plot.

Used for accuracy-vs-ε studies, where a person wants one table row per method, one column
per x value, and a line plot with error bars. Host-only (rule 4).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from jaxml.core import files


def aggregate(rows: Iterable[Mapping], *, key: str, x: str, value: str
              ) -> dict[tuple, tuple[float, float, int]]:
  """{(row[key], row[x]): (mean, sample std (0 for one run), count)} of row[value]."""
  groups: dict[tuple, list[float]] = {}
  for row in rows:
    groups.setdefault((row[key], row[x]), []).append(float(row[value]))
  return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
          for k, v in groups.items()}


def _format_x(value) -> str:
  if isinstance(value, str):
    return value
  return "∞" if isinstance(value, float) and math.isinf(value) else f"{value:g}"


def markdown_table(stats: Mapping[tuple, tuple[float, float, int]], methods: Sequence[str],
                   xs: Sequence, *, x_name: str = "ε", scale: float = 100.0,
                   digits: int = 1) -> str:
  """Methods as rows, x values as columns, cells "mean ± std" (times `scale`), best mean of
  each column in bold; a cell with no rows is "—"."""
  header = "| method | " + " | ".join(
      f"{x_name} = {_format_x(x)}" if x_name else _format_x(x) for x in xs) + " |"
  lines = [header, "|---" * (len(xs) + 1) + "|"]
  best = {x: max((stats[(m, x)][0] for m in methods if (m, x) in stats), default=None)
          for x in xs}
  for method in methods:
    cells = []
    for x in xs:
      if (method, x) not in stats:
        cells.append("—")
        continue
      mean, std, count = stats[(method, x)]
      cell = f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if count > 1 else "")
      cells.append(f"**{cell}**" if mean == best[x] else cell)
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot_vs_x(stats: Mapping[tuple, tuple[float, float, int]], methods: Sequence[str],
              xs: Sequence[float], out_png: str, *, references: Mapping[str, float] = None,
              x_label: str = "ε", y_label: str = "test accuracy", title: str = "",
              log_x: bool = True) -> str:
  """One line per method (mean with ±std error bars) over the finite x values; each
  reference (e.g. a non-private baseline) is a dashed horizontal line."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import

  finite = [x for x in xs if not math.isinf(x)]
  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  for method in methods:
    points = [(x, *stats[(method, x)][:2]) for x in finite if (method, x) in stats]
    if points:
      px, mean, std = zip(*points)
      ax.errorbar(px, mean, yerr=std, marker="o", capsize=3, label=method)
  for i, (name, level) in enumerate((references or {}).items()):
    ax.axhline(level, linestyle="--", color=f"C{len(methods) + i}", label=name)
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel(x_label)
  ax.set_ylabel(y_label)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  png = io.BytesIO()  # written whole: atomically on disk, and to a gs:// workdir too
  fig.savefig(png, format="png", dpi=100)
  files.write_bytes(out_png, png.getvalue())
  return out_png
