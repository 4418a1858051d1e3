"""The COPD report (jaxml/studies/copd_report.py) from hand-made rows: means and sds over seeds,
the noise cost (clean minus noisy per seed), and the claim section's verdicts following the
numbers (a paired interval including 0 in one seed weakens "holds"; a lower AUROC reverses it;
no locus found is "not measurable")."""

import ml_collections
import numpy as np
import pytest

from experiments import copd_study as copd_study_config
from jaxml.studies import copd_report as report


def _scores(seed, ml, ratio, lower, ml_clean=None):
  row = {"part": "scores", "seed": seed}
  for outcome in report.OUTCOMES:
    for scorer in report.SCORERS:
      for metric in report.METRICS:
        value = {"ml_noisy": ml, "ratio": ratio,
                 "ml_clean": ml if ml_clean is None else ml_clean}.get(scorer, 0.8)
        row.update({f"{outcome}/{scorer}/{metric}": value,
                    f"{outcome}/{scorer}/{metric}_lower": value - 0.05,
                    f"{outcome}/{scorer}/{metric}_upper": value + 0.05})
        if scorer != "ratio":
          key = f"{outcome}/{scorer}_minus_ratio/{metric}"
          row.update({key: value - ratio, f"{key}_lower": lower, f"{key}_upper": 0.2,
                      f"{key}_p": 0.01})
  return row


def _survival(seed, hr_ml, hr_ratio, p):
  return {"part": "survival", "seed": seed, "ml_noisy/hr_per_sd": hr_ml,
          "ratio/hr_per_sd": hr_ratio, "ml_noisy/logrank_p": p, "ratio/logrank_p": p,
          "ml_noisy/concordance": 0.7, "ratio/concordance": 0.65,
          "ml_noisy/logrank_chi2": 30.0, "ratio/logrank_chi2": 20.0}


def _gwas(seed, found_ml, found_ratio, r2):
  row = {"part": "gwas", "seed": seed}
  for name, found in (("ml_liability", found_ml), ("noisy_label", 1), ("ratio", found_ratio)):
    row.update({f"{name}/causal_found": found, f"{name}/causal_total": 30,
                f"{name}/causal_found_p1e-05": found + 2, f"{name}/effect_r2_both": r2,
                f"{name}/effect_r2_causal": r2})
  return row


def _rows(ml=(0.9, 0.92), lower=(0.01, 0.02), hr=1.8, p=1e-4, found=(5, 3), r2=0.95):
  rows = []
  for seed in (0, 1):
    rows += [_scores(seed, ml[seed], 0.85, lower[seed], ml_clean=ml[seed] + 0.01),
             _survival(seed, hr, 1.5, p), _gwas(seed, *found, r2)]
  return rows


def _claims(rows):
  return "".join(report.claim_lines(rows))


def test_summary_means_over_seeds_and_noise_cost():
  rows = _rows()
  summary = report.summarise(rows)
  assert summary["step"] == 6
  assert summary["copd/ml_noisy/auroc"] == pytest.approx(0.91)
  assert summary["noise_cost/ML_liability/auroc"] == pytest.approx(0.01)
  assert summary["survival/ml_noisy/hr_per_sd"] == pytest.approx(1.8)
  assert summary["gwas/ml_liability/causal_found"] == pytest.approx(5)
  mean, sd, count = report.stat(rows, "scores", "copd/ml_noisy/auroc")
  assert (mean, count) == (pytest.approx(0.91), 2)
  assert sd == pytest.approx(np.std([0.9, 0.92], ddof=1))


def test_claims_follow_the_numbers():
  text = _claims(_rows())
  assert "COPD status (true) better than FEV1/FVC (AUROC): 0.910 ± 0.014 vs 0.850" in text
  assert "— **holds**.\n- The ML liability predicts COPD status (true) better" in text
  # One seed's interval includes 0: only the means hold.
  assert "holds in the means only" in _claims(_rows(lower=(0.01, -0.01)))
  # A lower AUROC than FEV1/FVC's: the claim does not hold.
  worse = _claims(_rows(ml=(0.8, 0.82)))
  assert ("(AUROC): 0.810 ± 0.014 vs 0.850 ± 0.000, difference -0.040 ± 0.014 — "
          "**does not hold**") in worse
  # Survival: stratifies at p < 0.05, not at p = 0.2; HR comparison.
  assert "stratify survival" in text and "p = 0.0001, 0.0001) — **holds**" in text
  assert "p = 0.2, 0.2) — **does not hold**" in _claims(_rows(p=0.2))
  assert "1.80 ± 0.00 vs 1.50 ± 0.00 — **holds**" in text
  assert "1.20 ± 0.00 vs 1.50 ± 0.00 — **does not hold**" in _claims(_rows(hr=1.2))
  # GWAS: counts, "not measurable" when neither finds a locus, R² against 0.9.
  assert "5.0 ± 0.0 vs 3.0 ± 0.0 of 30 at the threshold" in text
  assert "not measurable: neither finds a locus" in _claims(_rows(found=(0, 0)))
  assert "**does not hold**.\n" in _claims(_rows(found=(1, 3)))
  assert "R² 0.95 ± 0.00 (over the causal SNPs: 0.95 ± 0.00) — **holds**" in text
  assert ("R² 0.50 ± 0.00 (over the causal SNPs: 0.50 ± 0.00) — **does not hold**"
          in _claims(_rows(r2=0.5)))
  assert "not measurable: fewer than 3 loci significant in both" in _claims(_rows(r2=float("nan")))
  # Noise cost: clean - noisy = +0.010 < 0.02.
  assert "AUROC clean - noisy +0.010" in text


def test_report_writes_markdown(tmp_path):
  config = copd_study_config.get_config("smoke")
  config = ml_collections.ConfigDict(config.to_dict())
  summary = report.report(config, _rows(), str(tmp_path))
  text = (tmp_path / "artifacts" / "copd.md").read_text()
  assert "## Does the paper's claim hold here?" in text
  assert "| ML liability (noisy labels) | 0.910 ± 0.014 |" in text
  assert "- ML liability: 0.010 ± 0.000" in text
  assert summary["step"] == 6
