"""Ranking metrics of gathered scores against 0/1 labels: AUROC and average precision (AUPRC),
for one label and for many at once (multi-label prediction, e.g. 138 odour descriptors).

They are not sums over batches (each needs the whole split's ordering), so they are computed
once over a split after its predictions are gathered (`jaxml.training.evaluate`), in NumPy on
the host. The definitions are scikit-learn's, so numbers can be set beside published ones:

  auroc              the Mann-Whitney statistic: the chance that a random positive scores above
                     a random negative, ties counting one half (average ranks), exact, no curve
                     interpolation; `sklearn.metrics.roc_auc_score`.
  average_precision  sum over distinct score thresholds t (highest first) of
                     (recall(t) - recall(previous t)) * precision(t): a step function, tied scores
                     entering together; `sklearn.metrics.average_precision_score`, not the
                     trapezoidal area (which is optimistic).

A label with one class only in the split has no AUROC (and one with no positive no AUPRC): the
value is NaN, and macro means skip such labels and say how many labels they did score, so a
rare descriptor missing from a small split neither sinks nor silently inflates the mean.
Every metric is computed for all labels at once from one [N, L] sort.
"""

from __future__ import annotations

import numpy as np

from jaxml.errors import ConfigError


def _validated(scores, labels, ndim: int) -> tuple[np.ndarray, np.ndarray]:
  """(scores, labels) as float64 arrays of `ndim` dims, or a ConfigError naming the problem."""
  scores, labels = np.asarray(scores), np.asarray(labels)
  if scores.shape != labels.shape:
    raise ConfigError(f"scores {scores.shape} and labels {labels.shape} must have one shape")
  if scores.ndim != ndim:
    raise ConfigError(f"scores and labels must be {ndim}-D, got shape {scores.shape}")
  if scores.shape[0] == 0:
    raise ConfigError("no examples to rank: scores and labels are empty")
  if not (np.issubdtype(scores.dtype, np.number) or scores.dtype == bool):
    raise ConfigError(f"scores must be numbers, got dtype {scores.dtype}")
  scores = scores.astype(np.float64)
  if not np.all(np.isfinite(scores)):
    raise ConfigError(f"scores must be finite: {int(np.sum(~np.isfinite(scores)))} are NaN "
                      "or infinite")
  if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
    raise ConfigError(f"labels must be 0/1, got dtype {labels.dtype}")
  labels = labels.astype(np.float64)
  if not np.all((labels == 0) | (labels == 1)):
    bad = np.unique(labels[(labels != 0) & (labels != 1)])[:5]
    raise ConfigError(f"labels must be 0/1, got values such as {bad.tolist()}")
  return scores, labels


def _ranked(scores: np.ndarray, labels: np.ndarray):
  """Each column sorted by descending score: (labels in that order, first and last position of
  each position's tie group) [N, L]. Tie groups are what make both metrics exact under ties."""
  order = np.argsort(-scores, axis=0, kind="stable")
  ordered = np.take_along_axis(scores, order, axis=0)
  n = len(ordered)
  position = np.arange(n)[:, None]
  starts = np.ones(ordered.shape, bool)
  starts[1:] = ordered[1:] != ordered[:-1]
  ends = np.ones(ordered.shape, bool)
  ends[:-1] = starts[1:]
  first = np.maximum.accumulate(np.where(starts, position, 0), axis=0)
  last = np.minimum.accumulate(np.where(ends, position, n)[::-1], axis=0)[::-1]
  return np.take_along_axis(labels, order, axis=0), first, last


def _columns(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(AUROC [L], average precision [L]) of each column of validated [N, L] arrays."""
  ranked, first, last = _ranked(scores, labels)
  n = len(ranked)
  positives = ranked.sum(axis=0)
  negatives = n - positives
  # Ascending average rank (1-based) of descending positions first..last: n - (first + last) / 2.
  rank_sum = np.sum(ranked * (n - (first + last) / 2), axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    auroc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    # Each positive adds 1/P recall at its tie group's threshold, where the precision is the
    # positives above or at that threshold over all examples there.
    precision_at = np.cumsum(ranked, axis=0) / np.arange(1, n + 1)[:, None]
    precision = np.take_along_axis(precision_at, last, axis=0)
    average_precision = np.sum(ranked * precision, axis=0) / positives
  auroc[(positives == 0) | (negatives == 0)] = np.nan
  average_precision[positives == 0] = np.nan
  return auroc, average_precision


def auroc(scores, labels) -> float:
  """Area under the ROC curve of scores [N] for 0/1 labels [N] (sklearn's roc_auc_score); NaN
  when the labels hold one class only."""
  scores, labels = _validated(scores, labels, 1)
  return float(_columns(scores[:, None], labels[:, None])[0][0])


def average_precision(scores, labels) -> float:
  """Average precision (AUPRC) of scores [N] for 0/1 labels [N] (sklearn's
  average_precision_score); NaN when there is no positive."""
  scores, labels = _validated(scores, labels, 1)
  return float(_columns(scores[:, None], labels[:, None])[1][0])


def _label_names(names, count: int) -> list[str]:
  if len(names) and len(names) != count:
    raise ConfigError(f"{len(names)} label names for {count} labels")
  return [str(n) for n in names] if len(names) else [str(i) for i in range(count)]


def per_label(scores, labels, names=()) -> list[dict]:
  """One row per label of scores/labels [N, L]: {"name", "positives", "auroc", "auprc"} (NaN
  where undefined, see the module docstring); `names` default to the label indices."""
  scores, labels = _validated(scores, labels, 2)
  names = _label_names(names, labels.shape[1])
  aurocs, auprcs = _columns(scores, labels)
  return [{"name": name, "positives": int(p), "auroc": float(a), "auprc": float(b)}
          for name, p, a, b in zip(names, labels.sum(axis=0), aurocs, auprcs)]


def multilabel_summary(scores, labels, names=()) -> dict[str, float]:
  """The split's summary of scores/labels [N, L]: `auroc/macro` and `auprc/macro`, unweighted
  means over the labels with both classes in the split (NaN if there is none), their number
  `labels_scored`, and `auroc/micro`, `auprc/micro` over the flattened [N * L] matrix (every
  (example, label) pair one decision: dominated by the frequent labels). `names` are only
  checked against L here; `per_label` gives the per-label table."""
  scores, labels = _validated(scores, labels, 2)
  _label_names(names, labels.shape[1])
  aurocs, auprcs = _columns(scores, labels)
  scored = np.isfinite(aurocs)
  micro_auroc, micro_auprc = _columns(scores.reshape(-1, 1), labels.reshape(-1, 1))
  mean = lambda values: float(np.mean(values[scored])) if scored.any() else float("nan")
  return {"auroc/macro": mean(aurocs), "auprc/macro": mean(auprcs),
          "auroc/micro": float(micro_auroc[0]), "auprc/micro": float(micro_auprc[0]),
          "labels_scored": float(np.sum(scored))}
