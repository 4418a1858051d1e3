"""Equality of opportunity by post-processing (Hardt, Price & Srebro 2016), measured.

Two parts, each a set of rows of the study's results log (`results.jsonl`):

  1. FICO (`config.fico`): the paper's case study. Every rule of `config.rules` is fitted to
     the published TransRisk score distribution by race (weighted rows: `jaxml.data` source
     `fico`) with the paper's lending costs: a loan to someone who defaults loses
     `fico.fp_cost` (0.82), one to a repayer earns `fico.fn_cost` (0.18), so a loan pays when
     the repayment odds beat 82:18. A rule's profit is reported as a share of the max-profit
     rule's (constraint "none"), beside the shares the paper gives.
  2. Trained classifiers (`config.datasets`): a jaxml classifier (`config.classifiers.<name>`,
     a whole classifier config) is trained on the data set's train split in
     `<workdir>/<name>` (resumed if interrupted, reused once finished); its score is
     P(positive) from `TrainedRun.predict`. The test split is cut in two by a permutation
     seeded by `config.seed`: the thresholds are fitted on the validation part
     (`validation_fraction`) and measured on the rest, for every group attribute of
     `config.attributes.<name>` and every rule, with costs `fp_cost` and `fn_cost` (1 and 1:
     accuracy). Decisions are a rule's acceptance probabilities, i.e. expected over its
     coins. Test accuracy, TPR gap and FPR gap get bootstrap percentile intervals
     (`bootstrap.samples` resamples of the test part, the same resamples for every rule and
     method of one attribute, so their differences are paired). With `compare_fairlearn`,
     fairlearn's ThresholdOptimizer (`prefit`, objective accuracy) is fitted to the same
     validation scores for each rule it has and measured alike.

Small groups: a group whose validation part holds fewer than `min_group_size` examples of
either label has rates too noisy to equalise (or undefined, with no positives): such groups
are pooled into one "other" group, and if the pool itself is short of either label its
examples are left out of that attribute's analysis (merged into another group they would
misstate its rates). The tables name the groups used and those left out.

Rerun on the same workdir, rows already there (keyed by part, attribute, rule and method,
under a fingerprint of every other setting) are reused; a data set whose rows are all there is
neither trained nor scored again. Artifacts (`fairness_report`): `fico_table.md`,
`fico_roc.png`, `table.md`, `tradeoff.png`, next to the common study outputs.

Study protocol: `build(config) -> Study` (jaxml/studies/base.py); `config.study = "fairness"`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import zlib

import jax
import numpy as np

from jaxml import fairness, trained
from jaxml.data import load_dataset
from jaxml.errors import ConfigError
from jaxml.studies import fairness_report, results, runs
from jaxml.studies.base import Study

# The data sets a classifier is trained on here, and their group attributes.
DATASETS = {"adult": ("sex", "race"), "compas": ("race", "sex")}
# jaxml's rules and fairlearn's ThresholdOptimizer constraints that ask for the same thing.
FAIRLEARN = {"equal_opportunity": "true_positive_rate_parity",
             "equalized_odds": "equalized_odds", "demographic_parity": "demographic_parity"}
# What a results row reports of a rule's decisions (`fairness.group_metrics` names).
MEASURED = ("accuracy", "tpr_gap", "fpr_gap", "selection_rate_gap")
# The settings that say which rows exist (in the row key), not what is in a row.
SWEEP = ("rules", "datasets", "attributes", "compare_fairlearn")
INSTALL = "pip install 'fairlearn>=0.15,<0.16'"  # as the test and bench extras pin it


def build(config) -> Study:
  """The study of `config`, after every check that can fail on the config alone."""
  validate(config)
  headline = []
  if config.fico.enabled:
    headline += [f"fico/share/{r}" for r in config.rules if r != "none"]
  for name in config.datasets:
    for attribute in config.attributes[name]:
      headline += [f"{name}/{attribute}/{r}/jaxml/accuracy" for r in config.rules
                   if r == "equal_opportunity"]
  outputs = (results.RESULTS,) + (("artifacts/fico_table.md", "artifacts/fico_roc.png")
                                   if config.fico.enabled else ()) + (
      ("artifacts/table.md", "artifacts/tradeoff.png") if config.datasets else ())
  return Study(run=functools.partial(fit, config), headline=tuple(headline), outputs=outputs)


def _positive_finite(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and \
      math.isfinite(value) and value > 0


def validate(config) -> None:
  """Every check that can fail on the config alone, before anything trains."""
  rules = list(config.rules)
  if not rules or any(r not in fairness.CONSTRAINTS for r in rules) or len(set(rules)) < len(rules):
    raise ConfigError(f"rules={rules}: choose distinct rules from "
                      f"{', '.join(fairness.CONSTRAINTS)}")
  if config.fico.enabled and "none" not in rules:
    raise ConfigError(f"rules={rules}: FICO profits are shares of the max-profit rule, so "
                      "rules must include 'none' (or set fico.enabled=False)")
  for key, value in (("fp_cost", config.fp_cost), ("fn_cost", config.fn_cost),
                     ("fico.fp_cost", config.fico.fp_cost), ("fico.fn_cost", config.fico.fn_cost)):
    if not _positive_finite(value):
      raise ConfigError(f"{key}={value} must be a finite number > 0")
  samples = config.bootstrap.samples
  if not isinstance(samples, int) or isinstance(samples, bool) or samples < 10:
    raise ConfigError(f"bootstrap.samples={samples} must be an integer >= 10")
  if not 0 < config.bootstrap.level < 1:
    raise ConfigError(f"bootstrap.level={config.bootstrap.level} must be in (0, 1)")
  if not 0 < config.validation_fraction < 1:
    raise ConfigError(f"validation_fraction={config.validation_fraction} must be in (0, 1)")
  if not isinstance(config.min_group_size, int) or config.min_group_size < 1:
    raise ConfigError(f"min_group_size={config.min_group_size} must be an integer >= 1")
  datasets = list(config.datasets)
  if any(d not in DATASETS for d in datasets) or len(set(datasets)) < len(datasets):
    raise ConfigError(f"datasets={datasets}: choose distinct data sets from "
                      f"{', '.join(DATASETS)}")
  if not datasets and not config.fico.enabled:
    raise ConfigError("nothing to do: datasets is empty and fico.enabled is False")
  for name in datasets:
    if name not in config.classifiers or config.classifiers[name].get("algo") != "classifier":
      raise ConfigError(f"classifiers.{name} must be a classifier config (algo 'classifier')")
    if config.classifiers[name].data.source != name:
      raise ConfigError(f"classifiers.{name}.data.source="
                        f"{config.classifiers[name].data.source!r} must be {name!r}")
    attributes = list(config.attributes.get(name, ()))
    if not attributes or any(a not in DATASETS[name] for a in attributes):
      raise ConfigError(f"attributes.{name}={attributes}: choose from "
                        f"{', '.join(DATASETS[name])}")
  if config.compare_fairlearn and datasets:
    if config.fp_cost != config.fn_cost:
      raise ConfigError(f"compare_fairlearn=True compares at fairlearn's objective, accuracy: "
                        f"fp_cost={config.fp_cost} must equal fn_cost={config.fn_cost}")
    try:
      import fairlearn.postprocessing  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
      raise ConfigError(f"compare_fairlearn=True needs fairlearn: {INSTALL} (or set "
                        "compare_fairlearn=False)") from None


def fingerprint(config) -> str:
  """What a row depends on: every setting but the sweep's axes, the device count and
  progress bars (a classifier's own `progress` too)."""
  return results.fingerprint(config, exclude=SWEEP + ("progress",))


def fit(config, workdir: str) -> dict:
  """Runs (or resumes) the whole study in `workdir`; returns its summary."""
  is_chief = jax.process_index() == 0
  log = results.ResultsLog(os.path.join(workdir, results.RESULTS), fingerprint(config),
                           write=is_chief)
  curves = fico_rows(config, log) if config.fico.enabled else None
  for name in config.datasets:
    classifier_rows(config, workdir, name, log)
  return fairness_report.report(config, log, curves, workdir if is_chief else None)


def fico_rows(config, log):
  """Fits every rule to FICO (rows ("fico", attribute, rule, "jaxml")); returns the groups'
  weighted ROC curves and names, which the figure draws."""
  dataset = load_dataset(config.fico.data)
  task = dataset.task
  fields = dataset.train.read(np.arange(len(dataset.train)))
  scores, labels = fields[task.inputs[0]], fields[task.target]
  attribute = task.groups[0]
  groups, weights = fields[attribute], fields[task.weight]
  names = dataset.fields[attribute].categories
  for rule in config.rules:
    def compute(rule=rule):
      derived = fairness.fit_thresholds(
          scores, labels, groups, constraint=rule, fp_cost=float(config.fico.fp_cost),
          fn_cost=float(config.fico.fn_cost), weights=weights)
      return {"part": "fico", "attribute": attribute, "rule": rule, "method": "jaxml",
              "utility": derived.utility, "accuracy": derived.accuracy,
              "groups": [names[g] for g in derived.groups], "thresholds": derived.rules()}
    log.cached(("fico", attribute, rule, "jaxml"), compute)
  curves = fairness.roc_curves(scores, labels, groups, weights)
  return {names[g]: (c.fpr, c.tpr) for g, c in curves.items()}


def merge_small_groups(groups, labels, validation, names, min_count: int):
  """(codes [N] in 0..k-1, or -1 for examples left out; the k names; the names left out):
  groups with fewer than `min_count` examples of either label among the `validation` rows
  are pooled into "other"; if the pool itself is short, its examples are left out of the
  attribute's analysis (see the module docstring)."""
  present = np.unique(groups)
  pos = {g: int(np.sum((groups[validation] == g) & (labels[validation] == 1))) for g in present}
  neg = {g: int(np.sum((groups[validation] == g) & (labels[validation] == 0))) for g in present}
  kept = [g for g in present if min(pos[g], neg[g]) >= min_count]
  small = [g for g in present if g not in kept]
  if not kept:
    raise ConfigError(f"min_group_size={min_count}: no group has that many validation "
                      "examples of each label")
  label = [names[g] for g in kept]
  target = {g: i for i, g in enumerate(kept)}
  left_out = []
  if small:
    if min(sum(pos[g] for g in small), sum(neg[g] for g in small)) >= min_count:
      target.update({g: len(kept) for g in small})
      label.append("other (" + ", ".join(names[g] for g in small) + ")")
    else:
      # Merging them into another group would misstate that group's rates: leave them out.
      target.update({g: -1 for g in small})
      left_out = [names[g] for g in small]
  return np.array([target[g] for g in groups], np.int32), label, left_out


def _fairlearn_decisions(constraint, val_scores, val_labels, val_groups, test_scores,
                         test_groups):
  """fairlearn's ThresholdOptimizer on the same scores: its expected decisions (validation,
  test)."""
  # pylint: disable=import-outside-toplevel  # optional, and slow to import
  from fairlearn.postprocessing import ThresholdOptimizer
  from sklearn.base import BaseEstimator

  class Score(BaseEstimator):
    """The classifier's score, already computed: column 0 of X."""

    def fit(self, x, y):
      del x, y
      return self

    def predict(self, x):
      return np.asarray(x)[:, 0]

    def __sklearn_is_fitted__(self):
      return True

  optimizer = ThresholdOptimizer(estimator=Score(), constraints=constraint,
                                 objective="accuracy_score", prefit=True,
                                 predict_method="predict")
  optimizer.fit(val_scores[:, None], val_labels, sensitive_features=val_groups)
  return tuple(optimizer._pmf_predict(s[:, None], sensitive_features=g)[:, 1]  # pylint: disable=protected-access
               for s, g in ((val_scores, val_groups), (test_scores, test_groups)))


def _measure(config, key, num_groups, validation, test, decisions):
  """A row's numbers: expected metrics on the validation part, and on the test part with
  bootstrap intervals (`MEASURED` each as [estimate, low, high])."""
  (val_labels, val_groups), (test_labels, test_groups) = validation, test
  val = fairness.group_metrics(decisions[0], val_labels, val_groups, num_groups)
  boot = fairness.bootstrap(decisions[1], test_labels, test_groups, num_groups, key,
                            samples=int(config.bootstrap.samples),
                            level=float(config.bootstrap.level))
  return {"validation": {m: float(val[m]) for m in MEASURED},
          "test": {m: [float(v) for v in boot[m]] for m in MEASURED},
          "test_tpr": [float(v) for v in boot["tpr"][0]],
          "test_fpr": [float(v) for v in boot["fpr"][0]]}


def _row_keys(config, name):
  keys = []
  for attribute in config.attributes[name]:
    for rule in config.rules:
      keys.append((name, attribute, rule, "jaxml"))
      if config.compare_fairlearn and rule in FAIRLEARN:
        keys.append((name, attribute, rule, "fairlearn"))
  return keys


def classifier_rows(config, workdir: str, name: str, log) -> None:
  """Trains (or reuses) data set `name`'s classifier and measures every missing row of it."""
  keys = [k for k in _row_keys(config, name) if k not in log]
  if not keys:
    return
  classifier = config.classifiers[name].copy_and_resolve_references()
  classifier.progress = classifier.progress and config.progress
  attributes = list(config.attributes[name])
  groups_of = load_dataset(classifier.data).task.groups  # cheap: refuse before training
  if any(a not in groups_of for a in attributes):
    raise ConfigError(f"attributes.{name}={attributes}: the data's groups are {list(groups_of)}")
  runs.run_once(classifier, os.path.join(workdir, name))
  run = trained.load(os.path.join(workdir, name))
  split = run.dataset.test
  probabilities, labels = run.predict(split)
  scores = probabilities[:, 1].astype(np.float64)
  fields = split.read(np.arange(len(split)))
  order = np.random.default_rng(int(config.seed)).permutation(len(scores))
  cut = int(round(config.validation_fraction * len(scores)))
  validation, test = np.sort(order[:cut]), np.sort(order[cut:])
  for attribute in attributes:
    codes, names, left_out = merge_small_groups(fields[attribute], labels, validation,
                                                run.dataset.fields[attribute].categories,
                                                int(config.min_group_size))
    val_rows, test_rows = (rows[codes[rows] >= 0] for rows in (validation, test))
    parts = [(labels[i], codes[i]) for i in (val_rows, test_rows)]
    key = jax.random.fold_in(jax.random.key(int(config.seed)),
                             zlib.crc32(f"{name}/{attribute}".encode()))
    common = {"part": "classifier", "dataset": name, "attribute": attribute, "groups": names,
              "left_out": left_out, "num_validation": len(val_rows),
              "num_test": len(test_rows)}
    for rule in config.rules:
      row_key = (name, attribute, rule, "jaxml")
      if row_key in keys:
        derived = fairness.fit_thresholds(
            scores[val_rows], labels[val_rows], codes[val_rows], constraint=rule,
            fp_cost=float(config.fp_cost), fn_cost=float(config.fn_cost))
        decisions = [np.asarray(derived.acceptance_probability(scores[i], codes[i]))
                     for i in (val_rows, test_rows)]
        log.put(row_key, {**common, "rule": rule, "method": "jaxml",
                          **_measure(config, key, len(names), *parts, decisions)})
      row_key = (name, attribute, rule, "fairlearn")
      if row_key in keys:
        decisions = _fairlearn_decisions(FAIRLEARN[rule], scores[val_rows],
                                         labels[val_rows], codes[val_rows], scores[test_rows],
                                         codes[test_rows])
        log.put(row_key, {**common, "rule": rule, "method": "fairlearn",
                          **_measure(config, key, len(names), *parts, decisions)})
      logging.info("fairness %s/%s/%s measured", name, attribute, rule)
