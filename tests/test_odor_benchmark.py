"""`benchmarks/odor.py --quick`: every variant's throughput is timed (positive, finite
molecules/s), the printed ratios are those of the returned rates and times, and the PyG peer
is the same architecture (equal trainable parameter counts, the same probabilities at the same
weights). One quick run is shared by the tests; the PyG test is skipped only where
torch_geometric is not installed."""

import contextlib
import io
import math
import re

import pytest

from tests.launch_utils import load_benchmark

pytest.importorskip("rdkit")


@pytest.fixture(scope="module")
def quick_run():
  benchmark = load_benchmark("odor")
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    times = benchmark.main(["--quick"])
  return benchmark, times, out.getvalue()


def _line(out: str, start: str) -> str:
  return next(line for line in out.splitlines() if line.startswith(start))


def test_quick_run_prints_the_ratios_of_its_times(quick_run):
  benchmark, times, out = quick_run
  variants = ["jaxml packed", "jaxml flattened"] + (["PyG"] if "PyG" in times else [])
  for name in variants:
    rate = times[name]
    assert math.isfinite(rate) and rate > 0, (name, rate)
    line = _line(out, f"{name} ")
    assert f"{rate:.1f}" in line and f"{rate / times['jaxml packed']:.2f}" in line, line
  for key in ("rf_fit_s", "gnn_run_s", "gnn_study_s", "rf_study_s"):
    assert math.isfinite(times[key]) and times[key] > 0, (key, times[key])
  assert times["gnn_study_s"] == pytest.approx(
      benchmark.FOLDS * benchmark.SEEDS * times["gnn_run_s"])
  assert times["rf_study_s"] == pytest.approx(benchmark.FOLDS * times["rf_fit_s"])
  assert f"GNN run / RF fit: {times['gnn_run_s'] / times['rf_fit_s']:.2f}" in out
  study = times["gnn_study_s"] / times["rf_study_s"]
  assert _line(out, "GNN study (").endswith(f": {study:.2f}")
  assert "ESTIMATES from the packed throughput" in out
  assert "machine:" in out and "jax: 1 device" in out
  assert re.search(r"fitted by \d+ of 4 batches", out), out


def test_pyg_peer_is_the_same_architecture_and_prints_its_ratio(quick_run):
  pytest.importorskip("torch_geometric")
  _, times, out = quick_run
  printed = re.search(r"parameters: jaxml ([\d,]+), PyG ([\d,]+) trainable", out)
  assert printed, out
  jaxml_count, pyg_count = (int(group.replace(",", "")) for group in printed.groups())
  assert jaxml_count == pyg_count == times["params jaxml"] == times["params PyG"]
  assert times["max |probability difference|"] < 1e-5
  ratio = times["jaxml packed"] / times["PyG"]
  assert f"jaxml packed / PyG: {ratio:.2f}" in out
  assert f"jaxml flattened / PyG: {times['jaxml flattened'] / times['PyG']:.2f}" in out
