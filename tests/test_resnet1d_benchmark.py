"""`benchmarks/resnet1d.py --quick`: both sides train, on networks of equal parameter count
(the closed form's), and the printed ratio is the returned rates' ratio. torch is not a test
dependency: skipped without it."""

import math

import pytest

from tests.launch_utils import load_benchmark
from tests.models.test_resnet1d import closed_form_params

pytest.importorskip("torch")


def test_quick_run_times_both_sides_on_equal_networks(capsys):
  benchmark = load_benchmark("resnet1d")
  result = benchmark.main(["--quick"])
  width = benchmark.QUICK["width"]
  assert result["params"] == {"jaxml": closed_form_params(18, "d", width, 1, 2),
                              "torch": closed_form_params(18, "d", width, 1, 2)}
  rates = result["steps_per_s"]
  assert set(rates) == {"jaxml", "torch"}
  assert all(math.isfinite(r) and r > 0 for r in rates.values())
  assert result["ratio"] == pytest.approx(rates["jaxml"] / rates["torch"])
  out = capsys.readouterr().out
  assert "load average" in out and f"jaxml / torch: {result['ratio']:.2f}x" in out
