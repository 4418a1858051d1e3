"""Per-group ROC curves of a score, and their upper convex hulls (host NumPy, no JAX).

A group's ROC curve here is the set of deterministic rules "accept when score >= u", one per
distinct score u of the group (ties move together), plus "accept nobody" (u = +inf) at
(0, 0). Point k has FPR and TPR: the weighted share of the group's negatives and positives
with score >= thresholds[k]. Randomising between two rules reaches every point of the segment
between them, so the rules a derived predictor can realise in a group are exactly the convex
hull of its ROC points; the useful ones lie on its upper boundary (`upper_hull`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Vectorised pruning passes before the exact sequential scan; 20-ish suffice for 10^6
# continuous scores, the scan guarantees the result whatever the shape.
_PRUNE_PASSES = 64


@dataclasses.dataclass(frozen=True)
class GroupRoc:
  """One group's ROC points; point k is the rule "accept score >= thresholds[k]".

  thresholds: [m + 1] float64, strictly decreasing, thresholds[0] = +inf (accept nobody).
  fpr, tpr:   [m + 1] float64, non-decreasing, from (0, 0) to exactly (1, 1).
  positives, negatives: total weight of the group's labels 1 and 0.
  """

  thresholds: np.ndarray
  fpr: np.ndarray
  tpr: np.ndarray
  positives: float
  negatives: float


def roc_curves(scores, labels, groups, weights=None) -> dict[int, GroupRoc]:
  """{group code: GroupRoc} for every group present, in increasing code order. Inputs are
  1-D arrays of one length (labels 0/1); checked by the caller (`thresholds.check_inputs`)."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels)
  groups = np.asarray(groups)
  weights = np.ones(len(scores)) if weights is None else np.asarray(weights, np.float64)
  order = np.lexsort((-scores, groups))
  scores, groups = scores[order], groups[order]
  positive = np.where(labels[order] == 1, weights[order], 0.0)
  negative = np.where(labels[order] == 1, 0.0, weights[order])
  starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
  ends = np.r_[starts[1:], len(scores)]
  curves = {}
  for start, end in zip(starts, ends):
    s = scores[start:end]
    # The last example of each run of equal scores closes that score's rule.
    closes = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    true_pos = np.cumsum(positive[start:end])[closes]
    false_pos = np.cumsum(negative[start:end])[closes]
    total_pos, total_neg = true_pos[-1], false_pos[-1]
    tpr = np.r_[0.0, true_pos / total_pos if total_pos > 0 else np.zeros(len(closes))]
    fpr = np.r_[0.0, false_pos / total_neg if total_neg > 0 else np.zeros(len(closes))]
    tpr[-1] = fpr[-1] = 1.0  # exactly, whatever the rounding of the sums
    curves[int(groups[start])] = GroupRoc(np.r_[np.inf, s[closes]], fpr, tpr,
                                          float(total_pos), float(total_neg))
  return curves


def _cross(x, y, a, b, c):
  """Positive when b lies strictly below the line from a to c (x increasing), 0 on it."""
  return (x[b] - x[a]) * (y[c] - y[a]) - (y[b] - y[a]) * (x[c] - x[a])


def upper_hull(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
  """Indices of the vertices of the upper convex hull of the points (fpr, tpr), which are
  sorted by fpr (ROC points are): strictly concave, from the highest point at the smallest
  fpr to the last point. Collinear and duplicate points are not vertices."""
  x, y = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
  index = np.arange(len(x))
  # A point strictly below the chord of its neighbours is below the hull, whatever else is
  # removed: drop all such points at once, repeatedly (fast for many points).
  for _ in range(_PRUNE_PASSES):
    if len(index) < 3:
      break
    keep = np.ones(len(index), bool)
    keep[1:-1] = _cross(x, y, index[:-2], index[1:-1], index[2:]) < 0
    if keep.all():
      break
    index = index[keep]
  hull: list[int] = []  # Andrew's monotone chain over what is left: exact in any case
  for i in index:
    while len(hull) >= 2 and _cross(x, y, hull[-2], hull[-1], i) >= 0:
      hull.pop()
    hull.append(int(i))
  # Several points at the smallest fpr: only the highest is on the upper boundary.
  while len(hull) >= 2 and x[hull[1]] == x[hull[0]]:
    hull.pop(0)
  return np.asarray(hull, np.int64)
