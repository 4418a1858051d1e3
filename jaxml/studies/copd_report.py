"""The COPD study's summary, report and plots (jaxml/studies/copd.py measures the rows).
Host-only: rows in, markdown and PNG out.

Statistics over seeds: each (part, seed) row's number is one sample; tables show mean ± sd
over seeds. The claim section is computed from the numbers: a comparison "holds" when the
mean difference over seeds favours the claim and every seed's paired bootstrap interval
excludes 0 on its side, "holds in the means only" when the mean favours it but some seed's
interval includes 0, and "does not hold" otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jaxml.core import files

LABELS = {"ml_noisy": "ML liability (noisy labels)", "ml_clean": "ML liability (clean labels)",
          "ratio": "-FEV1/FVC", "gold": "GOLD: FEV1/FVC < 0.7", "lln": "GLI: FEV1/FVC < LLN",
          "logreg_noisy": "logistic regression (noisy labels)",
          "logreg_clean": "logistic regression (clean labels)"}
SCORERS = tuple(LABELS)
OUTCOMES = ("copd", "hospitalised")
METRICS = ("auroc", "auprc")
# Methods trained on labels: (name, clean scorer, noisy scorer).
TRAINED = (("ML liability", "ml_clean", "ml_noisy"),
           ("logistic regression", "logreg_clean", "logreg_noisy"))
GWAS_PHENOTYPES = ("ml_liability", "noisy_label", "ratio")
LOOSE = "p1e-05"  # copd_gwas.threshold_key(1e-5): its looser threshold's key suffix
R2_AGREES = 0.9  # effect-size R² that counts as agreement (the paper's is 0.93)
SMALL_COST = 0.02  # an AUROC lost to label noise that counts as little
GWAS_KEYS = ("causal_found", f"causal_found_{LOOSE}", "false_discoveries", "lambda_gc",
             "truth_r", "effect_r2_causal", "effect_r2_both", "num_both", "num_samples")
PAPER_CLAIM = ("Cosentino et al. (2023) report, on UK Biobank, that the ML liability trained on "
               "noisy medical-record labels predicts COPD, hospitalisation and death better "
               "than FEV1/FVC (PR curves), stratifies survival by its quartiles, and as a GWAS "
               "phenotype finds the known loci and more, effect sizes agreeing with the manual "
               "phenotype's (R² 0.93).")


def values(rows: Sequence[dict], part: str, key: str) -> list[float]:
  """`key` of every `part` row that has it, one per seed, in row order."""
  return [float(r[key]) for r in rows if r.get("part") == part and r.get(key) is not None]


def stat(rows: Sequence[dict], part: str, key: str) -> tuple[float, float, int]:
  """(mean, sample sd (0 for one seed), seeds) of `key` over the `part` rows."""
  v = np.asarray(values(rows, part, key), np.float64)
  v = v[np.isfinite(v)]
  if not len(v):
    return (float("nan"), float("nan"), 0)
  return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))


def noise_costs(rows: Sequence[dict], outcome: str = "copd", metric: str = "auroc") -> dict:
  """{method: [clean - noisy per seed]} for the methods trained on labels."""
  out = {}
  for name, clean, noisy in TRAINED:
    out[name] = [r[f"{outcome}/{clean}/{metric}"] - r[f"{outcome}/{noisy}/{metric}"]
                 for r in rows if r.get("part") == "scores"]
  return out


def summarise(rows: Sequence[dict]) -> dict:
  """`step` (rows) and the means over seeds of every scorer's AUROC/AUPRC per outcome, the
  survival HRs and the GWAS counts."""
  summary = {"step": len(rows)}
  for outcome in OUTCOMES:
    for scorer in SCORERS:
      for metric in METRICS:
        key = f"{outcome}/{scorer}/{metric}"
        mean, _, count = stat(rows, "scores", key)
        if count:
          summary[key] = mean
  for name, costs in noise_costs(rows).items():
    if costs:
      summary[f"noise_cost/{name.replace(' ', '_')}/auroc"] = float(np.mean(costs))
  for scorer in ("ml_noisy", "ratio"):
    for key in ("hr_per_sd", "concordance"):
      mean, _, count = stat(rows, "survival", f"{scorer}/{key}")
      if count:
        summary[f"survival/{scorer}/{key}"] = mean
  for phenotype in GWAS_PHENOTYPES:
    for key in ("causal_found", "false_discoveries", "effect_r2_both"):
      mean, _, count = stat(rows, "gwas", f"{phenotype}/{key}")
      if count:
        summary[f"gwas/{phenotype}/{key}"] = mean
  return summary


def _cell(s: tuple[float, float, int], digits: int = 3) -> str:
  mean, sd, count = s
  if not count:
    return "—"
  return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if count > 1 else "")


def _paired_verdict(rows: Sequence[dict], key: str, higher_is_claim: bool = True) -> str:
  """The verdict (module docstring) on the paired difference `key` over the scores rows."""
  scored = [r for r in rows if r.get("part") == "scores" and key in r]
  if not scored:
    return "not measured"
  diffs = np.array([r[key] for r in scored])
  sign = 1 if higher_is_claim else -1
  mean = sign * diffs.mean()
  if mean <= 0:
    return "does not hold"
  excluded = all((r[f"{key}_lower"] > 0) if higher_is_claim else (r[f"{key}_upper"] < 0)
                 for r in scored)
  return "holds" if excluded else "holds in the means only (some seed's interval includes 0)"


def claim_lines(rows: Sequence[dict]) -> list[str]:
  """The claim section's bullets, each with the numbers behind its verdict."""
  out = []
  for outcome, what in (("copd", "COPD status (true)"), ("hospitalised", "hospitalisation")):
    for metric in METRICS:
      key = f"{outcome}/ml_noisy_minus_ratio/{metric}"
      ml, ratio = stat(rows, "scores", f"{outcome}/ml_noisy/{metric}"), stat(
          rows, "scores", f"{outcome}/ratio/{metric}")
      if not ml[2]:
        continue
      out.append(f"- The ML liability predicts {what} better than FEV1/FVC ({metric.upper()}):"
                 f" {_cell(ml)} vs {_cell(ratio)}, difference {_cell(stat(rows, 'scores', key))}"
                 f" — **{_paired_verdict(rows, key)}**.\n")
  hr_ml, hr_ratio = stat(rows, "survival", "ml_noisy/hr_per_sd"), stat(
      rows, "survival", "ratio/hr_per_sd")
  if hr_ml[2]:
    logrank = values(rows, "survival", "ml_noisy/logrank_p")
    stratifies = all(p < 0.05 for p in logrank)
    out.append(f"- The liability's quartiles stratify survival (log-rank p < 0.05 in every "
               f"seed; p = {', '.join(f'{p:.2g}' for p in logrank)}) — "
               f"**{'holds' if stratifies else 'does not hold'}**.\n")
    better = hr_ml[0] > hr_ratio[0]
    out.append(f"- Hazard ratio per SD (adjusted for age and sex) is larger for the liability "
               f"than for -FEV1/FVC: {_cell(hr_ml, 2)} vs {_cell(hr_ratio, 2)} — "
               f"**{'holds' if better else 'does not hold'}**.\n")
  found_ml, found_ratio = stat(rows, "gwas", "ml_liability/causal_found"), stat(
      rows, "gwas", "ratio/causal_found")
  if found_ml[2]:
    loose_ml, loose_ratio = (stat(rows, "gwas", f"{p}/causal_found_{LOOSE}")
                             for p in ("ml_liability", "ratio"))
    counts = (f"{_cell(found_ml, 1)} vs {_cell(found_ratio, 1)} of "
              f"{stat(rows, 'gwas', 'ml_liability/causal_total')[0]:.0f} at the threshold "
              f"(at p < 1e-5: {_cell(loose_ml, 1)} vs {_cell(loose_ratio, 1)})")
    if found_ml[0] == 0 and found_ratio[0] == 0:
      verdict = "not measurable: neither finds a locus at this size"
    else:
      verdict = "holds" if found_ml[0] >= found_ratio[0] else "does not hold"
    out.append(f"- The liability as a GWAS phenotype finds at least as many causal loci as "
               f"FEV1/FVC: {counts} — **{verdict}**.\n")
    r2 = stat(rows, "gwas", "ml_liability/effect_r2_both")
    r2_causal = stat(rows, "gwas", "ml_liability/effect_r2_causal")
    if not r2[2]:
      verdict = "not measurable: fewer than 3 loci significant in both"
    else:
      verdict = "holds" if r2[0] >= R2_AGREES else "does not hold"
    out.append(f"- Its effect sizes agree with FEV1/FVC's on the loci both find (paper: R² "
               f"0.93): R² {_cell(r2, 2)} (over the causal SNPs: {_cell(r2_causal, 2)}) — "
               f"**{verdict}** (at R² >= {R2_AGREES}).\n")
  costs = noise_costs(rows)
  if costs.get("ML liability"):
    ml_cost, lr_cost = np.mean(costs["ML liability"]), np.mean(costs["logistic regression"])
    out.append(f"- Label noise costs the ML liability little (AUROC clean - noisy "
               f"{ml_cost:+.3f}; logistic regression {lr_cost:+.3f}) — "
               f"**{'holds' if ml_cost < SMALL_COST else 'does not hold'}** (at < "
               f"{SMALL_COST}).\n")
  return out


def _score_table(rows: Sequence[dict], outcome: str) -> list[str]:
  lines = ["| scorer | AUROC | AUPRC | AUROC − (−FEV1/FVC) | AUPRC − (−FEV1/FVC) |\n",
           "|---|---|---|---|---|\n"]
  for scorer in SCORERS:
    cells = [_cell(stat(rows, "scores", f"{outcome}/{scorer}/{m}")) for m in METRICS]
    diffs = ["—" if scorer == "ratio" else
             _cell(stat(rows, "scores", f"{outcome}/{scorer}_minus_ratio/{m}")) for m in METRICS]
    lines.append(f"| {LABELS[scorer]} | " + " | ".join(cells + diffs) + " |\n")
  first = next((r for r in rows if r.get("part") == "scores"), None)
  if first is not None:
    lines.append(f"\nSeed {first['seed']}'s 95% bootstrap intervals: " + "; ".join(
        f"{LABELS[s]} AUROC [{first[f'{outcome}/{s}/auroc_lower']:.3f}, "
        f"{first[f'{outcome}/{s}/auroc_upper']:.3f}]" for s in ("ml_noisy", "ratio")) + ".\n")
  return lines


def _survival_table(rows: Sequence[dict]) -> list[str]:
  lines = ["| score | HR per SD (age, sex adjusted) | concordance | log-rank χ² (quartiles) |\n",
           "|---|---|---|---|\n"]
  for scorer in ("ml_noisy", "ratio"):
    lines.append(f"| {LABELS[scorer]} | " + " | ".join(
        _cell(stat(rows, "survival", f"{scorer}/{k}"), d)
        for k, d in (("hr_per_sd", 2), ("concordance", 3), ("logrank_chi2", 1))) + " |\n")
  return lines


def _gwas_table(rows: Sequence[dict]) -> list[str]:
  lines = ["| phenotype | " + " | ".join(GWAS_KEYS) + " |\n",
           "|---" * (len(GWAS_KEYS) + 1) + "|\n"]
  for phenotype in GWAS_PHENOTYPES:
    lines.append(f"| {phenotype} | " + " | ".join(
        _cell(stat(rows, "gwas", f"{phenotype}/{k}"), 2) for k in GWAS_KEYS) + " |\n")
  return lines


def report(config, rows: Sequence[dict], workdir: str | None) -> dict:
  """The summary; with a `workdir`, artifacts/copd.md and the plots (from the first seed's
  saved scores)."""
  summary = summarise(rows)
  if workdir is None:
    return summary
  artifacts = os.path.join(workdir, "artifacts")
  files.makedirs(artifacts)
  data, run = config.run.data, config.run
  costs = noise_costs(rows)
  lines = [f"# COPD from raw spirograms with noisy labels: {len(config.seeds)} seed(s)\n\n",
           f"{PAPER_CLAIM}\n\n",
           f"Simulated cohort (`spirometry`, {data.train_individuals} train / "
           f"{data.test_individuals} test people, {data.num_snps} SNPs, under-diagnosis "
           f"{data.underdiagnosis}, false positives {data.false_positive_rate}); the ensemble: "
           f"{run.replicas.count or 1} resnet1d member(s) of width {run.model.width}, "
           f"{run.num_steps} steps. Scored against the TRUE status on the test split; mean ± sd "
           "over seeds. The simulator tests the pipeline, label-noise robustness and GWAS "
           "power, not the medical claim (the curve's shape carries severity by "
           "construction).\n\n",
           "## Does the paper's claim hold here?\n\n", *claim_lines(rows),
           "\n## COPD status (true)\n\n", *_score_table(rows, "copd"),
           "\n## Hospitalisation\n\n", *_score_table(rows, "hospitalised"),
           "\n## Noise cost (AUROC against true COPD, clean-trained − noisy-trained)\n\n",
           *(f"- {name}: {_cell(stat([{'part': 'c', 'v': v} for v in c], 'c', 'v'))}\n"
             for name, c in costs.items() if c),
           "- the rules (-FEV1/FVC, GOLD, LLN) use no labels: 0 by construction.\n",
           "\n## Survival\n\n", *_survival_table(rows),
           "\n## GWAS (test individuals; effect R² against FEV1/FVC; truth_r: betas vs the "
           "true causal effects)\n\n", *_gwas_table(rows)]
  files.write_text(os.path.join(artifacts, "copd.md"), "".join(lines))
  _plots(config, workdir, artifacts)
  return summary


def _plots(config, workdir: str, artifacts: str) -> None:
  # pylint: disable=import-outside-toplevel  # the study module imports this one
  from jaxml.evaluators import risk_plots
  from jaxml.studies import copd
  path = copd.scores_path(workdir, config.seeds[0])
  if not os.path.exists(path):
    return
  with np.load(path) as saved:
    arrays = dict(saved)
  for outcome in OUTCOMES:
    risk_plots.plot_pr_curves({LABELS[s]: arrays[s] for s in ("ml_noisy", "ratio", "logreg_noisy")},
                              arrays[outcome], os.path.join(artifacts, f"pr_{outcome}.png"),
                              title=f"{outcome} (seed {config.seeds[0]})")
  for scorer, name in (("ml_noisy", "liability"), ("ratio", "ratio")):
    risk_plots.plot_km_by_quantile(arrays["survival_time"], arrays["event"], arrays[scorer],
                                   os.path.join(artifacts, f"km_{name}.png"),
                                   score_name=LABELS[scorer], time_label="years")
