"""Manhattan and QQ plots are written as PNG files."""

import numpy as np

from jaxml.evaluators import gwas_plots


def test_plots_are_written(tmp_path):
  rng = np.random.default_rng(0)
  p = rng.uniform(size=400)
  p[[10, 250]] = [1e-12, 0.0]  # 0: below float64, drawn at the top, not dropped
  p[5] = np.nan
  chromosomes = np.repeat(["1", "2", "3", "4"], 100)
  positions = np.tile(np.arange(100) * 1000, 4)
  for path in (gwas_plots.manhattan_plot(p, str(tmp_path / "m.png"), chromosomes=chromosomes,
                                         positions=positions, causal=[10, 250], title="test"),
               gwas_plots.manhattan_plot(p, str(tmp_path / "one.png")),
               gwas_plots.qq_plot(p, str(tmp_path / "qq.png"), title="test")):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
