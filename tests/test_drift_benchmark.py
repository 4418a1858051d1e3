"""`benchmarks/drift.py --quick`: every weighting is timed (positive, finite ms per step) and
the printed ratios are those of the returned times, the meta step judged against the 3x goal
as printed."""

import math

from tests.launch_utils import load_benchmark


def test_quick_run_times_every_weighting_and_prints_their_ratios(capsys):
  benchmark = load_benchmark("drift")
  ms = benchmark.main(["--quick"])
  out = capsys.readouterr().out
  assert list(ms) == list(benchmark.VARIANTS)
  assert all(math.isfinite(v) and v > 0 for v in ms.values()), ms
  for name, value in ms.items():
    line = next(line for line in out.splitlines() if line.startswith(f"{name} "))
    assert f"{value / ms['uniform']:.2f}" in line, line
  ratio = ms["learned"] / ms["uniform"]
  verdict = "met" if ratio <= benchmark.GOAL else "NOT met"
  assert f"meta step (learned) / ERM step: {ratio:.2f} (goal <= 3.0: {verdict})" in out
