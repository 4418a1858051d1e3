"""Summaries of a sweep: rows of (method, x, seed, value) -> mean ± std per cell, as markdown.

Used for accuracy-vs-ε studies and per-game score tables, where a person wants one table row
per method and one column per x value (the plot of the same statistics is
`figures.plot_vs_x`). Host-only (rule 4).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np



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


def slug(label: str) -> str:
  """A table row's label as part of a metric name ("UniPi (w=1)" -> "unipi_w=1"): TensorBoard
  tags keep only word characters, '-', '.', '/' (and '=' reads well in both)."""
  return re.sub(r"[^\w=.-]+", "_", label.lower()).strip("_")


def claim_lines(stats: Mapping[tuple, tuple[float, float, int]], pairs, methods: Sequence[str],
                xs: Sequence, *, measure: str = "") -> list[str]:
  """A markdown bullet per claim (method, other, text) of `pairs` whose methods were both
  studied: "- <text><measure> — <x>: a vs b (holds | does not hold); ...", a and b the means
  of `stats[(method, x)]` and `stats[(other, x)]` in percent; a claim holds where a > b."""
  out = []
  for method, other, text in pairs:
    if method not in methods or other not in methods:
      continue
    verdicts = []
    for x in xs:
      a, b = stats[(method, x)][0], stats[(other, x)][0]
      verdicts.append(f"{_format_x(x)}: {100 * a:.1f} vs {100 * b:.1f} "
                      f"({'holds' if a > b else 'does not hold'})")
    out.append(f"- {text}{measure} — " + "; ".join(verdicts) + "\n")
  return out
