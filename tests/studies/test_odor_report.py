"""The odour study's report (jaxml/studies/odor_report.py) on hand-made rows: the summary's
means, the claims' verdicts paired by fold, the per-descriptor CSV and the transfer table's
paired differences are what the rows say."""

import csv
import os

import ml_collections
import numpy as np
import pytest

from jaxml.data.sources.odor import MoleculeTable
from jaxml.studies import odor_report

NAMES = ("fruity", "musk", "rose")
TABLE = MoleculeTable(("C", "CC", "CCC", "CCCC"),
                      np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], np.int32), NAMES)


def config(**changes):
  c = ml_collections.ConfigDict({
      "folds": (0, 1), "seeds": (0, 1), "baselines": ("random_forest",),
      "tune_baselines": True,
      "run": {"data": {"folds": 5, "split": "stratified"}},
      "transfer": {"fold": 0, "repeats": 2}})
  c.update(changes)
  return c


def row(method, fold, auroc, labels, **extra):
  return {"method": method, "fold": fold, "auroc/macro": auroc, "auprc/macro": auroc / 3,
          "auroc/micro": auroc, "auprc/micro": auroc / 2, "label_auroc": labels, **extra}


ROWS = [
    row("gnn", 0, 0.80, [0.8, 0.7, 0.9], seed=0, seconds=100.0),
    row("gnn", 0, 0.84, [0.8, 0.9, 0.9], seed=1, seconds=120.0),
    row("gnn", 1, 0.86, [0.9, 0.8, 0.9], seed=0, seconds=110.0),
    row("gnn", 1, 0.88, [0.9, 0.9, 0.8], seed=1, seconds=90.0),
    row("ensemble", 0, 0.85, [0.9, 0.8, 0.85], members=2),
    row("ensemble", 1, 0.89, [0.9, 0.9, 0.85], members=2),
    # The forest beats the single networks on fold 0 (0.83 vs 0.82), trails on fold 1.
    row("random_forest", 0, 0.83, [0.7, 0.95, 0.85], tune_seconds=30.0, fit_seconds=10.0,
        setting={"min_samples_leaf": 3}),
    row("random_forest", 1, 0.84, [0.8, 0.85, 0.95], tune_seconds=34.0, fit_seconds=12.0,
        setting={"min_samples_leaf": 1}),
]
EMBEDDING = {"run": "runs/gnn_f0_s0", "families": ["floral"], **{
    k: {"floral": {"auroc": a, "control_auroc": 0.5, "members": 2.0}}
    for k, a in (("embedding", 0.8), ("map_2d", 0.7), ("fingerprints", 0.75))}}


def transfer_rows(representation, aurocs):
  return [{"representation": representation, "size": size, "repeat": r, "descriptor": d,
           "positives": 1, "auroc": aurocs[(size, d, r)]}
          for size in (10, 20) for d in ("musk", "rose") for r in range(2)]


RNG = np.random.default_rng(0)
EMB_AUROCS = {(s, d, r): float(RNG.uniform(0.5, 1)) for s in (10, 20) for d in ("musk", "rose")
              for r in range(2)}
FP_AUROCS = {k: float(RNG.uniform(0.5, 1)) for k in EMB_AUROCS}
TRANSFER = {("natural", "embedding"): {"rows": transfer_rows("embedding", EMB_AUROCS),
                                       "descriptors": ["musk", "rose"]},
            ("natural", "fingerprint"): {"rows": transfer_rows("fingerprint", FP_AUROCS),
                                         "descriptors": ["musk", "rose"]}}


def test_the_summary_is_the_rows_means():
  summary = odor_report.summarise(config(), ROWS, EMBEDDING, TRANSFER)
  assert summary["step"] == len(ROWS) + 1 + len(TRANSFER)
  assert summary["gnn/auroc/macro"] == pytest.approx(np.mean([0.80, 0.84, 0.86, 0.88]))
  assert summary["ensemble/auroc/macro"] == pytest.approx(0.87)
  assert summary["random_forest/auprc/micro"] == pytest.approx(np.mean([0.83, 0.84]) / 2)
  assert summary["gnn/seconds"] == pytest.approx(105.0)
  assert summary["random_forest/seconds"] == pytest.approx((40.0 + 46.0) / 2)
  assert summary["embedding/floral/auroc"] == 0.8
  want = np.mean([v for (s, _, _), v in EMB_AUROCS.items() if s == 20])
  assert summary["transfer/natural/embedding/n20"] == pytest.approx(want)


def test_claims_are_paired_by_fold():
  lines = odor_report.claims(config(), ROWS, ["gnn", "ensemble", "random_forest"], [0, 1])
  by_method = {line.split("(")[1].split(")")[0]: line for line in lines
               if line.startswith("- The GNN")}
  # Single networks: fold means 0.82 and 0.87 against 0.83 and 0.84: +0.01 on average.
  assert "ahead on 1 of 2 folds" in by_method["gnn"]
  assert "difference +0.0100" in by_method["gnn"] and by_method["gnn"].endswith("holds.\n")
  assert "ahead on 2 of 2 folds" in by_method["ensemble"]
  openpom = [line for line in lines if "openpom" in line][0]
  assert "0.8872" in openpom and "ensemble here 0.8700 (-0.0172)" in openpom
  caveat = [line for line in lines if line.startswith("- Caveat")][0]
  assert "gnn 0.8700, ensemble 0.8900, random_forest 0.8400" in caveat


def test_a_claim_that_does_not_hold_says_so():
  rows = [dict(r, **{"auroc/macro": 0.9}) if r["method"] == "random_forest" else r
          for r in ROWS]
  lines = odor_report.claims(config(), rows, ["gnn", "ensemble", "random_forest"], [0, 1])
  assert all(line.endswith("does not hold.\n") for line in lines if line.startswith("- The"))


def test_the_report_files(tmp_path):
  odor_report.report(config(), ROWS, EMBEDDING, TRANSFER, TABLE, str(tmp_path))
  with open(tmp_path / "artifacts" / "per_descriptor.csv", encoding="utf-8") as f:
    table = list(csv.DictReader(f))
  assert [r["descriptor"] for r in table] == list(NAMES)
  assert [int(r["positives"]) for r in table] == [2, 2, 2]
  # musk: the ensemble's mean over folds (0.8, 0.9) and the forest's (0.95, 0.85).
  assert float(table[1]["ensemble"]) == pytest.approx(0.85)
  assert float(table[1]["random_forest"]) == pytest.approx(0.90)
  text = open(tmp_path / "artifacts" / "odor.md", encoding="utf-8").read()
  diffs = [EMB_AUROCS[k] - FP_AUROCS[k] for k in EMB_AUROCS if k[0] == 10]
  assert (f"| natural | 10 | {np.mean([EMB_AUROCS[k] for k in EMB_AUROCS if k[0] == 10]):.3f}"
          f" | {np.mean([FP_AUROCS[k] for k in FP_AUROCS if k[0] == 10]):.3f} | "
          f"{np.mean(diffs):+.3f} ± {np.std(diffs, ddof=1):.3f} |") in text
  # The networks trained with the held-out labels: musk and rose on fold 0's gnn rows.
  assert f"score {np.mean([0.7, 0.9, 0.9, 0.9]):.3f} on them" in text
  assert "The ensemble is ahead on 1 of 3 descriptors" in text  # fruity only
  for name in ("auroc.png", "per_descriptor.png", "transfer.png"):
    assert os.path.getsize(tmp_path / "artifacts" / name) > 0
