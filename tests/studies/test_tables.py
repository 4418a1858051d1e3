"""Sweep summaries: mean ± std per (method, x), the markdown table and the plot."""

import math

import numpy as np
import pytest

from jaxml.studies import figures, tables


def _rows():
  return [{"m": "a", "eps": 1.0, "acc": v} for v in (0.5, 0.7)] + [
      {"m": "b", "eps": 1.0, "acc": 0.9}, {"m": "a", "eps": math.inf, "acc": 0.95}]


def test_aggregate_means_and_sample_std():
  stats = tables.aggregate(_rows(), key="m", x="eps", value="acc")
  mean, std, count = stats[("a", 1.0)]
  assert (mean, count) == (pytest.approx(0.6), 2)
  assert std == pytest.approx(np.std([0.5, 0.7], ddof=1))
  assert stats[("b", 1.0)] == (0.9, 0.0, 1)


def test_table_bolds_the_best_and_marks_missing_cells():
  stats = tables.aggregate(_rows(), key="m", x="eps", value="acc")
  table = tables.markdown_table(stats, ["a", "b"], [1.0, math.inf])
  lines = table.strip().splitlines()
  assert lines[0] == "| method | ε = 1 | ε = ∞ |"
  assert lines[2] == "| a | 60.0 ± 14.1 | **95.0** |"
  assert lines[3] == "| b | **90.0** | — |"


def test_table_with_named_columns():
  rows = [{"method": "dt", "game": "pong", "score": 0.5}, {"method": "bc", "game": "pong",
                                                          "score": 0.25}]
  stats = tables.aggregate(rows, key="method", x="game", value="score")
  table = tables.markdown_table(stats, ["dt", "bc"], ["pong"], x_name="")
  assert table.splitlines()[0] == "| method | pong |"
  assert "| dt | **50.0** |" in table and "| bc | 25.0 |" in table


def test_plot_writes_a_png(tmp_path):
  from matplotlib import image  # pylint: disable=import-outside-toplevel
  stats = tables.aggregate(_rows(), key="m", x="eps", value="acc")
  out = figures.plot_vs_x(stats, ["a", "b"], [1.0, math.inf], str(tmp_path / "p.png"),
                        references={"ref": 0.99})
  assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  with_ref = image.imread(out)
  assert with_ref.shape[:2] == (400, 600)  # 6 x 4 inches at 100 dpi
  # The reference is drawn: the same plot without it differs, and only in some pixels.
  bare = image.imread(figures.plot_vs_x(stats, ["a", "b"], [1.0, math.inf],
                                      str(tmp_path / "bare.png")))
  changed = np.any(with_ref != bare, axis=-1).mean()
  assert 0 < changed < 0.2, changed
