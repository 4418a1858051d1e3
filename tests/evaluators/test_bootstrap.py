"""Bootstrap intervals against a plain loop with the same seed (scikit-learn's metrics, skips
counted the same way), the vectorised metrics against callables, the stratified scheme, the
paired difference against the two separate bootstraps, the interval's coverage on a
distribution whose AUROC is known, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics

from jaxml.errors import ConfigError
from jaxml.evaluators import bootstrap


def loop_reference(metric, scores, labels, resamples, seed, level, stratified=False):
  """The documented scheme written as the plainest loop: (kept values, skipped, lower, upper)."""
  rng = np.random.default_rng(seed)
  positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
  kept, skipped = [], 0
  for _ in range(resamples):
    if stratified:
      rows = np.concatenate([positives[rng.integers(0, len(positives), len(positives))],
                             negatives[rng.integers(0, len(negatives), len(negatives))]])
    else:
      rows = rng.integers(0, len(labels), len(labels))
    if labels[rows].min() == labels[rows].max():
      skipped += 1
    else:
      kept.append(metric(labels[rows], scores[rows]))
  lower, upper = np.quantile(kept, [(1 - level) / 2, (1 + level) / 2])
  return np.array(kept), skipped, lower, upper


def rare_positive_data(seed=0, n=30, positives=3):
  """Few positives, so some unstratified resamples hold none; rounded scores tie."""
  rng = np.random.default_rng(seed)
  labels = np.zeros(n, int)
  labels[rng.choice(n, positives, replace=False)] = 1
  return np.round(labels * 0.8 + rng.random(n), 1), labels


@pytest.mark.parametrize("name, sklearn_metric", [
    ("auroc", metrics.roc_auc_score), ("auprc", metrics.average_precision_score)])
def test_interval_equals_a_plain_loop_with_the_same_seed(name, sklearn_metric):
  scores, labels = rare_positive_data()
  interval = bootstrap.bootstrap_ci(name, scores, labels, resamples=300, seed=11, level=0.9)
  kept, skipped, lower, upper = loop_reference(sklearn_metric, scores, labels, 300, 11, 0.9)
  assert skipped > 0 and interval.skipped == skipped  # (27/30)^30: ~4% hold no positive
  np.testing.assert_allclose(interval.values, kept, rtol=1e-12)
  assert interval.lower == pytest.approx(lower, rel=1e-12)
  assert interval.upper == pytest.approx(upper, rel=1e-12)
  assert interval.estimate == pytest.approx(sklearn_metric(labels, scores), rel=1e-12)
  assert interval.resamples == 300 and interval.level == 0.9


def test_a_callable_metric_gives_the_vectorised_values():
  scores, labels = rare_positive_data(seed=1, n=60, positives=8)
  vectorised = bootstrap.bootstrap_ci("auprc", scores, labels, resamples=300, seed=2)
  looped = bootstrap.bootstrap_ci(lambda s, y: metrics.average_precision_score(y, s), scores,
                                  labels, resamples=300, seed=2)
  np.testing.assert_allclose(looped.values, vectorised.values, rtol=1e-12)
  assert (looped.lower, looped.upper, looped.skipped) == pytest.approx(
      (vectorised.lower, vectorised.upper, vectorised.skipped), rel=1e-12)


def test_chunks_do_not_change_the_values(monkeypatch):
  scores, labels = rare_positive_data(seed=3, n=50, positives=10)
  whole = bootstrap.bootstrap_ci("auroc", scores, labels, resamples=101, seed=4)
  monkeypatch.setattr(bootstrap, "CHUNK_ELEMENTS", 50 * 7)  # chunks of 7 resamples
  np.testing.assert_array_equal(
      bootstrap.bootstrap_ci("auroc", scores, labels, resamples=101, seed=4).values,
      whole.values)


def test_stratified_resamples_keep_the_classes_and_equal_the_loop():
  scores, labels = rare_positive_data(seed=5)
  interval = bootstrap.bootstrap_ci("auroc", scores, labels, resamples=200, seed=6,
                                    stratified=True)
  kept, skipped, lower, upper = loop_reference(metrics.roc_auc_score, scores, labels, 200, 6,
                                               0.95, stratified=True)
  assert interval.skipped == skipped == 0
  np.testing.assert_allclose(interval.values, kept, rtol=1e-12)
  assert (interval.lower, interval.upper) == pytest.approx((lower, upper), rel=1e-12)
  rows = next(bootstrap.resample_indices(labels, 1, 6, True))
  assert labels[rows].sum() == labels.sum() and len(rows) == len(labels)


def test_percentile_interval_covers_a_known_auroc_near_nominally():
  # Positives ~ N(1, 1), negatives ~ N(0, 1): AUROC = Phi(1 / sqrt(2)) ~ 0.760. 200 data sets
  # of 60 + 60: the coverage of a 90% interval is a binomial share with standard error
  # sqrt(0.9 * 0.1 / 200) ~ 0.021; percentile intervals of AUROC at this size are known to
  # run about a point short. 0.05 is ~2.4 standard errors; with the seeds fixed the test is
  # deterministic (the share here is 0.885).
  truth = stats.norm.cdf(1 / np.sqrt(2))
  rng = np.random.default_rng(12)
  labels = np.r_[np.ones(60), np.zeros(60)].astype(int)
  covered = []
  for data_set in range(200):
    scores = rng.normal(size=120) + labels
    interval = bootstrap.bootstrap_ci("auroc", scores, labels, resamples=200, seed=data_set,
                                      level=0.9, stratified=True)
    covered.append(interval.lower <= truth <= interval.upper)
  assert abs(np.mean(covered) - 0.9) <= 0.05, np.mean(covered)


def test_paired_difference_is_the_difference_on_the_same_resamples():
  rng = np.random.default_rng(8)
  labels = (rng.random(200) < 0.3).astype(int)
  model = labels + rng.normal(0, 0.8, 200)       # a better scorer
  rule = labels + rng.normal(0, 1.6, 200)        # a worse one (think -FEV1/FVC)
  options = dict(resamples=500, seed=9, stratified=True)
  paired = bootstrap.paired_bootstrap("auroc", model, rule, labels, **options)
  first = bootstrap.bootstrap_ci("auroc", model, labels, **options)
  second = bootstrap.bootstrap_ci("auroc", rule, labels, **options)
  np.testing.assert_allclose(paired.values, first.values - second.values, rtol=1e-12)
  assert paired.estimate == pytest.approx(first.estimate - second.estimate, rel=1e-12)
  assert (paired.first, paired.second) == (first.estimate, second.estimate)
  assert (paired.lower, paired.upper) == pytest.approx(
      tuple(np.quantile(first.values - second.values, [0.025, 0.975])), rel=1e-12)
  assert 0 < paired.lower < paired.estimate < paired.upper  # the model does beat the rule
  assert paired.p_value == pytest.approx(2 * np.mean(paired.values <= 0))
  same = bootstrap.paired_bootstrap("auprc", model, model, labels, **options)
  assert same.estimate == same.lower == same.upper == 0.0 and same.p_value == 1.0


def test_paired_difference_equals_a_loop_and_skips_one_class_resamples():
  scores, labels = rare_positive_data(seed=10)
  other = np.random.default_rng(0).random(len(labels))
  paired = bootstrap.paired_bootstrap("auroc", scores, other, labels, resamples=200, seed=1)
  kept_a, skipped, _, _ = loop_reference(metrics.roc_auc_score, scores, labels, 200, 1, 0.95)
  kept_b, _, _, _ = loop_reference(metrics.roc_auc_score, other, labels, 200, 1, 0.95)
  assert paired.skipped == skipped > 0
  np.testing.assert_allclose(paired.values, kept_a - kept_b, rtol=1e-12, atol=1e-15)


def test_compare_scorers_rows():
  rng = np.random.default_rng(13)
  labels = (rng.random(150) < 0.4).astype(int)
  scorers = {"model": labels + rng.normal(0, 1, 150), "fev1_fvc": labels + rng.normal(0, 2, 150)}
  rows = bootstrap.compare_scorers(scorers, labels, reference="fev1_fvc", resamples=200)
  assert [(r["scorer"], r["metric"]) for r in rows] == [
      ("model", "auroc"), ("model", "auprc"), ("fev1_fvc", "auroc"), ("fev1_fvc", "auprc")]
  paired = bootstrap.paired_bootstrap("auprc", scorers["model"], scorers["fev1_fvc"], labels,
                                      resamples=200)
  assert rows[1]["minus_reference"] == paired.estimate
  assert (rows[1]["difference_lower"], rows[1]["p_value"]) == (paired.lower, paired.p_value)
  assert "p_value" not in rows[2]
  assert rows[2]["estimate"] == metrics.roc_auc_score(labels, scorers["fev1_fvc"])


@pytest.mark.parametrize("call, message", [
    (lambda: bootstrap.bootstrap_ci("auroc", [0.1, 0.2], [0, 1, 1]), "one shape"),
    (lambda: bootstrap.bootstrap_ci("auroc", [0.1, np.nan], [0, 1]), "finite"),
    (lambda: bootstrap.bootstrap_ci("auroc", [0.1, 0.2], [0, 2]), "0/1"),
    (lambda: bootstrap.bootstrap_ci("auroc", [0.1, 0.2], [0, 1], resamples=0), "resamples"),
    (lambda: bootstrap.bootstrap_ci("auroc", [0.1, 0.2], [0, 1], level=95), "level"),
    (lambda: bootstrap.bootstrap_ci("brier", [0.1, 0.2], [0, 1]), "metric must be one of"),
    (lambda: bootstrap.bootstrap_ci("auroc", [0.1, 0.2], [1, 1], stratified=True),
     "both classes"),
    (lambda: bootstrap.paired_bootstrap("auroc", [0.1, 0.2], [0.3], [0, 1]), "one shape"),
    (lambda: bootstrap.compare_scorers({"a": [0.1, 0.2]}, [0, 1], reference="b"), "reference"),
])
def test_bad_inputs_are_named(call, message):
  with pytest.raises(ConfigError, match=message):
    call()
