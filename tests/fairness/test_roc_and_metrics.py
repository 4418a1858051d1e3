"""ROC curves and hulls against looped references; group metrics against NumPy; bootstrap
intervals against the binomial closed form."""

import jax
import numpy as np
import pytest

from jaxml import fairness
from jaxml.fairness import roc


def test_roc_curves_match_a_loop_with_ties_and_weights():
  rng = np.random.default_rng(0)
  score = rng.integers(0, 6, 300).astype(float)
  label = rng.integers(0, 2, 300)
  group = rng.integers(3, 5, 300)  # codes need not start at 0
  weight = rng.uniform(0, 3, 300)
  curves = fairness.roc_curves(score, label, group, weight)
  assert sorted(curves) == [3, 4]
  for g, curve in curves.items():
    s, y, w = score[group == g], label[group == g], weight[group == g]
    assert curve.thresholds[0] == np.inf
    np.testing.assert_array_equal(curve.thresholds[1:], np.unique(s)[::-1])
    for u, fpr, tpr in zip(curve.thresholds, curve.fpr, curve.tpr):
      assert tpr == pytest.approx(w[(s >= u) & (y == 1)].sum() / w[y == 1].sum())
      assert fpr == pytest.approx(w[(s >= u) & (y == 0)].sum() / w[y == 0].sum())
    assert (curve.fpr[-1], curve.tpr[-1]) == (1.0, 1.0)


def _slow_hull(x, y):
  """Upper hull by definition: a point is a vertex when no chord of two others passes on or
  above it and it is the highest point at its x."""
  points = sorted(set(zip(x, y)))
  vertices = []
  for px, py in points:
    if any(qx == px and qy > py for qx, qy in points):
      continue
    covered = False
    for (ax, ay) in points:
      for (bx, by) in points:
        if ax < px < bx and ay + (by - ay) * (px - ax) / (bx - ax) >= py - 1e-12:
          covered = True
    if not covered:
      vertices.append((px, py))
  return vertices


@pytest.mark.parametrize("seed", range(5))
def test_upper_hull_is_the_hull(seed):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, 2, 120)
  score = rng.integers(0, 30, 120) + 8 * label * rng.random(120)
  curve = fairness.roc_curves(score, label, np.zeros(120, int))[0]
  hull = fairness.upper_hull(curve.fpr, curve.tpr)
  ours = curve.fpr[hull], curve.tpr[hull]
  theirs = np.array(_slow_hull(curve.fpr, curve.tpr)).T
  # The same boundary (a vertex of either lies on the other; a point collinear to rounding
  # may be a vertex of one only), and every true vertex is one of ours.
  np.testing.assert_allclose(np.interp(theirs[0], *ours), theirs[1], atol=1e-12)
  np.testing.assert_allclose(np.interp(ours[0], *theirs), ours[1], atol=1e-12)
  assert set(theirs[0]) <= set(ours[0])
  assert np.all(np.diff(curve.fpr[hull]) > 0)


@pytest.mark.parametrize("passes", [0, 1, 3])
def test_upper_hull_does_not_depend_on_the_pruning(monkeypatch, passes):
  # The vectorised pruning only removes points early; the exact scan alone gives the same.
  rng = np.random.default_rng(7)
  label = rng.integers(0, 2, 20000)
  score = rng.normal(label, 1.0)
  curve = fairness.roc_curves(score, label, np.zeros(20000, int))[0]
  full = fairness.upper_hull(curve.fpr, curve.tpr)
  monkeypatch.setattr(roc, "_PRUNE_PASSES", passes)
  np.testing.assert_array_equal(fairness.upper_hull(curve.fpr, curve.tpr), full)


def test_group_metrics_match_numpy():
  rng = np.random.default_rng(1)
  n = 500
  group = rng.integers(0, 3, n)
  label = rng.integers(0, 2, n)
  decision = rng.random(n)  # expected decisions (probabilities)
  weight = rng.uniform(0.5, 1.5, n)
  out = fairness.group_metrics(decision, label, group, 3, weights=weight)
  for g in range(3):
    pos, neg, mine = (group == g) & (label == 1), (group == g) & (label == 0), group == g
    tpr = np.sum((decision * weight)[pos]) / weight[pos].sum()
    fpr = np.sum((decision * weight)[neg]) / weight[neg].sum()
    assert out["tpr"][g] == pytest.approx(tpr, rel=1e-5)
    assert out["fpr"][g] == pytest.approx(fpr, rel=1e-5)
    assert out["selection_rate"][g] == pytest.approx(
        np.sum((decision * weight)[mine]) / weight[mine].sum(), rel=1e-5)
  correct = decision * label + (1 - decision) * (1 - label)
  assert out["accuracy"] == pytest.approx(np.sum(correct * weight) / weight.sum(), rel=1e-5)
  assert out["tpr_gap"] == pytest.approx(np.ptp(np.asarray(out["tpr"])), rel=1e-6)
  # A group with no examples is NaN and left out of the gaps.
  empty = fairness.group_metrics(decision, label, group, 4)
  assert np.isnan(empty["tpr"][3]) and np.isfinite(empty["tpr_gap"])


def test_bootstrap_interval_matches_the_binomial_closed_form():
  rng = np.random.default_rng(2)
  n = 4000
  label = rng.integers(0, 2, n)
  decision = np.where(rng.random(n) < 0.8, label, 1 - label)  # 80% accurate
  out = fairness.bootstrap(decision, label, np.zeros(n, int), 1, jax.random.key(0),
                           samples=1000)
  estimate, low, high = out["accuracy"]
  accuracy = np.mean(decision == label)
  assert estimate == pytest.approx(accuracy, rel=1e-6)
  half_width = 1.96 * np.sqrt(accuracy * (1 - accuracy) / n)
  assert low < accuracy < high
  assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)
  assert (high + low) / 2 == pytest.approx(accuracy, abs=0.004)
