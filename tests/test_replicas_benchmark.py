"""`benchmarks/replicas.py --quick`: both workloads are timed side by side and sequentially
(positive, finite replica-steps/s and speed-ups, as printed and as returned), and what the
replicated side times is really R replicas: R * batch rows in each batch it builds, and
parameters with a replica axis of R, against batch rows for the plain run."""

import math

from tests.launch_utils import load_benchmark


def test_quick_run_times_r_replicas_on_r_times_the_rows(capsys):
  benchmark = load_benchmark("replicas")
  rows = benchmark.main(["--quick"])
  out = capsys.readouterr().out
  printed = benchmark.parse_table(out)
  assert [(r["model"], r["replicas"]) for r in printed] == [
      (r["model"], r["replicas"]) for r in rows]
  assert {r["model"] for r in rows} == set(benchmark.MODELS)
  for row, shown in zip(rows, printed):
    case = f"{row['model']} R={row['replicas']}"
    replicas, batch = row["replicas"], row["batch"]
    assert replicas >= 2, case
    assert row["plain_batch_rows"] == batch, case
    assert row["batch_rows"] == shown["batch_rows"] == replicas * batch, case
    assert row["replica_axis"] == replicas, case
    assert len(shown["rates"]) == 6, case  # sequential, side by side, speed-up; twice
    for key in ("data", "step"):
      for figure in ("sequential", "side_by_side", "speedup"):
        value = row[f"{key}_{figure}"]
        assert math.isfinite(value) and value > 0, (case, key, figure)
      speedup = row[f"{key}_side_by_side"] / row[f"{key}_sequential"]
      assert math.isclose(row[f"{key}_speedup"], speedup), (case, key)
    assert all(math.isfinite(x) and x > 0 for x in shown["rates"]), case
  assert "machine:" in out and "jax devices:" in out and "mesh over 1" in out
