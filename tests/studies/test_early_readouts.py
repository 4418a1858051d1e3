"""The early-readouts study (jaxml/studies/early_readouts.py) through the launcher at smoke size:
its rows are its runs' own final evaluations, SiFeR's search picks the best validation
accuracy and the seeds train that configuration, the distillers learn from the ERM run and JTT
from the early-stopped one, the report states each claim from the table's numbers, a rerun
trains nothing, and bad configs fail before anything trains."""

import os

import pytest

from experiments import early_readouts_study as early_readouts_study_config
from jaxml.errors import ConfigError
from jaxml.studies import early_readouts as study
from jaxml.studies import results
from tests.launch_utils import (assert_config_and_headline, assert_rerun_trains_nothing,
                                read_json, run_launcher)

pytestmark = pytest.mark.xdist_group("early_readouts")
EXPERIMENT = "experiments/early_readouts_study.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  """One smoke run of the study (slab, one seed, every method) through the launcher: it is
  also this config's launcher smoke test (tests/test_launcher.py leaves it to this one)."""
  config = early_readouts_study_config.get_config("smoke")
  workdir = tmp_path_factory.mktemp("early_readouts")
  proc = run_launcher(EXPERIMENT + ":smoke", workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return config, workdir, proc


def test_rows_are_the_runs_own_evaluations_and_the_search_is_followed(smoke):
  config, workdir, proc = smoke
  assert_config_and_headline(EXPERIMENT, proc, workdir)
  (dataset,), (seed,) = config.datasets, config.seeds
  rows = results.read_records(os.path.join(workdir, results.RESULTS))
  measured = {tuple(r["key"]): r for r in rows}
  search = {k[2]: r for k, r in measured.items() if k[0] == "search"}
  assert set(search) == {p.name for p in study.search_points(config)}
  best = max(search, key=lambda name: search[name]["accuracy"])
  for name, row in search.items():  # measured on validation
    run = os.path.join(workdir, "runs", dataset, "search", name)
    assert read_json(os.path.join(run, "config.json"))["data"]["eval_split"] == "validation"
    assert row["accuracy"] == read_json(os.path.join(run, "artifacts", "summary.json"))[
        "eval/accuracy"]
  for method in config.methods:
    row = measured[(dataset, method, seed)]
    run = os.path.join(workdir, row["workdir"])
    summary = read_json(os.path.join(run, "artifacts", "summary.json"))
    run_config = read_json(os.path.join(run, "config.json"))
    assert run_config["data"]["eval_split"] == "test" and run_config["seed"] == seed
    for name, key in study.MEASURES.items():
      assert row[name] == summary[key], (method, name)
    if method == "sifer":
      chosen = search[best]
      assert run_config["sifer"]["forget_every"] == chosen["forget_every"]
      assert run_config["model"]["readout"]["depth"] == chosen["depth"]
    if method in study.TEACHERS:  # ERM's run, or JTT's for "<distiller>_jtt"
      assert run_config["distill"]["teacher"] == os.path.join(
          str(workdir), "runs", dataset, f"{study.TEACHERS[method]}_s{seed}")
      assert run_config["distill"]["beta"] > 0 if "dedier" in method else not run_config[
          "distill"]["beta"]
    if method == "jtt":
      first = read_json(os.path.join(run_config["jtt"]["first_run"], "config.json"))
      erm_steps = config.runs[dataset].erm.num_steps
      assert first["num_steps"] == round(erm_steps * config.jtt_first_fraction) < erm_steps
  report = open(os.path.join(workdir, "artifacts", "early_readouts.md"), encoding="utf-8").read()
  for method, other in (("dedier", "distill"), ("dedier_jtt", "distill_jtt"), ("sifer", "erm"),
                        ("sifer", "jtt")):
    a = measured[(dataset, method, seed)]["worst_aligned"]
    b = measured[(dataset, other, seed)]["worst_aligned"]
    verdict = "holds" if a > b else "does not hold"
    assert f"{dataset}: {100 * a:.1f} vs {100 * b:.1f} ({verdict})" in report, (method, other)
  assert f"{best} (chosen)" in report
  assert os.path.getsize(os.path.join(workdir, "artifacts", "worst_group.png")) > 0


def test_rerun_trains_nothing(smoke):
  assert_rerun_trains_nothing(EXPERIMENT + ":smoke", smoke[1])


@pytest.mark.parametrize("key, value, message", [
    ("datasets", ("mnist",), "datasets="),
    ("methods", ("erm", "erm"), "methods="),
    ("seeds", (), "seeds="),
    ("jtt_first_fraction", 0.0, "jtt_first_fraction="),
    ("search.forget_every", (0,), "search.forget_every="),
    ("saliency.dataset", "coloured_digits", "saliency.dataset="),
])
def test_bad_config_is_one_clear_error(key, value, message):
  config = early_readouts_study_config.get_config("smoke")
  block, _, leaf = key.rpartition(".")
  (config[block] if block else config)[leaf] = value
  with pytest.raises(ConfigError, match=message):
    study.build(config)


def test_a_run_config_of_another_algorithm_is_refused():
  config = early_readouts_study_config.get_config("smoke")
  config.runs.slab.sifer.algo = "classifier"
  with pytest.raises(ConfigError, match="runs.slab.sifer must be a 'sifer' config"):
    study.build(config)
