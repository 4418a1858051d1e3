"""Manhattan and QQ plots of GWAS p-values, saved as PNG (host only, matplotlib's object API so
a notebook's own backend is left alone)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from jaxml.core.plots import save_figure
from jaxml.evaluators.gwas_metrics import GENOME_WIDE, genomic_inflation


def _neg_log10(p) -> np.ndarray:
  p = np.asarray(p, np.float64)
  return -np.log10(np.clip(p, np.finfo(np.float64).tiny, 1.0))


def manhattan_plot(p, path: str, *, chromosomes=None, positions=None, causal=None,
                   threshold: float = GENOME_WIDE, title: str = "") -> str:
  """-log10 p against genome position, chromosomes in alternating shades, the threshold as a
  dashed line and the `causal` SNP indices (the truth, when simulated) ringed."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import

  p = np.asarray(p, np.float64)
  num = len(p)
  positions = np.arange(num) if positions is None else np.asarray(positions, np.float64)
  chromosomes = np.zeros(num, int) if chromosomes is None else np.asarray(chromosomes)
  x = np.zeros(num)
  ticks, labels, offset = [], [], 0.0
  names = list(dict.fromkeys(chromosomes.tolist()))  # in order of appearance
  fig = Figure(figsize=(10, 3.5))
  ax = fig.subplots()
  y = _neg_log10(p)
  for i, name in enumerate(names):
    here = chromosomes == name
    start, stop = positions[here].min(), positions[here].max()
    x[here] = positions[here] - start + offset
    ticks.append(offset + (stop - start) / 2)
    labels.append(str(name))
    ax.scatter(x[here], y[here], s=4, color=("#1f4e79", "#7fa7d1")[i % 2], rasterized=True)
    offset += (stop - start) + max(1.0, 0.02 * (positions.max() - positions.min()))
  if causal is not None and len(causal):
    causal = np.asarray(causal)
    ax.scatter(x[causal], y[causal], s=30, facecolors="none", edgecolors="#c0392b",
               label="causal")
    ax.legend(loc="upper right")
  ax.axhline(-np.log10(threshold), color="#c0392b", linestyle="--", linewidth=0.8)
  ax.set_xticks(ticks, labels if len(names) > 1 else [""])
  ax.set_xlabel("chromosome" if len(names) > 1 else "position")
  ax.set_ylabel("-log10 p")
  ax.set_title(title)
  fig.tight_layout()
  return save_figure(fig, path)


def qq_plot(p, path: str, *, title: str = "") -> str:
  """Observed against expected -log10 p under the uniform null, with a 95% band and lambda_GC."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import

  p = np.asarray(p, np.float64)
  p = np.sort(p[np.isfinite(p)])
  num = len(p)
  ranks = np.arange(1, num + 1)
  expected = -np.log10(ranks / (num + 1))
  # The k-th smallest of n uniforms is Beta(k, n + 1 - k).
  lower = -np.log10(stats.beta.ppf(0.975, ranks, num + 1 - ranks))
  upper = -np.log10(stats.beta.ppf(0.025, ranks, num + 1 - ranks))
  fig = Figure(figsize=(4.5, 4.5))
  ax = fig.subplots()
  ax.fill_between(expected, lower, upper, color="0.85", label="95% null band")
  ax.scatter(expected, _neg_log10(p), s=4, color="#1f4e79", rasterized=True)
  ax.plot([0, expected.max()], [0, expected.max()], color="#c0392b", linewidth=0.8)
  ax.set_xlabel("expected -log10 p")
  ax.set_ylabel("observed -log10 p")
  ax.set_title(f"{title}  λ_GC = {genomic_inflation(p):.3f}".strip())
  ax.legend(loc="upper left")
  fig.tight_layout()
  return save_figure(fig, path)
