"""Plots of a risk score's evaluation, saved as PNG: precision-recall curves of several scorers
against one set of labels (as in the COPD post: the model against FEV1/FVC), and Kaplan-Meier
curves by group or by quantile of a score, with their bands and the log-rank p-value.

Drawing only; the numbers come from `curves`, `ranking` and `survival`. The object API
(`matplotlib.figure.Figure`), not pyplot, so a notebook keeps its own backend; matplotlib is
imported inside the functions (slow import). Host-only (rule 4). The `*_figure` functions
return the figure (tests read its lines), the `plot_*` ones save it and return the path.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxml.core.plots import save_figure
from jaxml.evaluators import curves, ranking, survival


def pr_figure(scorers: Mapping[str, np.ndarray], labels, *, title: str = ""):
  """One precision-recall step curve per scorer (scores rank positives high), its average
  precision in the legend, and the prevalence (a random scorer's precision) dashed."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import
  fig = Figure(figsize=(5.5, 4.5))
  ax = fig.subplots()
  for name, scores in scorers.items():
    precision, recall, _ = curves.precision_recall_curve(scores, labels)
    auprc = ranking.average_precision(scores, labels)
    ax.plot(recall, precision, drawstyle="steps-post", label=f"{name} (AUPRC {auprc:.3f})")
  prevalence = float(np.mean(np.asarray(labels, np.float64)))
  ax.axhline(prevalence, color="gray", linestyle="--", label=f"prevalence {prevalence:.3f}")
  ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def plot_pr_curves(scorers: Mapping[str, np.ndarray], labels, path: str, *,
                   title: str = "") -> str:
  """`pr_figure` saved as a PNG at path."""
  return save_figure(pr_figure(scorers, labels, title=title), path, dpi=110)


def km_figure(times, events, groups, *, group_names: Mapping | None = None, title: str = "",
              time_label: str = "time", band: bool = True):
  """One Kaplan-Meier step curve per distinct value of groups [N] (from S = 1 at time 0), with
  its pointwise 95% band shaded; the title carries the log-rank test across the groups."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import
  fits = survival.kaplan_meier_by_group(times, events, groups)
  test = survival.logrank_test(times, events, groups) if len(fits) > 1 else None
  fig = Figure(figsize=(6, 4.5))
  ax = fig.subplots()
  for i, (group, fit) in enumerate(fits.items()):
    name = (group_names or {}).get(group, str(group))
    step_times = np.r_[0.0, fit.times]
    ax.plot(step_times, np.r_[1.0, fit.survival], drawstyle="steps-post", color=f"C{i}",
            label=f"{name} (n={fit.at_risk[0]}, events={fit.events.sum()})")
    if band:
      ax.fill_between(step_times, np.r_[1.0, fit.lower], np.r_[1.0, fit.upper], step="post",
                      color=f"C{i}", alpha=0.15, linewidth=0)
  heading = title
  if test is not None:
    heading = (f"{title}\n" if title else "") + (
        f"log-rank chi2 = {test.statistic:.1f} (df {test.df}), p = {test.p_value:.2g}")
  ax.set_title(heading, fontsize=10)
  ax.set(xlabel=time_label, ylabel="survival probability", ylim=(0, 1.02))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower left")
  fig.tight_layout()
  return fig


def plot_km_by_group(times, events, groups, path: str, *, group_names: Mapping | None = None,
                     title: str = "", time_label: str = "time", band: bool = True) -> str:
  """`km_figure` saved as a PNG at path."""
  fig = km_figure(times, events, groups, group_names=group_names, title=title,
                  time_label=time_label, band=band)
  return save_figure(fig, path, dpi=110)


def quantile_names(groups: int) -> dict[int, str]:
  """Legend names of quantile groups: Q1 (lowest score) ... Qk (highest)."""
  names = {k: f"Q{k + 1}" for k in range(groups)}
  names[0] += " (lowest)"
  names[groups - 1] += " (highest)"
  return names


def plot_km_by_quantile(times, events, scores, path: str, *, groups: int = 4,
                        score_name: str = "score", time_label: str = "time") -> str:
  """Kaplan-Meier curves by quantile group (quartiles by default) of a score [N]."""
  quantile = survival.quantile_groups(scores, groups)
  return plot_km_by_group(times, events, quantile, path, group_names=quantile_names(groups),
                          title=f"survival by {score_name} quantile", time_label=time_label)
