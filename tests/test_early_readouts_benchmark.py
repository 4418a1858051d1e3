"""`benchmarks/early_readouts.py --quick`: every variant is timed (positive, finite ms per
step), the timed steps are whole forget periods of every SiFeR variant, and each printed ratio
is the quotient of the two variants it names, judged against the 1.5x goal as printed."""

import math

from tests.launch_utils import load_benchmark


def test_quick_run_prints_each_ratio_of_the_variants_it_timed(capsys):
  benchmark = load_benchmark("early_readouts")
  ms, rows = benchmark.main(["--quick"])
  out = capsys.readouterr().out
  assert set(ms) == {"erm", "sifer k=4", "distill", "dedier"}
  assert all(math.isfinite(v) and v > 0 for v in ms.values()), ms
  assert "8 timed steps x 2 round-robin repeats" in out  # 8 = two periods of k=4
  expected = {"sifer k=4 / erm": ms["sifer k=4"] / ms["erm"],
              "dedier / distill": ms["dedier"] / ms["distill"],
              "distill / erm": ms["distill"] / ms["erm"],
              "dedier / erm": ms["dedier"] / ms["erm"]}
  assert {label: value for label, value, _ in rows} == expected
  for label, value, goal in rows:
    line = next(line for line in out.splitlines() if line.startswith(label))
    assert f"{value:.2f}" in line, line
    if goal:
      assert ("NOT met" in line) == (value > benchmark.GOAL), line
    assert goal == (label in ("sifer k=4 / erm", "dedier / distill")), label
