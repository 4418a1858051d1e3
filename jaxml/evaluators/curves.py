"""The curves behind the ranking metrics: precision-recall and ROC points of scores [N] against
0/1 labels [N], point for point scikit-learn's `precision_recall_curve` and `roc_curve` (same
thresholds, same order, same end points), so a plot drawn here can be set beside one drawn
with scikit-learn. Host-only NumPy; the areas under them are `jaxml.evaluators.ranking`'s.

Thresholds are the distinct scores; at a threshold t an example is called positive when its
score is >= t, so tied scores enter together.
"""

from __future__ import annotations

import numpy as np

from jaxml.errors import ConfigError
from jaxml.evaluators import ranking


def _counts(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(false positives, true positives, threshold) at each distinct score, highest first."""
  scores, labels = ranking._validated(scores, labels, 1)  # pylint: disable=protected-access
  order = np.argsort(-scores, kind="stable")
  scores, labels = scores[order], labels[order]
  last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
  true_positives = np.cumsum(labels)[last_of_tie]
  false_positives = last_of_tie + 1 - true_positives
  return false_positives, true_positives, scores[last_of_tie]


def precision_recall_curve(scores, labels, *, drop_intermediate: bool = False):
  """(precision, recall, thresholds): precision and recall at each distinct score in ascending
  order, then the point (recall 0, precision 1) that closes the curve, so both are one longer
  than thresholds. `drop_intermediate` leaves out thresholds where the true positives do not
  change on either side (points inside a horizontal run). Labels need a positive."""
  false_positives, true_positives, thresholds = _counts(scores, labels)
  if true_positives[-1] == 0:
    raise ConfigError("a precision-recall curve needs at least one positive label")
  if drop_intermediate and len(true_positives) > 2:
    keep = np.r_[True, (np.diff(true_positives[:-1]) != 0) | (np.diff(true_positives[1:]) != 0),
                 True]
    false_positives, true_positives = false_positives[keep], true_positives[keep]
    thresholds = thresholds[keep]
  precision = true_positives / (true_positives + false_positives)
  recall = true_positives / true_positives[-1]
  return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def roc_curve(scores, labels, *, drop_intermediate: bool = True):
  """(false positive rate, true positive rate, thresholds), from the threshold inf (nothing
  called positive: the point (0, 0)) down through each distinct score. `drop_intermediate`
  leaves out points on a straight segment between their neighbours. Labels need both
  classes."""
  false_positives, true_positives, thresholds = _counts(scores, labels)
  if true_positives[-1] == 0 or false_positives[-1] == 0:
    raise ConfigError("a ROC curve needs both positive and negative labels")
  if drop_intermediate and len(true_positives) > 2:
    bends = (np.diff(false_positives, 2) != 0) | (np.diff(true_positives, 2) != 0)
    keep = np.r_[True, bends, True]
    false_positives, true_positives = false_positives[keep], true_positives[keep]
    thresholds = thresholds[keep]
  false_positives, true_positives = np.r_[0, false_positives], np.r_[0, true_positives]
  return (false_positives / false_positives[-1], true_positives / true_positives[-1],
          np.r_[np.inf, thresholds])
