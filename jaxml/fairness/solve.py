"""The optimal operating point (FPR, TPR) of every group under a fairness constraint.

Each group g can realise any point under its ROC hull (`roc.upper_hull`), above the diagonal
(randomising with a score-blind coin). Choosing point (x_g, y_g) in every group earns

    utility = sum_g  fn_cost * P_g * y_g  -  fp_cost * N_g * x_g

(P_g, N_g: the group's weight of positives and negatives): a true positive gains fn_cost (the
error it avoids), a false positive loses fp_cost. The constraints tie the groups' points:

  none                 every group alone at its best hull vertex
  equal_opportunity    equal TPRs
  equalized_odds       equal TPRs and equal FPRs
  demographic_parity   equal selection rates (P_g y_g + N_g x_g) / (P_g + N_g)

With tolerance 0 the optimum is found in closed form along the hulls: the utility of each
group, as a function of the shared quantity, is concave and piecewise linear, so the best
value is one of finitely many breakpoints (hull vertices, and for equalized odds the points
where two groups' hulls cross), all evaluated at once. With tolerance eps > 0 the points may
differ by up to eps (largest minus smallest), and the problem is solved as a linear programme
over the hull segments (HiGHS). Host NumPy/SciPy: this is fitting, not the jitted path.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy import optimize

CONSTRAINTS = ("none", "group_blind", "equal_opportunity", "equalized_odds",
               "demographic_parity")


@dataclasses.dataclass(frozen=True)
class Hull:
  """A group's upper ROC hull, from its highest point at FPR 0 to (1, 1).

  fpr, tpr: [k] the vertices, fpr strictly increasing (k >= 2).
  thresholds: [k] the score threshold of each vertex's rule ("accept score >= t").
  """

  fpr: np.ndarray
  tpr: np.ndarray
  thresholds: np.ndarray
  positives: float
  negatives: float

  def tpr_at(self, fpr):
    """The hull's TPR at `fpr` (the best TPR any derived rule reaches there)."""
    return np.interp(fpr, self.fpr, self.tpr)

  def frontier(self) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the upper-left boundary from (0, 0): the hull, with the segment from
    (0, 0) up to its first vertex when that is above (0, 0). Along it both rates grow and
    the selection rate grows strictly."""
    if self.tpr[0] > 0:
      return np.r_[0.0, self.fpr], np.r_[0.0, self.tpr]
    return self.fpr, self.tpr


def _utility(hulls, fn_cost, fp_cost, fpr, tpr):
  """Utility of points fpr[g, ...], tpr[g, ...] summed over groups."""
  positives = np.array([h.positives for h in hulls]).reshape((-1,) + (1,) * (fpr.ndim - 1))
  negatives = np.array([h.negatives for h in hulls]).reshape(positives.shape)
  return np.sum(fn_cost * positives * tpr - fp_cost * negatives * fpr, axis=0)


def _best(hulls, fn_cost, fp_cost, fpr, tpr):
  """The candidate column (over groups) of largest utility: ([G] fpr, [G] tpr)."""
  best = int(np.argmax(_utility(hulls, fn_cost, fp_cost, fpr, tpr)))
  return fpr[:, best], tpr[:, best]


def closed_form(hulls, constraint, fn_cost, fp_cost):
  """([G] fpr, [G] tpr): the exact optimum with tolerance 0."""
  if constraint == "none":
    points = [max(zip(h.fpr, h.tpr),
                  key=lambda p, h=h: fn_cost * h.positives * p[1] - fp_cost * h.negatives * p[0])
              for h in hulls]
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])
  if constraint == "equal_opportunity":
    tpr = np.unique(np.concatenate([h.tpr for h in hulls] + [[0.0]]))
    fpr = np.stack([_fpr_for_tpr(h, tpr) for h in hulls])
    return _best(hulls, fn_cost, fp_cost, fpr, np.broadcast_to(tpr, fpr.shape))
  if constraint == "demographic_parity":
    rates = np.unique(np.concatenate([_selection(h, *h.frontier()) for h in hulls]))
    points = [_point_at_selection(h, rates) for h in hulls]
    return _best(hulls, fn_cost, fp_cost, np.stack([p[0] for p in points]),
                 np.stack([p[1] for p in points]))
  if constraint == "equalized_odds":
    fpr = _envelope_breakpoints(hulls)
    tpr = np.min([h.tpr_at(fpr) for h in hulls], axis=0)
    shape = (len(hulls), len(fpr))
    return _best(hulls, fn_cost, fp_cost, np.broadcast_to(fpr, shape),
                 np.broadcast_to(tpr, shape))
  raise ValueError(f"no closed form for constraint {constraint!r}")


def _fpr_for_tpr(hull, tpr):
  """Smallest FPR reaching each TPR: the frontier read backwards (TPR grows strictly along it
  up to its first vertex at TPR 1)."""
  fpr, rates = hull.frontier()
  top = int(np.argmax(rates >= rates[-1]))
  return np.interp(tpr, rates[:top + 1], fpr[:top + 1])


def _selection(hull, fpr, tpr):
  return (hull.positives * tpr + hull.negatives * fpr) / (hull.positives + hull.negatives)


def _point_at_selection(hull, rates):
  """(fpr, tpr) on the frontier where the selection rate is each of `rates`."""
  fpr, tpr = hull.frontier()
  along = _selection(hull, fpr, tpr)
  return np.interp(rates, along, fpr), np.interp(rates, along, tpr)


def _envelope_breakpoints(hulls):
  """Every FPR where min_g hull_g can bend: each hull's vertices and each crossing of two
  hulls (both are linear between consecutive points of the merged grid)."""
  grid = np.unique(np.concatenate([h.fpr for h in hulls] + [[0.0, 1.0]]))
  values = np.stack([h.tpr_at(grid) for h in hulls])
  crossings = []
  for a, b in itertools.combinations(range(len(hulls)), 2):
    diff = values[a] - values[b]
    cross = np.flatnonzero(diff[:-1] * diff[1:] < 0)
    share = diff[cross] / (diff[cross] - diff[cross + 1])
    crossings.append(grid[cross] + share * (grid[cross + 1] - grid[cross]))
  return np.unique(np.concatenate([grid, *crossings]))


def linear_programme(hulls, constraint, fn_cost, fp_cost, tolerance):
  """([G] fpr, [G] tpr): the optimum with each constrained quantity's spread over groups
  (largest minus smallest) at most `tolerance`, by linear programming over the variables
  (x_0..x_{G-1}, y_0..y_{G-1})."""
  count = len(hulls)
  positives = np.array([h.positives for h in hulls])
  negatives = np.array([h.negatives for h in hulls])
  cost = np.r_[fp_cost * negatives, -fn_cost * positives]
  rows, bounds = [], []
  for g, hull in enumerate(hulls):
    # y_g <= every hull segment's line (the hull is concave), and y_g >= x_g.
    slope = np.diff(hull.tpr) / np.diff(hull.fpr)
    intercept = hull.tpr[:-1] - slope * hull.fpr[:-1]
    for m, c in zip(slope, intercept):
      row = np.zeros(2 * count)
      row[g], row[count + g] = -m, 1.0
      rows.append(row)
      bounds.append(c)
    row = np.zeros(2 * count)
    row[g], row[count + g] = 1.0, -1.0
    rows.append(row)
    bounds.append(0.0)
  for a, b in itertools.permutations(range(count), 2):
    for coefficients in _constrained(constraint, a, b, count, positives, negatives):
      rows.append(coefficients)
      bounds.append(tolerance)
  result = optimize.linprog(cost, A_ub=np.array(rows), b_ub=np.array(bounds),
                            bounds=[(0.0, 1.0)] * (2 * count), method="highs",
                            options={"primal_feasibility_tolerance": 1e-10,
                                     "dual_feasibility_tolerance": 1e-10})
  if not result.success:  # the diagonal is always feasible: only a solver failure gets here
    raise RuntimeError(f"fairness LP failed: {result.message}")
  fpr, tpr = np.clip(result.x[:count], 0, 1), np.clip(result.x[count:], 0, 1)
  tpr = np.minimum(tpr, [h.tpr_at(x) for h, x in zip(hulls, fpr)])
  return fpr, np.maximum(tpr, fpr)


def _constrained(constraint, a, b, count, positives, negatives):
  """Rows r with r . z = (quantity of group a) - (quantity of group b)."""
  def diff(fpr_weights, tpr_weights):
    row = np.zeros(2 * count)
    row[a], row[b] = fpr_weights[a], -fpr_weights[b]
    row[count + a], row[count + b] = tpr_weights[a], -tpr_weights[b]
    return row
  ones, zeros = np.ones(count), np.zeros(count)
  if constraint == "equal_opportunity":
    return [diff(zeros, ones)]
  if constraint == "equalized_odds":
    return [diff(zeros, ones), diff(ones, zeros)]
  if constraint == "demographic_parity":
    total = positives + negatives
    return [diff(negatives / total, positives / total)]
  return []
