"""The odour study (jaxml/studies/odor.py) through the launcher at smoke size: the network rows
are the runs' own final evaluations, the ensemble is the mean of the saved predictions scored
by scikit-learn, the baselines score the very molecules the networks were tested on, the
exported embedding is every molecule's, the transfer run never saw the held-out descriptors,
a rerun trains nothing, and bad configs fail before anything trains."""

import os

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from experiments import odor_study as odor_study_config
from jaxml.data.sources import odor as odor_source
from jaxml.errors import ConfigError
from jaxml.evaluators import odor_embedding
from jaxml.studies import odor as study
from jaxml.studies import odor_peers, results
from tests.launch_utils import (assert_config_and_headline, assert_rerun_trains_nothing,
                                read_json, run_launcher)

pytest.importorskip("rdkit")
pytestmark = pytest.mark.xdist_group("odor_study")
EXPERIMENT = "experiments/odor_study.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  """One smoke run of the study (fold 0, two seeds of a tiny network, kNN and logistic
  regression untuned, a three-descriptor transfer) through the launcher: also this config's
  launcher smoke test (tests/test_launcher.py leaves it to this one)."""
  config = odor_study_config.get_config("smoke")
  workdir = tmp_path_factory.mktemp("odor_study")
  proc = run_launcher(EXPERIMENT + ":smoke", workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {tuple(r["key"]): r for r in results.read_records(
      os.path.join(workdir, results.RESULTS))}
  return config, workdir, proc, rows


def _macro(scores, labels, metric):
  both = [j for j in range(labels.shape[1]) if 0 < labels[:, j].sum() < len(labels)]
  return np.mean([metric(labels[:, j], scores[:, j]) for j in both])


def test_network_rows_are_the_runs_own_evaluations(smoke):
  config, workdir, proc, rows = smoke
  assert_config_and_headline(EXPERIMENT, proc, workdir)
  (fold,) = config.folds
  for seed in config.seeds:
    row = rows[("gnn", fold, seed)]
    run = os.path.join(workdir, row["workdir"])
    run_config = read_json(os.path.join(run, "config.json"))
    summary = read_json(os.path.join(run, "artifacts", "summary.json"))
    assert (run_config["seed"], run_config["data"]["fold"]) == (seed, fold)
    # From the saved test predictions, against the runner's own final evaluation.
    for measure in study.MEASURES:
      assert row[measure] == pytest.approx(summary[f"eval/{measure}"], abs=1e-6), measure
    names = odor_source.read_table().descriptors
    for j in (0, 50, 137):
      assert row["label_auroc"][j] == pytest.approx(
          summary[f"eval/label/{names[j]}/auroc"], abs=1e-6)
    assert row["seconds"] > 0


def test_the_ensemble_is_the_mean_of_the_seeds_predictions(smoke):
  config, workdir, _, rows = smoke
  (fold,) = config.folds
  table, _, test = odor_source.molecule_table(study.run_config(config, fold, 0).data)
  labels = table.labels[test]
  saved = [np.load(os.path.join(workdir, "predictions", f"gnn_f{fold}_s{s}.npz"))
           ["probabilities"] for s in config.seeds]
  assert saved[0].shape == labels.shape and not np.array_equal(saved[0], saved[1])
  mean = np.mean(saved, axis=0)
  row = rows[("ensemble", fold)]
  assert row["members"] == 2
  assert row["auroc/macro"] == pytest.approx(_macro(mean, labels, roc_auc_score), abs=1e-9)
  assert row["auprc/macro"] == pytest.approx(
      _macro(mean, labels, average_precision_score), abs=1e-9)
  assert row["auroc/micro"] == pytest.approx(roc_auc_score(labels.ravel(), mean.ravel()))


def test_baselines_score_the_networks_test_molecules(smoke):
  config, _, _, rows = smoke
  (fold,) = config.folds
  table, train, test = odor_source.molecule_table(study.run_config(config, fold, 0).data)
  x = study.load_fold(config, fold).fingerprints
  assert x.shape == (len(table.smiles), config.fingerprint.bits)
  scores = odor_peers.fit_predict("logistic", x[train], table.labels[train], x[test],
                                  config.seed)
  row = rows[("logistic", fold)]
  assert row["setting"] == {}  # tune_baselines is off in the smoke config
  assert row["auroc/macro"] == pytest.approx(
      _macro(scores, table.labels[test], roc_auc_score), abs=1e-9)
  # Fingerprints carry odour: far above chance (measured 0.82 kNN, 0.86 logistic).
  assert rows[("knn", fold)]["auroc/macro"] > 0.75 and row["auroc/macro"] > 0.8


def test_the_embedding_is_exported_for_every_molecule(smoke):
  config, workdir, _, rows = smoke
  exported = np.load(os.path.join(workdir, "artifacts", "odor_embedding.npz"))
  table, _, test = odor_source.molecule_table(study.run_config(config, 0, 0).data)
  assert exported["smiles"].tolist() == list(table.smiles)
  assert exported["embedding"].shape == (4983, config.run.model.embedding)
  assert np.flatnonzero(exported["test"]).tolist() == test.tolist()
  assert np.all(np.isfinite(exported["embedding"]))
  # Distinct molecules get distinct embeddings (none left at the zeros it was filled with).
  assert np.all(np.abs(exported["embedding"]).sum(axis=1) > 0)
  row = rows[("embedding",)]
  assert row["families"] == list(odor_embedding.FAMILIES)
  for family, values in row["embedding"].items():
    assert values["members"] == row["fingerprints"][family]["members"]


def test_the_transfer_run_never_saw_the_held_out_descriptors(smoke):
  config, workdir, _, rows = smoke
  table = odor_source.read_table()
  names = odor_embedding.held_out_descriptors(table.labels, table.descriptors,
                                              config.transfer.held_out)
  run = os.path.join(workdir, "runs", f"transfer_f{config.transfer.fold}_s{config.seeds[0]}")
  run_config = read_json(os.path.join(run, "config.json"))
  assert tuple(run_config["data"]["drop_labels"]) == names
  summary = read_json(os.path.join(run, "artifacts", "summary.json"))
  assert summary["eval/labels_scored"] == 138 - len(names)
  assert not any(f"eval/label/{n}/auroc" in summary for n in names)
  for share in study.SHARES:
    for representation in ("embedding", "fingerprint"):
      row = rows[("transfer", share, representation)]
      assert row["descriptors"] == list(names)
      assert len(row["rows"]) == len(names) * len(config.transfer.sizes)
      if share == "balanced":  # half of each sample of 10 positive
        assert all(r["positives"] == 5 for r in row["rows"])


def test_the_report_and_summary(smoke):
  config, workdir, _, rows = smoke
  summary = read_json(os.path.join(workdir, "artifacts", "summary.json"))
  gnn = [rows[("gnn", 0, s)]["auroc/macro"] for s in config.seeds]
  assert summary["gnn/auroc/macro"] == pytest.approx(np.mean(gnn))
  assert summary["logistic/auroc/macro"] == rows[("logistic", 0)]["auroc/macro"]
  text = open(os.path.join(workdir, "artifacts", "odor.md"), encoding="utf-8").read()
  assert "Against openpom" in text and "0.8872" in text
  assert "## Few-label transfer" in text and "## The odour embedding" in text
  for name in ("auroc.png", "per_descriptor.png", "embedding_map.png", "transfer.png",
               "per_descriptor.csv"):
    assert os.path.getsize(os.path.join(workdir, "artifacts", name)) > 0, name


def test_rerun_trains_nothing(smoke):
  _, workdir, _, _ = smoke
  assert_rerun_trains_nothing(EXPERIMENT + ":smoke", workdir)


@pytest.mark.parametrize("key, value, message", [
    ("folds", (0, 5), r"folds=\[0, 5\] must be distinct fold numbers in 0..4"),
    ("folds", (), r"folds=\[\] must be distinct fold numbers"),
    ("seeds", (-1,), r"seeds=\[-1\] must be integers >= 0"),
    ("baselines", ("svm",), r"baselines=\['svm'\]: choose distinct baselines"),
    ("embedding.fold", 3, r"embedding.fold=3 must be one of folds=\[0\]"),
    ("transfer.sizes", (1,), r"transfer.sizes=\[1\] must be integers >= 2"),
    ("transfer.l2", 0.0, "transfer.l2=0.0 must be a number > 0"),
    ("run.data.drop_labels", ("musk",), "run.data.drop_labels must be empty"),
    ("run.algo", "classifier", "run must be an 'odor' run config"),
])
def test_bad_config_is_one_clear_error(key, value, message, never_trains):
  del never_trains
  config = odor_study_config.get_config("smoke")
  block, _, leaf = key.rpartition(".")
  target = config
  for part in filter(None, block.split(".")):
    target = target[part]
  target[leaf] = value
  with pytest.raises(ConfigError, match=message):
    study.build(config)
