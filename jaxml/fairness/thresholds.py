"""Post-processing any score into a fair classifier: `fit_thresholds` and its predictor.

    derived = fit_thresholds(scores, labels, groups, constraint="equal_opportunity")
    derived.predict(test_scores, test_groups, key)      # 0/1, jit-able
    derived.acceptance_probability(test_scores, test_groups)

Hardt, Price & Srebro, "Equality of Opportunity in Supervised Learning" (2016): the best
derived predictor under a constraint on group-conditional rates uses, in each group, a rule
on the score alone, randomised where needed. Here every group's rule accepts with one of
three probabilities by where the score falls:

    score <  lower            probability levels[g, 0]
    lower <= score < upper    probability levels[g, 1]   (the randomised band)
    score >= upper            probability levels[g, 2]

which covers a single threshold (lower == upper), a threshold randomised on ties, two hull
vertices mixed (the band between their thresholds) and a score-blind coin mixed in
(equalized odds below a group's hull). The rules are exact: on the fitting data the groups'
expected rates meet the constraint to floating point, and the utility is the largest any
derived predictor attains (see `solve`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.errors import ConfigError
from jaxml.fairness import roc, solve
from jaxml.fairness.solve import CONSTRAINTS


@dataclasses.dataclass(frozen=True)
class DerivedPredictor:
  """Per-group randomised threshold rules, and what they achieve on the fitting data.

  groups:  [G] int64, the group codes seen at fit time, increasing.
  lower, upper: [G] float64 score thresholds (+inf: never reached, -inf: always).
  levels:  [G, 3] acceptance probability below lower, in [lower, upper), at or above upper.
  fpr, tpr, selection_rate: [G] expected rates on the fitting data.
  utility: (fn_cost * true positives - fp_cost * false positives) / total weight, expected,
    on the fitting data: what the rule maximises under the constraint.
  accuracy: expected weighted accuracy on the fitting data.
  """

  constraint: str
  tolerance: float
  fp_cost: float
  fn_cost: float
  groups: np.ndarray
  lower: np.ndarray
  upper: np.ndarray
  levels: np.ndarray
  fpr: np.ndarray
  tpr: np.ndarray
  selection_rate: np.ndarray
  utility: float
  accuracy: float

  def acceptance_probability(self, scores, groups) -> jax.Array:
    """[N] probability of a positive decision for each (score, group); jit-able. With
    concrete inputs a group not seen at fit time or a non-finite score is a ConfigError;
    traced under jit, such an example gets probability NaN."""
    if not isinstance(groups, jax.core.Tracer):
      unseen = np.setdiff1d(np.unique(np.asarray(groups)), self.groups)
      if len(unseen):
        raise ConfigError(f"groups {unseen.tolist()} were not seen when the thresholds were "
                          f"fitted (seen: {self.groups.tolist()})")
    if not isinstance(scores, jax.core.Tracer):
      _check_finite(np.asarray(scores), "scores")
    scores, groups = jnp.asarray(scores), jnp.asarray(groups)
    known = jnp.asarray(self.groups)
    index = jnp.clip(jnp.searchsorted(known, groups), 0, len(self.groups) - 1)
    lower = jnp.asarray(self.lower, scores.dtype)[index]
    upper = jnp.asarray(self.upper, scores.dtype)[index]
    levels = jnp.asarray(self.levels)[index]  # float64 where jax_enable_x64 is on
    band = (scores >= lower).astype(jnp.int32) + (scores >= upper).astype(jnp.int32)
    probability = jnp.take_along_axis(levels, band[:, None], axis=1)[:, 0]
    return jnp.where(known[index] == groups, probability, jnp.nan)

  def predict(self, scores, groups, key) -> jax.Array:
    """[N] int32 decisions (1 = positive), one independent coin per example from `key`."""
    probability = self.acceptance_probability(scores, groups)
    return (jax.random.uniform(key, probability.shape) < probability).astype(jnp.int32)

  def rules(self) -> list[dict]:
    """One plain dict per group (for tables and JSON): thresholds, probabilities, rates."""
    return [{"group": int(g), "lower": float(lo), "upper": float(up),
             "p_below": float(p[0]), "p_band": float(p[1]), "p_above": float(p[2]),
             "fpr": float(f), "tpr": float(t), "selection_rate": float(s)}
            for g, lo, up, p, f, t, s in zip(self.groups, self.lower, self.upper,
                                              self.levels, self.fpr, self.tpr,
                                              self.selection_rate)]


def _check_finite(values: np.ndarray, name: str) -> None:
  if np.issubdtype(values.dtype, np.number) and not np.isfinite(values).all():
    bad = np.flatnonzero(~np.isfinite(values))
    raise ConfigError(f"{name}: {len(bad)} value(s) are not finite (first at index {bad[0]}: "
                      f"{values.ravel()[bad[0]]})")


def check_inputs(scores, labels, groups, weights, *, constraint, fp_cost, fn_cost, tolerance):
  """The inputs as NumPy arrays, or one ConfigError naming the field or group at fault."""
  if constraint not in CONSTRAINTS:
    raise ConfigError(f"constraint={constraint!r}: choose one of {', '.join(CONSTRAINTS)}")
  for name, cost in (("fp_cost", fp_cost), ("fn_cost", fn_cost)):
    if not (np.isfinite(cost) and cost > 0):
      raise ConfigError(f"{name}={cost}: costs must be finite and > 0, so that the cost ratio "
                        "fp_cost / (fp_cost + fn_cost) lies in (0, 1)")
  if not (np.isfinite(tolerance) and tolerance >= 0):
    raise ConfigError(f"tolerance={tolerance} must be finite and >= 0")
  if tolerance > 0 and constraint in ("none", "group_blind"):
    raise ConfigError(f"tolerance={tolerance} relaxes a fairness constraint; "
                      f"constraint={constraint!r} has none")
  arrays = {"scores": np.asarray(scores), "labels": np.asarray(labels),
            "groups": np.asarray(groups)}
  if weights is not None:
    arrays["weights"] = np.asarray(weights)
  for name, values in arrays.items():
    if values.ndim != 1:
      raise ConfigError(f"{name} must be 1-D, got shape {values.shape}")
    if len(values) != len(arrays["scores"]):
      raise ConfigError(f"{name} has {len(values)} entries but scores has "
                        f"{len(arrays['scores'])}")
    if not np.issubdtype(values.dtype, np.number) and values.dtype != bool:
      raise ConfigError(f"{name} must be numeric, got dtype {values.dtype}")
    _check_finite(values, name)
  if not len(arrays["scores"]):
    raise ConfigError("scores is empty: nothing to fit thresholds on")
  if not np.isin(arrays["labels"], (0, 1)).all():
    raise ConfigError(f"labels must be 0 or 1, got values "
                      f"{np.setdiff1d(arrays['labels'], (0, 1))[:5].tolist()}")
  if not np.issubdtype(arrays["groups"].dtype, np.integer):
    raise ConfigError(f"groups must be integer codes, got dtype {arrays['groups'].dtype}")
  if weights is not None and (arrays["weights"] < 0).any():
    raise ConfigError("weights must be >= 0")
  return (arrays["scores"].astype(np.float64), arrays["labels"].astype(np.int64),
          arrays["groups"].astype(np.int64),
          arrays["weights"].astype(np.float64) if weights is not None else None)


def fit_thresholds(scores, labels, groups, *, constraint: str, fp_cost: float = 1.0,
                   fn_cost: float = 1.0, tolerance: float = 0.0,
                   weights=None) -> DerivedPredictor:
  """The derived predictor of largest utility (see `DerivedPredictor.utility`) whose groups'
  rates satisfy `constraint` (one of `CONSTRAINTS`) on this data, up to `tolerance` (the
  largest minus the smallest group's rate, for each constrained rate).

  scores: [N] any real score, larger meaning more likely positive (only its order within
    each group matters); labels: [N] 0/1; groups: [N] integer codes; weights: [N] >= 0 or
  None. fp_cost / fn_cost: the cost of a false positive / false negative (for a loan: the
  loss on a default and the profit forgone on a repayer); fp_cost = fn_cost maximises
  accuracy.
  """
  scores, labels, groups, weights = check_inputs(
      scores, labels, groups, weights, constraint=constraint, fp_cost=fp_cost,
      fn_cost=fn_cost, tolerance=tolerance)
  curves = roc.roc_curves(scores, labels, groups, weights)
  for code, curve in curves.items():
    for name, total, label in (("positive", curve.positives, 1),
                               ("negative", curve.negatives, 0)):
      if not total > 0:
        raise ConfigError(f"group {code} has no {name} examples (labels == {label}, weight > "
                          "0) in the fitting data: its rates are undefined")
  codes = np.array(sorted(curves), np.int64)
  if constraint == "group_blind":
    pooled = roc.roc_curves(scores, labels, np.zeros_like(groups), weights)[0]
    gain = fn_cost * pooled.positives * pooled.tpr - fp_cost * pooled.negatives * pooled.fpr
    threshold = pooled.thresholds[int(np.argmax(gain))]
    lower = upper = np.full(len(codes), threshold)
    levels = np.tile([0.0, 0.0, 1.0], (len(codes), 1))
    fpr, tpr = (np.array([_rate_at(curves[c], threshold, which) for c in codes])
                for which in ("fpr", "tpr"))
  else:
    hulls = [_hull(curves[c]) for c in codes]
    if tolerance > 0:
      fpr, tpr = solve.linear_programme(hulls, constraint, fn_cost, fp_cost, tolerance)
    else:
      fpr, tpr = solve.closed_form(hulls, constraint, fn_cost, fp_cost)
    rules = [_rule(h, x, y) for h, x, y in zip(hulls, fpr, tpr)]
    lower, upper, levels = (np.array([r[i] for r in rules]) for i in range(3))
  positives = np.array([curves[c].positives for c in codes])
  negatives = np.array([curves[c].negatives for c in codes])
  total = positives.sum() + negatives.sum()
  true_pos, false_pos = positives * tpr, negatives * fpr
  return DerivedPredictor(
      constraint, float(tolerance), float(fp_cost), float(fn_cost), codes, lower, upper,
      levels, fpr, tpr, (true_pos + false_pos) / (positives + negatives),
      float((fn_cost * true_pos.sum() - fp_cost * false_pos.sum()) / total),
      float((true_pos.sum() + negatives.sum() - false_pos.sum()) / total))


def _hull(curve: roc.GroupRoc) -> solve.Hull:
  vertices = roc.upper_hull(curve.fpr, curve.tpr)
  return solve.Hull(curve.fpr[vertices], curve.tpr[vertices], curve.thresholds[vertices],
                    curve.positives, curve.negatives)


def _rate_at(curve: roc.GroupRoc, threshold: float, which: str) -> float:
  """FPR or TPR of "accept score >= threshold" in one group."""
  k = int(np.searchsorted(-curve.thresholds, -threshold, side="right")) - 1
  return float(getattr(curve, which)[k])


def _rule(hull: solve.Hull, fpr: float, tpr: float):
  """(lower, upper, levels) of the rule realising (fpr, tpr) in the group of `hull`: the hull
  point at `fpr` (two vertices mixed by a band between their thresholds), mixed with the coin
  that accepts with probability `fpr` (the diagonal point) when `tpr` is below the hull."""
  k = int(np.clip(np.searchsorted(hull.fpr, fpr, side="right") - 1, 0, len(hull.fpr) - 2))
  share = float(np.clip((fpr - hull.fpr[k]) / (hull.fpr[k + 1] - hull.fpr[k]), 0.0, 1.0))
  if share == 0.0:
    lower = upper = hull.thresholds[k]
  elif share == 1.0:
    lower = upper = hull.thresholds[k + 1]
  else:
    lower, upper = hull.thresholds[k + 1], hull.thresholds[k]
  levels = np.array([0.0, share, 1.0])
  on_hull = (1 - share) * hull.tpr[k] + share * hull.tpr[k + 1]
  if tpr < on_hull and on_hull > fpr:
    coin = (on_hull - tpr) / (on_hull - fpr)
    levels = (1 - coin) * levels + coin * fpr
  return float(lower), float(upper), levels
