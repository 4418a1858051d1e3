"""fit_thresholds: the exact optimum of every constraint (against a brute force), the
constraint met on the fitting data (in expectation and over many coins), tolerance, the
perfect score, invariance to monotone transforms, and one clear error for each bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml import fairness
from jaxml.errors import ConfigError
from tests.fairness import brute_force

CONSTRAINED = ("equal_opportunity", "equalized_odds", "demographic_parity")


def discrete_data(seed, groups=2, n=40, levels=5, weighted=True):
  """Small integer-score data: ties everywhere, base rates and separation differ by group."""
  rng = np.random.default_rng(seed)
  group = rng.integers(0, groups, n)
  label = (rng.random(n) < 0.25 + 0.2 * group).astype(np.int64)
  label[:2 * groups] = np.tile([0, 1], groups)  # every group has both labels
  group[:2 * groups] = np.repeat(np.arange(groups), 2)
  score = np.clip(np.round(rng.normal(1.5 + (1.0 + 0.5 * group) * label, 1.2)), 0, levels)
  weight = rng.uniform(0.5, 2.0, n) if weighted else np.ones(n)
  return score, label, group, weight


def as_groups(score, label, group, weight):
  return {g: (score[group == g].tolist(), label[group == g].tolist(),
              weight[group == g].tolist()) for g in np.unique(group)}


def expected_rates(derived, score, label, group, weight):
  """(tpr [G], fpr [G], selection [G], utility) of the rule, in NumPy from its probabilities."""
  p = np.asarray(derived.acceptance_probability(score.astype(np.float32), group), np.float64)
  codes = derived.groups
  tpr = np.array([np.sum((p * weight)[(group == g) & (label == 1)])
                  / np.sum(weight[(group == g) & (label == 1)]) for g in codes])
  fpr = np.array([np.sum((p * weight)[(group == g) & (label == 0)])
                  / np.sum(weight[(group == g) & (label == 0)]) for g in codes])
  sel = np.array([np.sum((p * weight)[group == g]) / np.sum(weight[group == g]) for g in codes])
  utility = (derived.fn_cost * np.sum((p * weight)[label == 1])
             - derived.fp_cost * np.sum((p * weight)[label == 0])) / weight.sum()
  return tpr, fpr, sel, utility


@pytest.mark.parametrize("constraint", fairness.CONSTRAINTS)
@pytest.mark.parametrize("seed", range(6))
def test_optimum_equals_brute_force(constraint, seed):
  score, label, group, weight = discrete_data(seed, groups=2 + seed % 2)
  costs = {"fp_cost": 1.0 + seed % 3, "fn_cost": 1.5}
  derived = fairness.fit_thresholds(score, label, group, constraint=constraint,
                                    weights=weight, **costs)
  reference = brute_force.best_utility(as_groups(score, label, group, weight), constraint,
                                       **costs)
  assert derived.utility == pytest.approx(reference, abs=1e-9)
  # ... and the rule realises that utility on the data (its probabilities, not its report).
  assert expected_rates(derived, score, label, group, weight)[3] == pytest.approx(
      reference, abs=1e-6)


@pytest.mark.parametrize("constraint", CONSTRAINED)
def test_constraint_holds_in_expectation_and_over_coins(constraint):
  rng = np.random.default_rng(0)
  n = 3000
  group = rng.integers(0, 3, n)
  label = (rng.random(n) < 0.3 + 0.15 * group).astype(np.int64)
  score = np.round(rng.normal(label * (0.8 + 0.6 * group), 1.0), 1).astype(np.float32)
  weight = np.ones(n)
  derived = fairness.fit_thresholds(score, label, group, constraint=constraint)
  tpr, fpr, sel, _ = expected_rates(derived, score, label, group, weight)
  np.testing.assert_allclose(tpr, derived.tpr, atol=1e-6)
  np.testing.assert_allclose(fpr, derived.fpr, atol=1e-6)
  equal = {"equal_opportunity": [tpr], "equalized_odds": [tpr, fpr],
           "demographic_parity": [sel]}[constraint]
  for rates in equal:
    assert np.ptp(rates) < 1e-6
  assert np.ptp(tpr if constraint != "demographic_parity" else sel) < 1e-6
  # Empirically: decisions averaged over many coins (one key each) meet it too.
  keys = jax.random.split(jax.random.key(1), 400)
  decisions = jax.jit(jax.vmap(lambda k: derived.predict(jnp.asarray(score), group, k)))(keys)
  mean = np.asarray(decisions, np.float64).mean(0)
  empirical = {"tpr": [mean[(group == g) & (label == 1)].mean() for g in range(3)],
               "fpr": [mean[(group == g) & (label == 0)].mean() for g in range(3)],
               "sel": [mean[group == g].mean() for g in range(3)]}
  checked = {"equal_opportunity": ["tpr"], "equalized_odds": ["tpr", "fpr"],
             "demographic_parity": ["sel"]}[constraint]
  for name in checked:
    assert np.ptp(empirical[name]) < 0.01, (name, empirical[name])
  assert set(np.unique(np.asarray(decisions))) <= {0, 1}


@pytest.mark.parametrize("constraint", CONSTRAINED)
def test_tolerance_bounds_the_gap_and_buys_utility(constraint):
  score, label, group, weight = discrete_data(3, groups=3, n=300, levels=8)
  unconstrained = fairness.fit_thresholds(score, label, group, constraint="none",
                                          weights=weight)
  utilities = []
  for eps in (0.0, 0.01, 0.03, 0.1, 0.3, 1.0):
    derived = fairness.fit_thresholds(score, label, group, constraint=constraint,
                                      tolerance=eps, weights=weight)
    tpr, fpr, sel, utility = expected_rates(derived, score, label, group, weight)
    assert utility == pytest.approx(derived.utility, abs=1e-7)
    gaps = {"equal_opportunity": [tpr], "equalized_odds": [tpr, fpr],
            "demographic_parity": [sel]}[constraint]
    assert max(np.ptp(r) for r in gaps) <= eps + 1e-7
    utilities.append(derived.utility)
  assert all(b >= a - 1e-9 for a, b in zip(utilities, utilities[1:])), utilities
  # A tolerance as wide as the rates themselves is no constraint at all.
  assert utilities[-1] == pytest.approx(unconstrained.utility, abs=1e-9)
  # The LP at tolerance 0 and the closed form agree.
  from jaxml.fairness import roc, solve, thresholds  # pylint: disable=import-outside-toplevel
  curves = roc.roc_curves(score, label, group, weight)
  hulls = [thresholds._hull(curves[g]) for g in sorted(curves)]  # pylint: disable=protected-access
  x, y = solve.linear_programme(hulls, constraint, 1.0, 1.0, 0.0)
  assert (solve._utility(hulls, 1.0, 1.0, x, y) / weight.sum()  # pylint: disable=protected-access
          == pytest.approx(utilities[0], abs=1e-8))


def test_perfect_score_meets_opportunity_and_odds_at_no_cost():
  rng = np.random.default_rng(0)
  group = rng.integers(0, 3, 600)
  label = (rng.random(600) < np.array([0.2, 0.5, 0.7])[group]).astype(np.int64)
  score = label * 2.0 + rng.random(600)  # every positive above every negative
  best = label.mean()  # utility with costs 1: all true positives, no false positive
  for constraint in ("none", "group_blind", "equal_opportunity", "equalized_odds"):
    derived = fairness.fit_thresholds(score, label, group, constraint=constraint)
    assert derived.utility == pytest.approx(best)
    assert derived.accuracy == pytest.approx(1.0)
    np.testing.assert_allclose(derived.tpr, 1.0)
    np.testing.assert_allclose(derived.fpr, 0.0)
  # Demographic parity with unequal base rates cannot keep the perfect rule (the paper's
  # argument against it).
  parity = fairness.fit_thresholds(score, label, group, constraint="demographic_parity")
  assert parity.utility < best - 0.05
  assert np.ptp(parity.selection_rate) < 1e-9


@pytest.mark.parametrize("constraint", fairness.CONSTRAINTS)
def test_invariant_to_strictly_increasing_transforms(constraint):
  score, label, group, weight = discrete_data(5, groups=3, n=400, levels=12)
  score = score + np.random.default_rng(0).random(len(score))  # mostly distinct, float
  transformed = np.exp(score / 3.0) * 7.0 - 2.0
  a = fairness.fit_thresholds(score, label, group, constraint=constraint, weights=weight)
  b = fairness.fit_thresholds(transformed, label, group, constraint=constraint,
                              weights=weight)
  assert a.utility == pytest.approx(b.utility, abs=1e-12)
  np.testing.assert_allclose(
      np.asarray(jax.jit(a.acceptance_probability)(score, group)),
      np.asarray(jax.jit(b.acceptance_probability)(transformed, group)), atol=1e-6)


def test_rules_are_three_level_randomised_thresholds():
  score, label, group, weight = discrete_data(1, groups=2, n=200)
  derived = fairness.fit_thresholds(score, label, group, constraint="equalized_odds",
                                    weights=weight)
  for rule in derived.rules():
    assert rule["lower"] <= rule["upper"]
    assert 0 <= rule["p_below"] <= rule["p_band"] <= rule["p_above"] <= 1
  # The probability is a non-decreasing step function of the score in every group.
  grid = np.linspace(-1, 7, 81).astype(np.float32)
  for g in derived.groups:
    p = np.asarray(derived.acceptance_probability(grid, np.full(len(grid), g)))
    assert np.all(np.diff(p) >= -1e-7)


@pytest.mark.parametrize("kwargs, message", [
    ({"scores": [0.1, np.nan, 0.3, 0.4]}, "scores: 1 value(s) are not finite"),
    ({"labels": [0, 1, 2, 1]}, "labels must be 0 or 1"),
    ({"groups": [0, 0, 1, 1.5]}, "groups must be integer codes"),
    ({"labels": [0, 1, 0, 0]}, "group 1 has no positive examples"),
    ({"labels": [0, 1, 1, 1]}, "group 1 has no negative examples"),
    ({"fp_cost": 0.0}, "fp_cost=0.0: costs must be finite and > 0"),
    ({"fn_cost": -1.0}, "fn_cost=-1.0: costs must be finite and > 0"),
    ({"tolerance": -0.1}, "tolerance=-0.1 must be finite and >= 0"),
    ({"constraint": "parity"}, "constraint='parity': choose one of"),
    ({"constraint": "none", "tolerance": 0.1}, "constraint='none' has none"),
    ({"scores": [0.1, 0.2, 0.3]}, "labels has 4 entries but scores has 3"),
    ({"weights": [1.0, -1.0, 1.0, 1.0]}, "weights must be >= 0"),
])
def test_bad_input_is_one_clear_error(kwargs, message):
  args = {"scores": [0.1, 0.9, 0.2, 0.8], "labels": [0, 1, 0, 1], "groups": [0, 0, 1, 1],
          "constraint": "equal_opportunity"}
  args.update(kwargs)
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    fairness.fit_thresholds(args.pop("scores"), args.pop("labels"), args.pop("groups"), **args)


def test_predict_time_errors_name_the_group_and_the_scores():
  derived = fairness.fit_thresholds([0.1, 0.9, 0.2, 0.8], [0, 1, 0, 1], [0, 0, 1, 1],
                                    constraint="equal_opportunity")
  with pytest.raises(ConfigError, match=r"groups \[7\] were not seen"):
    derived.acceptance_probability(np.array([0.5, 0.5]), np.array([0, 7]))
  with pytest.raises(ConfigError, match="scores: 1 value"):
    derived.predict(np.array([0.5, np.inf]), np.array([0, 1]), jax.random.key(0))
  # Traced under jit the check cannot raise: the unseen group's probability is NaN instead.
  probability = jax.jit(derived.acceptance_probability)(jnp.array([0.5, 0.5]),
                                                        jnp.array([0, 7]))
  assert np.isfinite(probability[0]) and np.isnan(probability[1])
