"""`benchmarks/few_shot.py --quick`: the evaluator's accuracies equal the scikit-learn loop's
on the same draws, and the printed ratio and share are the returned timings'."""

import pytest

from tests.launch_utils import load_benchmark


def test_quick_run_agrees_with_sklearn_and_prints_its_ratios(capsys):
  benchmark = load_benchmark("few_shot")
  result = benchmark.main(["--quick"])
  assert result["disagreement"] < 1e-6
  seconds = result["seconds"]
  assert result["ratio"] == pytest.approx(seconds["sklearn"] / seconds["jaxml"])
  per_call = seconds["features"] + seconds["jaxml"]
  assert result["share"] == pytest.approx(
      per_call / (per_call + result["every"] * result["step_seconds"]))
  # Frozen digits-0-4 features separate digits 5-9 better with more shots.
  accuracy = result["accuracy"]
  assert accuracy[25] > accuracy[1]
  out = capsys.readouterr().out
  assert f"sklearn / jaxml: {result['ratio']:.2f}x" in out and "load average" in out
