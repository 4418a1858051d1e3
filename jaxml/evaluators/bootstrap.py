"""Bootstrap confidence intervals for a metric of (scores, labels), and for the difference
between two scorers of the same individuals (paired: "the model beats FEV1/FVC" is a claim
about one set of people, so both scorers are scored on each resample's same rows).

The scheme, so that a run can be repeated and checked by a plain loop:
  * `resamples` index vectors, the b-th being `rng.integers(0, N, N)` from
    `np.random.default_rng(seed)` drawn in order b = 0, 1, ... (with `stratified=True`, the
    positives' rows `rng.integers(0, P, P)` and then the negatives' `rng.integers(0, N - P,
    N - P)`, which keeps the class counts and never loses a class);
  * a resample whose labels hold one class is skipped, not redrawn (so the set of resamples is
    a fixed function of the seed), and counted in `skipped`; so is one whose metric is NaN;
  * the interval is the percentile one: `np.quantile` (linear) of the kept resamples' values at
    (1 - level) / 2 and (1 + level) / 2.
"auroc" and "auprc" are computed for a chunk of resamples at once (`ranking.per_label` over a
[N, resamples] matrix, one sort); any other metric is a callable `metric(scores, labels) ->
float` called once per resample. Scores rank positives high: pass -FEV1/FVC, not FEV1/FVC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from jaxml.errors import ConfigError
from jaxml.evaluators import ranking

# Elements of a [N, chunk] resample matrix sorted at once by the vectorised metrics.
CHUNK_ELEMENTS = 2_000_000
_VECTORISED = {"auroc": "auroc", "auprc": "auprc"}
Metric = str | Callable[[np.ndarray, np.ndarray], float]


@dataclasses.dataclass(frozen=True)
class Interval:
  """A metric on the whole sample (`estimate`) with its percentile interval at `level`, the
  number of resamples drawn and skipped, and the kept resamples' values."""
  estimate: float
  lower: float
  upper: float
  level: float
  resamples: int
  skipped: int
  values: np.ndarray


@dataclasses.dataclass(frozen=True)
class PairedDifference(Interval):
  """`estimate` = metric(first) - metric(second) on the whole sample, `values` the difference
  on each kept resample; `p_value` is two-sided: twice the smaller share of kept resamples on
  either side of 0 (at or beyond it), at most 1."""
  first: float = float("nan")
  second: float = float("nan")
  p_value: float = float("nan")


def _check(resamples: int, level: float):
  if resamples < 1:
    raise ConfigError(f"resamples must be >= 1, got {resamples}")
  if not 0 < level < 1:
    raise ConfigError(f"level must be in (0, 1), got {level}")


def resample_indices(labels: np.ndarray, resamples: int, seed: int, stratified: bool):
  """The resamples' row indices, one [N] vector at a time, in the module's stated order."""
  rng = np.random.default_rng(seed)
  n = len(labels)
  positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
  for _ in range(resamples):
    if stratified:
      yield np.concatenate([positives[rng.integers(0, len(positives), len(positives))],
                            negatives[rng.integers(0, len(negatives), len(negatives))]])
    else:
      yield rng.integers(0, n, n)


def _metric_fn(metric: Metric) -> Callable:
  if callable(metric):
    return metric
  if metric not in _VECTORISED:
    raise ConfigError(f"metric must be one of {sorted(_VECTORISED)} or a callable, got "
                      f"{metric!r}")
  return {"auroc": ranking.auroc, "auprc": ranking.average_precision}[metric]


def _values(metric: Metric, score_sets: Sequence[np.ndarray], labels: np.ndarray,
            resamples: int, seed: int, stratified: bool) -> np.ndarray:
  """[resamples, len(score_sets)] metric values, NaN where the resample is skipped. AUPRC is
  defined (1.0) on an all-positive resample; it is skipped anyway, as every metric's one-class
  resamples are, so which resamples are kept does not depend on the metric."""
  out = np.full((resamples, len(score_sets)), np.nan)
  indices = resample_indices(labels, resamples, seed, stratified)
  if callable(metric):
    for b, rows in enumerate(indices):
      if 0 < labels[rows].sum() < len(rows):
        out[b] = [metric(scores[rows], labels[rows]) for scores in score_sets]
    return out
  chunk = max(1, CHUNK_ELEMENTS // len(labels))
  for begin in range(0, resamples, chunk):
    rows = np.stack([next(indices) for _ in range(min(chunk, resamples - begin))], axis=1)
    positives = labels[rows].sum(axis=0)
    both_classes = (positives > 0) & (positives < len(labels))
    for s, scores in enumerate(score_sets):
      table = ranking.per_label(scores[rows], labels[rows])
      values = np.array([row[_VECTORISED[metric]] for row in table])
      out[begin:begin + rows.shape[1], s] = np.where(both_classes, values, np.nan)
  return out


def _prepared(scores_list, labels, stratified):
  checked = [ranking._validated(s, labels, 1) for s in scores_list]  # pylint: disable=protected-access
  labels = checked[0][1]
  if stratified and (labels.all() or not labels.any()):
    raise ConfigError("a stratified bootstrap needs both classes in labels")
  return [c[0] for c in checked], labels


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
  if len(values) == 0:
    return float("nan"), float("nan")
  lower, upper = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
  return float(lower), float(upper)


def bootstrap_ci(metric: Metric, scores, labels, *, resamples: int = 2000, seed: int = 0,
                 level: float = 0.95, stratified: bool = False) -> Interval:
  """The percentile bootstrap interval of metric(scores [N], labels [N] 0/1); see the module
  docstring for the resampling scheme and which resamples are skipped."""
  _check(resamples, level)
  fn = _metric_fn(metric)
  (scores,), labels = _prepared([scores], labels, stratified)
  values = _values(metric, [scores], labels, resamples, seed, stratified)[:, 0]
  kept = values[np.isfinite(values)]
  return Interval(float(fn(scores, labels)), *_percentiles(kept, level), level, resamples,
                  resamples - len(kept), kept)


def paired_bootstrap(metric: Metric, first_scores, second_scores, labels, *,
                     resamples: int = 2000, seed: int = 0, level: float = 0.95,
                     stratified: bool = False) -> PairedDifference:
  """The percentile interval of metric(first) - metric(second), both scorers of the same N
  individuals scored on each resample's same rows. A resample is skipped where either metric
  is undefined."""
  _check(resamples, level)
  fn = _metric_fn(metric)
  (first, second), labels = _prepared([first_scores, second_scores], labels, stratified)
  both = _values(metric, [first, second], labels, resamples, seed, stratified)
  difference = both[:, 0] - both[:, 1]
  kept = difference[np.isfinite(difference)]
  first_value, second_value = float(fn(first, labels)), float(fn(second, labels))
  if len(kept):
    p_value = min(1.0, 2 * min(np.mean(kept <= 0), np.mean(kept >= 0)))
  else:
    p_value = float("nan")
  return PairedDifference(first_value - second_value, *_percentiles(kept, level), level,
                          resamples, resamples - len(kept), kept, first=first_value,
                          second=second_value, p_value=float(p_value))


def compare_scorers(scorers: Mapping[str, np.ndarray], labels, *, reference: str,
                    metrics: Sequence[str] = ("auroc", "auprc"), resamples: int = 2000,
                    seed: int = 0, level: float = 0.95,
                    stratified: bool = False) -> list[dict]:
  """One row per (scorer, metric): the estimate with its interval and, for every scorer but
  `reference`, the paired difference from the reference with its interval and p-value. All
  use one seed, so every scorer is scored on the same resamples."""
  if reference not in scorers:
    raise ConfigError(f"reference {reference!r} is not one of the scorers {list(scorers)}")
  rows = []
  for name, scores in scorers.items():
    for metric in metrics:
      options = dict(resamples=resamples, seed=seed, level=level, stratified=stratified)
      interval = bootstrap_ci(metric, scores, labels, **options)
      row = {"scorer": name, "metric": metric, "estimate": interval.estimate,
             "lower": interval.lower, "upper": interval.upper, "skipped": interval.skipped}
      if name != reference:
        paired = paired_bootstrap(metric, scores, scorers[reference], labels, **options)
        row.update({"minus_reference": paired.estimate, "difference_lower": paired.lower,
                    "difference_upper": paired.upper, "p_value": paired.p_value})
      rows.append(row)
  return rows
