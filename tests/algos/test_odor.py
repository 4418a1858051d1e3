"""Odour training (jaxml/algos/odor.py): learns descriptors that are functions of the graph,
a smoke run of the shipped data compiling once, its ranking metrics equal scikit-learn's on
the gathered predictions, and bad input."""

import csv

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from experiments import odor as odor_config
from jaxml import runner, trained
from jaxml.data.sources import odor as odor_source
from jaxml.errors import ConfigError
from tests.algos.smoke import run_compiling_once

pytest.importorskip("rdkit")
Chem = pytest.importorskip("rdkit.Chem")

# Descriptors a graph network can read off the graph: an element, a bond kind, a ring.
STRUCTURAL = {"nitrogen": lambda m: any(a.GetSymbol() == "N" for a in m.GetAtoms()),
              "sulfur": lambda m: any(a.GetSymbol() == "S" for a in m.GetAtoms()),
              "aromatic": lambda m: any(a.GetIsAromatic() for a in m.GetAtoms()),
              "carbonyl": lambda m: m.HasSubstructMatch(Chem.MolFromSmarts("C=O")),
              "ring": lambda m: m.GetRingInfo().NumRings() > 0}


def _structural_csv(path, count=1200):
  """The first `count` shipped molecules, labelled with STRUCTURAL descriptors."""
  smiles = odor_source.read_table().smiles[:count]
  with open(path, "w", newline="") as f:
    out = csv.writer(f)
    out.writerow(["smiles", *STRUCTURAL])
    for text in smiles:
      molecule = Chem.MolFromSmiles(text)
      out.writerow([text, *(int(rule(molecule)) for rule in STRUCTURAL.values())])
  return path


def test_learns_structural_descriptors_and_scores_them_like_sklearn(tmp_path):
  config = odor_config.get_config("smoke")
  config.data.source = f"odor:{_structural_csv(tmp_path / 'structural.csv')}"
  config.model.update(hidden=32, steps=3, embedding=32)
  config.num_steps = 300
  config.eval_every = config.checkpoint_every = 300
  config.optimizer.learning_rate = 1e-2
  summary = run_compiling_once(config, tmp_path / "run")
  # Every descriptor is a function of the graph: the network ranks them nearly perfectly.
  for name in STRUCTURAL:
    assert summary[f"eval/label/{name}/auroc"] > 0.95, (name, summary)
  run = trained.load(str(tmp_path / "run"))
  scores, labels = run.predict(run.dataset.test)
  assert scores.shape == labels.shape == (len(run.dataset.test), len(STRUCTURAL))
  np.testing.assert_allclose(summary["eval/auroc/macro"],
                             roc_auc_score(labels, scores, average="macro"), rtol=1e-6)
  np.testing.assert_allclose(summary["eval/auroc/micro"],
                             roc_auc_score(labels, scores, average="micro"), rtol=1e-6)
  np.testing.assert_allclose(summary["eval/auprc/macro"],
                             average_precision_score(labels, scores, average="macro"),
                             rtol=1e-6)


def test_smoke_run_of_the_shipped_data_compiles_once(tmp_path):
  summary = run_compiling_once(odor_config.get_config("smoke"), tmp_path)
  assert summary["eval/labels_scored"] == 138  # stratified folds hold every descriptor
  assert np.isfinite(summary["eval/loss"])
  names = [k for k in summary if k.startswith("eval/label/") and k.endswith("/auroc")]
  assert len(names) == 138 and "eval/label/vanilla/auroc" in summary


@pytest.mark.parametrize("change,says", [
    ({"loss.weighting": "inverse"}, "loss.weighting='inverse'"),
    ({"model.steps": 0}, "model.steps=0"),
    ({"model.readout": "max"}, "model.readout='max'"),
    ({"data.source": "digits"}, "needs multi-label molecular graphs"),
])
def test_bad_input_is_one_config_error(change, says, tmp_path):
  config = odor_config.get_config("smoke")
  for key, value in change.items():
    block, name = key.split(".")
    config[block][name] = value
  with pytest.raises(ConfigError, match=says):
    runner.run(config, str(tmp_path))
