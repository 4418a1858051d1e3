"""COPD from raw spirograms with noisy labels, scored against the truth a simulator knows
(issue 23; Cosentino et al., Nature Genetics 2023; the config and its commands:
experiments/copd_study.py).

Per seed of `seeds`, ONE simulated cohort (`config.run.data` with data.seed = seed,
jaxml/data/sources/spirometry.py) and on it:

  runs      the ensemble of `config.run` (experiments/copd.py: resnet1d, `replicas.count`
            members) trained on the NOISY labels in <workdir>/runs/noisy_s<seed>, and on the
            CLEAN labels (data.underdiagnosis = data.false_positive_rate = 0, which changes
            the labels and nothing else) in runs/clean_s<seed>; each trained once
            (`runs.run_once`), resumed if cut short.
  scorers   of the test individuals, each ranking COPD high:
              ml_noisy, ml_clean   `liability`: the members' mean P(COPD) of that run
              ratio                -FEV1/FVC (measured), continuous
              gold                 FEV1/FVC < 0.7 (GOLD), 0/1
              lln                  FEV1/FVC < GLI lower limit of normal, 0/1
              logreg_noisy, logreg_clean
                                   sklearn logistic regression on the standardised
                                   spirometry features (`FEATURES`) of the train split,
                                   fitted on its noisy / clean labels
            kept in <workdir>/predictions/scores_s<seed>.npz with the test individuals'
            outcomes, age, sex and survival, so every row can be recomputed from it.

Rows of <workdir>/results.jsonl, keyed (part, seed):

  scores    for each outcome of OUTCOMES (true `copd`, `hospitalised`) and scorer:
            `<outcome>/<scorer>/<auroc|auprc>` with `..._lower`, `..._upper` (percentile
            bootstrap at `level`, `resamples`), and for every scorer but `ratio` the paired
            bootstrap difference from -FEV1/FVC `<outcome>/<scorer>_minus_ratio/<metric>`
            with its interval and `..._p`; prevalences, counts, the runs' training seconds.
  survival  for the ML liability (noisy-trained) and -FEV1/FVC: the Cox hazard ratio per SD
            of the score adjusted for age and sex (`<scorer>/hr_per_sd`, CI, p), Harrell's
            concordance, and the log-rank test across the score's quartiles.
  gwas      `jaxml.studies.copd_gwas.gwas_rows` on the test individuals for the phenotypes
            `ml_liability`, `noisy_label` (binary, logistic) and `ratio` (FEV1/FVC), flattened
            as `<phenotype>/<key>`. Effect-size R^2 is against FEV1/FVC (`reference`): the
            post's comparison (the manual phenotype, R^2 0.93); agreement with the TRUE
            causal effects is in every phenotype's own `truth_r`, so the simulator's truth is
            not lost by choosing the paper's reference.

A rerun reuses the rows and trains nothing. The report (jaxml/studies/copd_report.py):
artifacts/copd.md, pr_copd.png, pr_hospitalised.png, km_liability.png, km_ratio.png and the
GWAS plots (artifacts/gwas_s<seed>/).
"""

from __future__ import annotations

import functools
import numbers
import os
import time

import jax
import numpy as np

from jaxml import trained
from jaxml.core import files
from jaxml.data.sources import spirometry
from jaxml.errors import ConfigError
from jaxml.evaluators import bootstrap, survival
from jaxml.studies import copd_gwas, copd_report, results, runs
from jaxml.studies.base import Study, check_seeds

SCORERS = ("ml_noisy", "ml_clean", "ratio", "gold", "lln", "logreg_noisy", "logreg_clean")
OUTCOMES = ("copd", "hospitalised")
METRICS = ("auroc", "auprc")
REFERENCE = "ratio"
FEATURES = ("fev1", "fvc", "ratio", "pef", "age", "sex", "height")
SURVIVAL_SCORERS = ("ml_noisy", "ratio")
GWAS_PHENOTYPES = ("ml_liability", "noisy_label", "ratio")
PARTS = ("scores", "survival", "gwas")
GOLD_CUTOFF = 0.7
# Which rows exist or how they are shown, not what is in them.
SWEEP = ("seeds", "progress")


def build(config) -> Study:
  validate(config)
  headline = tuple(f"copd/{s}/{m}" for m in METRICS for s in ("ml_noisy", REFERENCE))
  return Study(run=functools.partial(fit, config), headline=headline,
               outputs=(results.RESULTS, "artifacts/copd.md", "artifacts/pr_copd.png",
                        "artifacts/pr_hospitalised.png", "artifacts/km_liability.png",
                        "artifacts/km_ratio.png", "artifacts/gwas_s<seed>/", "runs/",
                        "predictions/"))


def validate(config) -> None:
  run = config.run
  if run.get("algo") != "classifier" or run.get("data", {}).get("source") != spirometry.NAME:
    raise ConfigError("run must be a 'classifier' run config on data.source 'spirometry' "
                      "(experiments/copd_study.py builds it from experiments/copd.py)")
  spirometry.settings(run.data)
  check_seeds(config.seeds)
  resamples = config.resamples
  if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples < 1:
    raise ConfigError(f"resamples={resamples!r} must be an integer >= 1")
  level = config.level
  if not isinstance(level, numbers.Real) or isinstance(level, bool) or not 0 < level < 1:
    raise ConfigError(f"level={level!r} must be a number in (0, 1)")
  threshold = config.gwas.threshold
  if not isinstance(threshold, numbers.Real) or not 0 < threshold < 1:
    raise ConfigError(f"gwas.threshold={threshold!r} must be in (0, 1)")
  num_pcs = config.gwas.num_pcs
  if not isinstance(num_pcs, int) or isinstance(num_pcs, bool) or num_pcs < 0:
    raise ConfigError(f"gwas.num_pcs={num_pcs!r} must be an integer >= 0")


def run_config(config, seed: int, labels: str):
  """The ensemble run at `seed` on the cohort of data.seed = seed, trained on `labels`
  ("noisy": the config's label noise; "clean": none)."""
  changes = {"data.seed": int(seed)}
  if labels == "clean":
    changes.update({"data.underdiagnosis": 0.0, "data.false_positive_rate": 0.0})
  return runs.configured(config.run, seed, config.progress, changes)


def run_dir(workdir: str, labels: str, seed: int) -> str:
  return os.path.join(workdir, "runs", f"{labels}_s{seed}")


def scores_path(workdir: str, seed: int) -> str:
  return os.path.join(workdir, "predictions", f"scores_s{seed}.npz")


def liability(workdir: str) -> np.ndarray:
  """The liability score of each test individual of the trained run in `workdir`: the mean
  over the ensemble's members of P(COPD) (one model: its P(COPD)), in the test split's
  order."""
  run = trained.load(workdir)
  probabilities, _ = run.predict(run.dataset.test)
  p = np.asarray(probabilities, np.float64)[..., 1]
  return p.mean(axis=1) if p.ndim == 2 else p


def logistic_scores(cohort: dict, target: str) -> np.ndarray:
  """P(COPD) of the test individuals from a logistic regression on the standardised
  `FEATURES`, fitted on the train split's `target` (0/1)."""
  # pylint: disable=import-outside-toplevel  # sklearn is slow to import
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  x = np.stack([np.asarray(cohort[f], np.float64) for f in FEATURES], axis=1)
  train = cohort["split"] == 0
  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
  model.fit(x[train], cohort[target][train])
  return model.predict_proba(x[~train])[:, 1]


def rule_scores(cohort: dict) -> dict[str, np.ndarray]:
  """-FEV1/FVC and the GOLD and GLI-LLN rules (0/1) of the test individuals."""
  test = cohort["split"] == 1
  ratio = np.asarray(cohort["ratio"], np.float64)[test]
  return {"ratio": -ratio, "gold": (ratio < GOLD_CUTOFF).astype(np.float64),
          "lln": (ratio < np.asarray(cohort["lln"], np.float64)[test]).astype(np.float64)}


def held_out_fields(cohort: dict) -> dict[str, np.ndarray]:
  test = cohort["split"] == 1
  return {k: np.asarray(cohort[k])[test] for k in (*OUTCOMES, "label", "survival_time",
                                                   "event", "age", "sex", "individual")}


def fit(config, workdir: str) -> dict:
  is_chief = jax.process_index() == 0
  log = results.ResultsLog(os.path.join(workdir, results.RESULTS),
                           results.fingerprint(config, exclude=SWEEP), write=is_chief)
  rows = []
  for seed in config.seeds:
    cohort = functools.cache(lambda seed=seed: spirometry.cohort(run_config(config, seed,
                                                                            "noisy").data))
    scored = functools.cache(lambda seed=seed, cohort=cohort: score_seed(
        config, workdir, seed, cohort(), is_chief))

    def part(name, compute, seed=seed):
      rows.append({"part": name, "seed": seed, **log.cached((name, seed), compute)})

    part("scores", lambda scored=scored: scored()[1])
    part("survival", lambda scored=scored: survival_row(scored()[0]))
    part("gwas", lambda seed=seed, cohort=cohort, scored=scored: gwas_row(
        config, cohort(), scored()[0], os.path.join(
            workdir, "artifacts", f"gwas_s{seed}") if is_chief else None))
  return copd_report.report(config, rows, workdir if is_chief else None)


def score_seed(config, workdir: str, seed: int, cohort: dict, is_chief: bool):
  """(every scorer's and outcome's test arrays, the seed's `scores` row): trains the two
  ensembles (or reuses them), scores the test split and saves the arrays."""
  arrays = {**held_out_fields(cohort), **rule_scores(cohort)}
  seconds = {}
  for labels in ("noisy", "clean"):
    out = run_dir(workdir, labels, seed)
    start = time.perf_counter()
    runs.run_once(run_config(config, seed, labels), out)
    seconds[f"train_seconds_{labels}"] = time.perf_counter() - start
    arrays[f"ml_{labels}"] = liability(out)
    arrays[f"logreg_{labels}"] = logistic_scores(cohort, "label" if labels == "noisy" else
                                                 "copd")
  if is_chief:
    path = scores_path(workdir, seed)
    files.makedirs(os.path.dirname(path))
    files.write_npz(path, arrays)
  return arrays, {**score_row(config, arrays, seed), **seconds}


def score_row(config, arrays: dict, seed: int) -> dict:
  """The `scores` row: AUROC/AUPRC with bootstrap intervals of every scorer against each
  outcome, and paired differences from -FEV1/FVC (every scorer on the same resamples)."""
  row = {"num_test": int(len(arrays["copd"]))}
  scorers = {name: arrays[name] for name in SCORERS}
  for outcome in OUTCOMES:
    labels = arrays[outcome]
    row[f"{outcome}/prevalence"] = float(np.mean(labels))
    row[f"{outcome}/positives"] = int(np.sum(labels))
    for entry in bootstrap.compare_scorers(scorers, labels, reference=REFERENCE,
                                           metrics=METRICS, resamples=int(config.resamples),
                                           seed=int(seed), level=float(config.level)):
      stem = f"{outcome}/{entry['scorer']}/{entry['metric']}"
      row.update({stem: entry["estimate"], f"{stem}_lower": entry["lower"],
                  f"{stem}_upper": entry["upper"]})
      if "minus_reference" in entry:
        diff = f"{outcome}/{entry['scorer']}_minus_{REFERENCE}/{entry['metric']}"
        row.update({diff: entry["minus_reference"], f"{diff}_lower": entry["difference_lower"],
                    f"{diff}_upper": entry["difference_upper"], f"{diff}_p": entry["p_value"]})
  row["label/prevalence"] = float(np.mean(arrays["label"]))
  return row


def survival_row(arrays: dict) -> dict:
  """Per scorer of SURVIVAL_SCORERS: Cox HR per SD adjusted for age and sex, concordance and
  the log-rank test across its quartiles."""
  times, events = arrays["survival_time"], arrays["event"]
  row = {"events": int(np.sum(events))}
  for name in SURVIVAL_SCORERS:
    score = np.asarray(arrays[name], np.float64)
    z = (score - score.mean()) / score.std()
    cox = survival.cox_ph(times, events, np.stack([z, arrays["age"], arrays["sex"]], 1),
                          names=("score_sd", "age", "sex"))
    first = cox.rows()[0]
    test = survival.logrank_test(times, events, survival.quantile_groups(score, 4))
    row.update({f"{name}/hr_per_sd": first["hazard_ratio"],
                f"{name}/hr_lower": first["hr_lower"], f"{name}/hr_upper": first["hr_upper"],
                f"{name}/hr_p": first["p_value"],
                f"{name}/concordance": survival.concordance_index(times, events, score),
                f"{name}/logrank_chi2": test.statistic, f"{name}/logrank_p": test.p_value})
  return row


def gwas_row(config, cohort: dict, arrays: dict, artifacts_dir: str | None) -> dict:
  """`gwas.gwas_rows` on the test individuals (NaN elsewhere), flattened."""
  test = cohort["split"] == 1
  n = len(test)

  def over_cohort(values):
    out = np.full(n, np.nan)
    out[test] = values
    return out

  phenotypes = {"ml_liability": over_cohort(arrays["ml_noisy"]),
                "noisy_label": over_cohort(arrays["label"].astype(np.float64)),
                "ratio": over_cohort(-arrays["ratio"])}  # FEV1/FVC itself
  got = copd_gwas.gwas_rows(cohort, phenotypes, binary=("noisy_label",),
                       num_pcs=int(config.gwas.num_pcs), threshold=float(config.gwas.threshold),
                       reference="ratio", artifacts_dir=artifacts_dir)
  return {f"{name}/{k}": (float(v) if isinstance(v, (float, np.floating)) else v)
          for name, row in got.items() for k, v in row.items()}
