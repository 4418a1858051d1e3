"""The plots draw the evaluators' numbers (each line's points are the curve's) and write PNGs."""

from __future__ import annotations

import numpy as np

from jaxml.evaluators import curves, risk_plots, survival


def test_pr_figure_draws_each_scorers_curve(tmp_path):
  rng = np.random.default_rng(0)
  labels = (rng.random(300) < 0.2).astype(int)
  scorers = {"model": labels + rng.normal(0, 0.7, 300), "-FEV1/FVC": labels + rng.normal(size=300)}
  fig = risk_plots.pr_figure(scorers, labels, title="COPD")
  lines = fig.axes[0].get_lines()
  for line, scores in zip(lines, scorers.values()):
    precision, recall, _ = curves.precision_recall_curve(scores, labels)
    np.testing.assert_array_equal(line.get_xdata(), recall)
    np.testing.assert_array_equal(line.get_ydata(), precision)
  assert lines[2].get_ydata()[0] == labels.mean()  # the prevalence line
  legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
  assert legend[0].startswith("model (AUPRC 0.") and legend[1].startswith("-FEV1/FVC")
  path = risk_plots.plot_pr_curves(scorers, labels, str(tmp_path / "pr.png"))
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_km_by_quartile_draws_each_groups_curve_and_the_logrank_test(tmp_path):
  rng = np.random.default_rng(1)
  score = rng.normal(size=400)
  event_time = rng.exponential(np.exp(-0.8 * score))
  censor_time = rng.exponential(2.0, 400)
  times, events = np.minimum(event_time, censor_time), (event_time <= censor_time).astype(int)
  quartile = survival.quantile_groups(score)
  fig = risk_plots.km_figure(times, events, quartile, group_names=risk_plots.quantile_names(4))
  ax = fig.axes[0]
  for group, line in enumerate(ax.get_lines()):
    fit = survival.kaplan_meier(times[quartile == group], events[quartile == group])
    np.testing.assert_array_equal(line.get_xdata(), np.r_[0, fit.times])
    np.testing.assert_array_equal(line.get_ydata(), np.r_[1, fit.survival])
  test = survival.logrank_test(times, events, quartile)
  assert f"p = {test.p_value:.2g}" in ax.get_title()
  legend = [text.get_text() for text in ax.get_legend().get_texts()]
  assert legend[0].startswith("Q1 (lowest) (n=100") and legend[3].startswith("Q4 (highest)")
  path = risk_plots.plot_km_by_quantile(times, events, score, str(tmp_path / "km.png"),
                                        score_name="liability")
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
