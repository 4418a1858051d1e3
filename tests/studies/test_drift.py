"""The concept-drift study (jaxml/studies/drift.py) through the launcher at smoke size: its
rows are its runs' own final evaluations per future period, the single decay trains at the
timescale that won on the held-out last training period, river's rows are the peer's own
curves, the report states each claim and the timescale diagnostic from the rows, a rerun
trains nothing, and bad configs fail before anything trains."""

import os

import numpy as np
import pytest
from scipy import stats as scipy_stats

from experiments import drift_study as drift_study_config
from jaxml.errors import ConfigError
from jaxml.studies import drift as study
from jaxml.studies import drift_peers, results
from tests.launch_utils import (assert_config_and_headline, assert_rerun_trains_nothing,
                                read_json, run_launcher)

pytestmark = pytest.mark.xdist_group("drift_study")
EXPERIMENT = "experiments/drift_study.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  """One smoke run of the study (the mixture, one seed, five methods, river's knn) through
  the launcher: also this config's launcher smoke test (tests/test_launcher.py leaves it to
  this one)."""
  config = drift_study_config.get_config("smoke")
  workdir = tmp_path_factory.mktemp("drift_study")
  proc = run_launcher(EXPERIMENT + ":smoke", workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return config, workdir, proc


def test_rows_are_the_runs_own_evaluations_at_the_tuned_timescale(smoke):
  config, workdir, proc = smoke
  assert_config_and_headline(EXPERIMENT, proc, workdir)
  (dataset,), (seed,) = config.datasets, config.seeds
  measured = {tuple(r["key"]): r for r in results.read_records(
      os.path.join(workdir, results.RESULTS))}
  tuning = {k[3]: r for k, r in measured.items() if k[:3] == ("tune", dataset, "exponential")}
  assert sorted(tuning) == sorted(config.tune.exponential)
  train_periods = config.runs[dataset].uniform.data.train_periods
  for tau, row in tuning.items():  # trained on [0, T - 1), scored on period T - 1 alone
    run = os.path.join(workdir, "runs", dataset, "tune", f"exponential_tau{tau:g}")
    run_config, summary = (read_json(os.path.join(run, "config.json")),
                           read_json(os.path.join(run, "artifacts", "summary.json")))
    assert run_config["data"]["periods"] == train_periods
    assert run_config["data"]["train_periods"] == train_periods - 1
    assert summary[f"eval/period/{train_periods - 1}/count"] > 0
    assert row["accuracy"] == summary[study.MEAN] == summary[
        f"eval/period/{train_periods - 1}/accuracy"]
  best = max(tuning, key=lambda tau: tuning[tau]["accuracy"])
  periods = range(train_periods, config.runs[dataset].uniform.data.periods)
  for method in config.methods:
    row = measured[(dataset, method, seed)]
    run = os.path.join(workdir, row["workdir"])
    summary = read_json(os.path.join(run, "artifacts", "summary.json"))
    run_config = read_json(os.path.join(run, "config.json"))
    assert run_config["seed"] == seed and run_config["drift"]["weighting"] == (
        config.runs[dataset][method].drift.weighting)
    assert row["mean"] == summary[study.MEAN] == pytest.approx(
        np.mean([summary[f"eval/period/{p}/accuracy"] for p in periods]))
    assert {k for k in row if k.startswith("period/")} == {f"period/{p}" for p in periods}
    for p in periods:
      assert row[f"period/{p}"] == summary[f"eval/period/{p}/accuracy"]
    if method == "exponential":
      assert run_config["drift"]["tau"] == best
    if method in study.LEARNED:
      for c in range(4):
        assert row[f"timescale/cluster_{c}"] == summary[f"timescale/cluster_{c}"]


def test_river_rows_are_the_peers_own_curves(smoke):
  config, workdir, _ = smoke
  (dataset,), (seed,) = config.datasets, config.seeds
  rows = results.read_records(os.path.join(workdir, results.RESULTS))
  (cached,) = [r for r in rows if r["key"] == ["river", dataset, "knn", seed]]
  curves = drift_peers.river_curves(config.runs[dataset].uniform.data, "knn", seed)
  for protocol in ("eval_fix", "prequential"):
    assert {int(p): a for p, a in cached[protocol].items()} == curves[protocol]
  report = open(os.path.join(workdir, "artifacts", "drift.md"), encoding="utf-8").read()
  assert f"| river_knn | {100 * curves['mean_eval_fix']:.1f}" in report
  assert f"| river_knn_prequential | **{100 * curves['mean_prequential']:.1f}**" in report or (
      f"| river_knn_prequential | {100 * curves['mean_prequential']:.1f}" in report)


def test_the_report_states_the_claims_and_the_timescale_diagnostic(smoke):
  config, workdir, _ = smoke
  (dataset,), (seed,) = config.datasets, config.seeds
  measured = {tuple(r["key"]): r for r in results.read_records(
      os.path.join(workdir, results.RESULTS))}
  report = open(os.path.join(workdir, "artifacts", "drift.md"), encoding="utf-8").read()
  for method, other, _ in study.CLAIMS:
    if method in config.methods and other in config.methods:
      a, b = measured[(dataset, method, seed)]["mean"], measured[(dataset, other, seed)]["mean"]
      verdict = "holds" if a > b else "does not hold"
      assert f"{dataset}: {100 * a:.1f} vs {100 * b:.1f} ({verdict})" in report, method
  rates = (0.0, 0.05, 0.15, 0.3)  # the mixture's default rates, radians per period
  for method in study.LEARNED:
    taus = [measured[(dataset, method, seed)][f"timescale/cluster_{c}"] for c in range(4)]
    rho = scipy_stats.spearmanr(rates, taus).statistic
    assert (f"| {dataset} | {method} | 0, 0.05, 0.15, 0.3 | "
            + ", ".join(f"{t:.1f} ± 0.0" for t in taus)
            + f" | {np.ptp(taus):.2f} | {rho:+.2f} |") in report
  for name in ("drift_curves.png", "drift_timescales.png"):
    assert os.path.getsize(os.path.join(workdir, "artifacts", name)) > 0


def test_rerun_trains_nothing(smoke):
  assert_rerun_trains_nothing(EXPERIMENT + ":smoke", smoke[1])


@pytest.mark.parametrize("key, value, message", [
    ("datasets", ("mnist",), "datasets="),
    ("methods", ("uniform", "uniform"), "methods="),
    ("seeds", (-1,), "seeds="),
    ("tune.exponential", (), "tune.exponential="),
    ("tune.linear", (0.0,), "tune.linear="),
    ("river_learners", ("sgd",), "river_learners="),
])
def test_bad_config_is_one_clear_error(key, value, message):
  config = drift_study_config.get_config("smoke")
  block, _, leaf = key.rpartition(".")
  (config[block] if block else config)[leaf] = value
  with pytest.raises(ConfigError, match=message):
    study.build(config)


def test_a_run_config_the_study_cannot_use_is_refused():
  config = drift_study_config.get_config("smoke")
  config.runs.drifting_mixture.learned.data.source = "drifting_digits"
  with pytest.raises(ConfigError, match="runs.drifting_mixture.learned must be a 'drift' "
                     "config on data.source 'drifting_mixture'"):
    study.build(config)
  config = drift_study_config.get_config("smoke")
  config.runs.drifting_mixture.uniform.data.train_periods = 1
  with pytest.raises(ConfigError, match="at least 2 are needed"):
    study.build(config)
