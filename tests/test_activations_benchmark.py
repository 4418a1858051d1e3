"""`benchmarks/activations.py --quick`: every activation is timed (positive, finite ratios to
ReLU), and where torch is installed every cross-check against PyTorch is within tolerance
(1e-6; GELU's gradient 1e-5, see the benchmark's docstring). torch is not a test dependency."""

import math

from tests.launch_utils import load_benchmark


def test_quick_run_times_every_activation_and_agrees_with_torch(capsys):
  benchmark = load_benchmark("activations")
  result = benchmark.main(["--quick"])
  rows = {r["activation"]: r for r in result["timings"]}
  assert set(rows) == set(benchmark.SPECS)
  assert rows["relu"]["elementwise_ratio"] == 1.0 and rows["relu"]["mlp_step_ratio"] == 1.0
  for spec, row in rows.items():
    for key in ("elementwise_ratio", "mlp_step_ratio", "elementwise_s", "mlp_step_s"):
      assert math.isfinite(row[key]) and row[key] > 0, (spec, key)
  assert set(result["expectation"]) == {"elementwise", "mlp_step"}
  out = capsys.readouterr().out
  assert "issue 18's expectation" in out and "load average" in out
  assert "benchmarks/replicas.py" in out

  try:
    import torch  # noqa: F401
  except ImportError:
    assert result["cross_checks"] is None
    assert "cross-check is skipped" in out
    return
  checks = {c["activation"]: c for c in result["cross_checks"]}
  assert {"smelu:0.5", "smelu:1.0", "smelu:2.0", "gelu", "swish:1.0 vs silu",
          "softplus:1.0"} <= set(checks)
  for name, check in checks.items():
    assert check["value_diff"] <= 1e-6, name
    assert check["grad_diff"] <= (1e-5 if name == "gelu" else 1e-6), name
  for beta in (0.5, 1.0, 2.0):  # SmeLU: the issue's own function, held to 1e-6 throughout
    assert checks[f"smelu:{beta}"]["grad_diff"] <= 1e-6
