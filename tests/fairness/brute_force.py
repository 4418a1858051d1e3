"""An independent brute-force reference for fair post-processing, in plain Python loops.

Every derived predictor of a group is a mixture of its threshold rules, so its operating
points are the convex hull of the group's ROC points; the useful ones lie on segments ("chords")
between two ROC points. The optimum of each constraint is attained where one group sits at a
ROC point (equal opportunity, demographic parity) or at a ROC point or a crossing of two
groups' chords (equalized odds), so enumerating those candidates finds it exactly, with no
hull and no linear programme.
"""

from __future__ import annotations

import itertools


def roc_points(scores, labels, weights):
  """[(fpr, tpr)] of "accept score >= u" for u = +inf and every distinct score."""
  positives = sum(w for y, w in zip(labels, weights) if y == 1)
  negatives = sum(w for y, w in zip(labels, weights) if y == 0)
  points = [(0.0, 0.0)]
  for u in sorted(set(scores), reverse=True):
    tp = sum(w for s, y, w in zip(scores, labels, weights) if s >= u and y == 1)
    fp = sum(w for s, y, w in zip(scores, labels, weights) if s >= u and y == 0)
    points.append((fp / negatives, tp / positives))
  return points, positives, negatives


def _chords(points):
  return list(itertools.combinations_with_replacement(points, 2))


def _best_x_at(points, value, quantity):
  """Smallest FPR of a hull point whose `quantity(x, y)` equals `value` (None if none)."""
  best = None
  for (x0, y0), (x1, y1) in _chords(points):
    q0, q1 = quantity(x0, y0), quantity(x1, y1)
    if min(q0, q1) - 1e-12 <= value <= max(q0, q1) + 1e-12:
      share = 0.0 if q1 == q0 else (value - q0) / (q1 - q0)
      x = x0 + share * (x1 - x0) if q1 != q0 else min(x0, x1)
      best = x if best is None else min(best, x)
  return best


def _hull_bounds(points, x):
  """(lowest, highest) y of the hull at x, or None outside it."""
  ys = []
  for (x0, y0), (x1, y1) in _chords(points):
    if min(x0, x1) - 1e-12 <= x <= max(x0, x1) + 1e-12:
      if x0 == x1:
        ys += [y0, y1]
      else:
        ys.append(y0 + (x - x0) / (x1 - x0) * (y1 - y0))
  return (min(ys), max(ys)) if ys else None


def best_utility(data, constraint, fp_cost=1.0, fn_cost=1.0):
  """The largest utility per unit weight: data = {group: (scores, labels, weights)}."""
  groups = {g: roc_points(*d) for g, d in data.items()}
  total = sum(p + n for _, p, n in groups.values())
  gain = lambda g, x, y: fn_cost * groups[g][1] * y - fp_cost * groups[g][2] * x
  if constraint == "none":
    return sum(max(gain(g, x, y) for x, y in groups[g][0]) for g in groups) / total
  if constraint == "group_blind":
    everyone = [v for d in data.values() for v in zip(*d)]
    best = 0.0  # accept nobody
    for u in {s for s, _, _ in everyone}:
      best = max(best, sum(fn_cost * w if y == 1 else -fp_cost * w
                           for s, y, w in everyone if s >= u))
    return best / total
  if constraint in ("equal_opportunity", "demographic_parity"):
    def quantity(g):
      p, n = groups[g][1], groups[g][2]
      return (lambda x, y: y) if constraint == "equal_opportunity" else (
          lambda x, y: (p * y + n * x) / (p + n))
    candidates = {quantity(g)(x, y) for g in groups for x, y in groups[g][0]}
    best = None
    for value in candidates:
      utility = 0.0
      for g in groups:
        x = _best_x_at(groups[g][0], value, quantity(g))
        if x is None:
          break
        p, n = groups[g][1], groups[g][2]
        y = value if constraint == "equal_opportunity" else (value * (p + n) - n * x) / p
        utility += gain(g, x, y)
      else:
        best = utility if best is None else max(best, utility)
    return best / total
  if constraint == "equalized_odds":
    candidates = [pt for g in groups for pt in groups[g][0]]
    for a, b in itertools.combinations(groups, 2):
      for (p0, p1), (q0, q1) in itertools.product(_chords(groups[a][0]), _chords(groups[b][0])):
        crossing = _intersect(p0, p1, q0, q1)
        if crossing is not None:
          candidates.append(crossing)
    best = None
    for x, y in candidates:
      bounds = [_hull_bounds(groups[g][0], x) for g in groups]
      if all(b is not None and b[0] - 1e-9 <= y <= b[1] + 1e-9 for b in bounds):
        utility = sum(gain(g, x, y) for g in groups)
        best = utility if best is None else max(best, utility)
    return best / total
  raise ValueError(constraint)


def _intersect(p0, p1, q0, q1):
  """The crossing point of two segments, or None (parallel or apart)."""
  (x1, y1), (x2, y2), (x3, y3), (x4, y4) = p0, p1, q0, q1
  det = (x1 - x2) * (y3 - y4) - (y1 - y2) * (x3 - x4)
  if abs(det) < 1e-15:
    return None
  t = ((x1 - x3) * (y3 - y4) - (y1 - y3) * (x3 - x4)) / det
  u = ((x1 - x3) * (y1 - y2) - (y1 - y3) * (x1 - x2)) / det
  if -1e-12 <= t <= 1 + 1e-12 and -1e-12 <= u <= 1 + 1e-12:
    return (x1 + t * (x2 - x1), y1 + t * (y2 - y1))
  return None
