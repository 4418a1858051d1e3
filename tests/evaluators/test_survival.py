"""Kaplan-Meier, log-rank, Cox and concordance against lifelines (its KaplanMeierFitter,
logrank tests, CoxPHFitter with Efron ties, utils.concordance_index) on data with tied times and
censoring; and, without lifelines, against small cases worked by hand, a naive Efron partial
likelihood and its finite differences, the identity "Cox score test = log-rank test" (one
binary covariate, no ties), a brute-force pair count and pandas-free quartiles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from jaxml.errors import ConfigError
from jaxml.evaluators import survival


def tied_censored_data(seed=0, n=240, covariates=3):
  """Exponential times whose hazard depends on the covariates (the last one binary), rounded
  to 0.2 so many times tie, censored by an independent rounded exponential."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, covariates))
  x[:, -1] = rng.integers(0, 2, n)
  effect = np.linspace(0.6, -0.4, covariates)
  event_time = np.round(rng.exponential(np.exp(-x @ effect)) * 5) / 5 + 0.2
  censor_time = np.round(rng.exponential(2.0, n) * 5) / 5 + 0.2
  times = np.minimum(event_time, censor_time)
  return times, (event_time <= censor_time).astype(int), x


# --- Kaplan-Meier -----------------------------------------------------------------------------

def test_kaplan_meier_worked_by_hand():
  # time:     1    2 (one dies, one censored)   3    4 (censored)   5
  # at risk:  6    5                            3    2              1
  # S:        5/6  5/6 * 4/5 = 2/3              4/9  4/9            0
  fit = survival.kaplan_meier([1, 2, 2, 3, 4, 5], [1, 1, 0, 1, 0, 1])
  np.testing.assert_array_equal(fit.times, [1, 2, 3, 4, 5])
  np.testing.assert_array_equal(fit.at_risk, [6, 5, 3, 2, 1])
  np.testing.assert_array_equal(fit.events, [1, 1, 1, 0, 1])
  np.testing.assert_array_equal(fit.censored, [0, 1, 0, 1, 0])
  np.testing.assert_allclose(fit.survival, [5 / 6, 2 / 3, 4 / 9, 4 / 9, 0], atol=1e-15)
  # Greenwood: S^2 * sum d / (n (n - d)): 1/30, 1/30 + 1/20 = 1/12, 1/12 + 1/6 = 1/4.
  greenwood = np.array([1 / 30, 1 / 12, 1 / 4, 1 / 4])
  np.testing.assert_allclose(fit.variance, np.r_[fit.survival[:4] ** 2 * greenwood, 0])
  np.testing.assert_allclose(fit.variance[1], 1 / 27)
  # The log(-log S) band at 95%: S ** exp(-+ 1.96 sqrt(greenwood) / -log S); S = 0 stays 0.
  s = fit.survival[:4]
  c = 1.959963984540054 * np.sqrt(greenwood) / -np.log(s)
  np.testing.assert_allclose(fit.lower, np.r_[s ** np.exp(c), 0])
  np.testing.assert_allclose(fit.upper, np.r_[s ** np.exp(-c), 0])
  assert np.all(fit.lower <= fit.survival) and np.all(fit.survival <= fit.upper)
  np.testing.assert_allclose(fit.survival_at([0, 1, 2.5, 4, 10]), [1, 5 / 6, 2 / 3, 4 / 9, 0])
  assert fit.median() == 3.0
  assert survival.kaplan_meier([1, 2], [0, 0]).median() == float("inf")


def test_kaplan_meier_equals_lifelines_with_ties_and_censoring():
  lifelines = pytest.importorskip("lifelines")
  times, events, _ = tied_censored_data()
  for level in (0.95, 0.8):
    fit = survival.kaplan_meier(times, events, level=level)
    reference = lifelines.KaplanMeierFitter(alpha=1 - level).fit(times, events)
    assert len(np.unique(times)) < len(times) // 2  # the data do tie
    np.testing.assert_allclose(fit.survival, reference.survival_function_at_times(fit.times),
                               rtol=1e-13)
    band = reference.confidence_interval_.loc[fit.times].to_numpy()
    inside = fit.survival > 0  # lifelines reports a band of 1 where S = 0
    np.testing.assert_allclose(fit.lower[inside], band[inside, 0], rtol=1e-12)
    np.testing.assert_allclose(fit.upper[inside], band[inside, 1], rtol=1e-12)
    assert fit.median() == reference.median_survival_time_
    table = reference.event_table.loc[fit.times]
    np.testing.assert_array_equal(fit.at_risk, table["at_risk"])
    np.testing.assert_array_equal(fit.events, table["observed"])


# --- log-rank -----------------------------------------------------------------------------------

def test_logrank_two_groups_worked_by_hand():
  # A dies at 1 and 3, B at 2 and 4. Expected deaths of A and hypergeometric variances:
  # t=1: 2/4, 1/4;  t=2: 1/3, 2/9;  t=3: 1/2, 1/4;  t=4: 0, 0 -> O - E = 2 - 4/3, V = 13/18.
  result = survival.logrank_test([1, 3, 2, 4], [1, 1, 1, 1], ["A", "A", "B", "B"])
  assert result.groups == ("A", "B") and result.df == 1
  np.testing.assert_allclose(result.observed, [2, 2])
  np.testing.assert_allclose(result.expected, [4 / 3, 8 / 3])
  assert result.statistic == pytest.approx((2 / 3) ** 2 / (13 / 18), rel=1e-14)
  assert result.p_value == pytest.approx(stats.chi2.sf(8 / 13, 1), rel=1e-12)


def test_logrank_equals_lifelines_for_two_and_three_groups():
  pytest.importorskip("lifelines")
  from lifelines.statistics import logrank_test, multivariate_logrank_test  # pylint: disable=import-outside-toplevel
  times, events, x = tied_censored_data(seed=1)
  binary = x[:, -1]
  mine = survival.logrank_test(times, events, binary)
  theirs = logrank_test(times[binary == 0], times[binary == 1], events[binary == 0],
                        events[binary == 1])
  assert mine.statistic == pytest.approx(theirs.test_statistic, rel=1e-11)
  assert mine.p_value == pytest.approx(theirs.p_value, rel=1e-9)
  three = np.digitize(x[:, 0], [-0.5, 0.5])
  mine = survival.logrank_test(times, events, three)
  theirs = multivariate_logrank_test(times, three, events)
  assert mine.df == 2 and mine.statistic > 5  # the groups do differ
  assert mine.statistic == pytest.approx(theirs.test_statistic, rel=1e-11)
  assert mine.p_value == pytest.approx(theirs.p_value, rel=1e-9)


# --- Cox ----------------------------------------------------------------------------------------

def naive_efron_log_likelihood(beta, times, events, x):
  """The Efron partial log-likelihood by its definition: a loop over distinct event times."""
  eta = x @ beta
  total = 0.0
  for t in np.unique(times[events == 1]):
    dying = (times == t) & (events == 1)
    risk_sum = np.exp(eta[times >= t]).sum()
    death_sum = np.exp(eta[dying]).sum()
    d = dying.sum()
    total += eta[dying].sum() - sum(np.log(risk_sum - j / d * death_sum) for j in range(d))
  return total


def test_cox_maximises_the_efron_likelihood_by_definition():
  times, events, x = tied_censored_data(seed=2, n=120)
  fit = survival.cox_ph(times, events, x)
  ll = lambda b: naive_efron_log_likelihood(b, times, events, x)
  assert fit.log_likelihood == pytest.approx(ll(fit.coef), rel=1e-12)
  assert fit.null_log_likelihood == pytest.approx(ll(np.zeros(3)), rel=1e-12)
  h = 1e-4
  unit = np.eye(3) * h
  gradient = [(ll(fit.coef + e) - ll(fit.coef - e)) / (2 * h) for e in unit]
  np.testing.assert_allclose(gradient, 0, atol=1e-6)
  hessian = np.array([[(ll(fit.coef + a + b) - ll(fit.coef + a - b) - ll(fit.coef - a + b)
                        + ll(fit.coef - a - b)) / (4 * h * h) for b in unit] for a in unit])
  np.testing.assert_allclose(fit.se, np.sqrt(np.diag(np.linalg.inv(-hessian))), rtol=1e-5)
  assert fit.likelihood_ratio == pytest.approx(2 * (ll(fit.coef) - ll(np.zeros(3))))
  np.testing.assert_allclose(fit.hazard_ratio, np.exp(fit.coef))
  np.testing.assert_allclose(fit.hr_lower, np.exp(fit.coef - 1.959963984540054 * fit.se))


def test_cox_score_test_is_the_logrank_test_for_one_binary_covariate_without_ties():
  rng = np.random.default_rng(3)
  group = rng.integers(0, 2, 150)
  event_time = rng.exponential(np.exp(-0.7 * group))
  censor_time = rng.exponential(1.5, 150)
  times, events = np.minimum(event_time, censor_time), (event_time <= censor_time).astype(int)
  assert len(np.unique(times)) == len(times)
  logrank = survival.logrank_test(times, events, group)
  for ties in ("efron", "breslow"):
    fit = survival.cox_ph(times, events, group, ties=ties)
    assert fit.score_statistic == pytest.approx(logrank.statistic, rel=1e-12)
    assert fit.score_p == pytest.approx(logrank.p_value, rel=1e-10)
  efron, breslow = (survival.cox_ph(times, events, group, ties=t) for t in ("efron", "breslow"))
  np.testing.assert_allclose(efron.coef, breslow.coef, rtol=1e-10)  # the same without ties


@pytest.mark.parametrize("seed", [0, 4])
def test_cox_equals_lifelines_efron(seed):
  lifelines = pytest.importorskip("lifelines")
  import pandas as pd  # pylint: disable=import-outside-toplevel  # a lifelines dependency
  times, events, x = tied_censored_data(seed=seed)
  names = ["age", "fev1_fvc", "smoker"]
  fit = survival.cox_ph(times, events, x, names)
  frame = pd.DataFrame(x, columns=names).assign(time=times, event=events)
  reference = lifelines.CoxPHFitter().fit(frame, "time", "event",
                                          fit_options={"precision": 1e-13})
  summary = reference.summary.loc[names]
  np.testing.assert_allclose(fit.coef, summary["coef"], rtol=1e-8)
  np.testing.assert_allclose(fit.se, summary["se(coef)"], rtol=1e-8)
  np.testing.assert_allclose(fit.z, summary["z"], rtol=1e-8)
  np.testing.assert_allclose(fit.p_value, summary["p"], rtol=1e-6)
  np.testing.assert_allclose(fit.hr_lower, summary["exp(coef) lower 95%"], rtol=1e-8)
  np.testing.assert_allclose(fit.hr_upper, summary["exp(coef) upper 95%"], rtol=1e-8)
  assert fit.log_likelihood == pytest.approx(reference.log_likelihood_, rel=1e-12)
  assert fit.likelihood_ratio == pytest.approx(
      reference.log_likelihood_ratio_test().test_statistic, rel=1e-9)
  assert fit.concordance == pytest.approx(reference.concordance_index_, rel=1e-14)
  assert [row["name"] for row in fit.rows()] == names
  assert fit.rows()[2]["hazard_ratio"] == pytest.approx(np.exp(summary["coef"]["smoker"]))


# --- concordance and quartiles ---------------------------------------------------------------

def brute_force_concordance(times, events, risk):
  """Every ordered pair: comparable when the first has an event and an earlier time, or the
  same time while the second is censored."""
  concordant = pairs = 0.0
  for i, j in itertools.permutations(range(len(times)), 2):
    if events[i] and (times[i] < times[j] or (times[i] == times[j] and not events[j])):
      pairs += 1
      concordant += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
  return concordant / pairs


def test_concordance_equals_brute_force():
  times, events, x = tied_censored_data(seed=5, n=90)
  risk = np.round(x[:, 0], 1)  # tied scores too
  c = survival.concordance_index(times, events, risk)
  assert c == pytest.approx(brute_force_concordance(times, events, risk), rel=1e-14)
  assert survival.concordance_index(times, events, -risk) == pytest.approx(1 - c, rel=1e-14)
  assert survival.concordance_index([1, 2, 3], [1, 1, 1], [3, 2, 1]) == 1.0
  assert np.isnan(survival.concordance_index([1, 2, 3], [0, 0, 0], [3, 2, 1]))


def test_concordance_equals_lifelines():
  pytest.importorskip("lifelines")
  from lifelines.utils import concordance_index  # pylint: disable=import-outside-toplevel
  times, events, x = tied_censored_data(seed=6, n=2000)
  risk = np.round(x[:, 1], 2)
  assert survival.concordance_index(times, events, risk) == pytest.approx(
      concordance_index(times, -risk, events), rel=1e-14)


def test_quartile_groups():
  np.testing.assert_array_equal(survival.quantile_groups(np.arange(8.0)),
                                [0, 0, 1, 1, 2, 2, 3, 3])
  # Edges 1, 1.75, 2.5, 3.25, 4 at 25% steps; right-closed, lowest closed: as pandas.qcut.
  np.testing.assert_array_equal(survival.quantile_groups([1, 2, 3, 4], 4), [0, 1, 2, 3])
  scores = np.random.default_rng(7).normal(size=101).round(1)
  groups = survival.quantile_groups(scores)
  pd = pytest.importorskip("pandas")
  np.testing.assert_array_equal(groups, pd.qcut(scores, 4, labels=False))


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: survival.kaplan_meier([1, -2, 3], [1, 1, 0]), r"times must be >= 0.*row 1"),
    (lambda: survival.kaplan_meier([1, 2, 3], [1, 2, 0]), r"events must be 0.*row 1"),
    (lambda: survival.kaplan_meier([1, np.nan], [1, 0]), r"times must be finite.*row 1"),
    (lambda: survival.kaplan_meier([1, 2, 3], [1, 0]), "one length"),
    (lambda: survival.kaplan_meier([], []), "empty"),
    (lambda: survival.kaplan_meier([[1]], [[1]]), "1-D"),
    (lambda: survival.kaplan_meier([1, 2], [1, 0], level=1.5), "level"),
    (lambda: survival.concordance_index([1, 2], [1, 0], [0.3, np.nan]),
     r"risk_scores must be finite.*row 1"),
    (lambda: survival.concordance_index([1, 2], [1, 0], [0.3]), "one length"),
    (lambda: survival.logrank_test([1, 2], [1, 1], [0, 0]), "two or more groups"),
    (lambda: survival.logrank_test([1, 2], [1, 1], [0]), "one entry per individual"),
    (lambda: survival.quantile_groups([1, 1, 1, 1, 2]), "too tied"),
    (lambda: survival.quantile_groups([1, np.nan, 2, 3]), "scores must be finite"),
    (lambda: survival.cox_ph([1, 2, 3], [1, 1, 0], [[1.0], [np.nan], [2.0]]),
     r"covariates must be finite.*row 1"),
    (lambda: survival.cox_ph([1, 2, 3], [1, 1, 0], [1, 1, 1]), "constant"),
    (lambda: survival.cox_ph([1, 2, 3], [1, 1, 0], [1, 2]), "covariates must be"),
    (lambda: survival.cox_ph([1, 2, 3], [0, 0, 0], [1, 2, 3]), "no observed event"),
    (lambda: survival.cox_ph([1, 2, 3], [1, 1, 0], [1, 2, 3], ties="exact"), "ties"),
    (lambda: survival.cox_ph([1, 2, 3], [1, 1, 0], [1, 2, 3], names=["a", "b"]), "names"),
    # x = 1 all die before anyone with x = 0 leaves: the likelihood rises without bound.
    (lambda: survival.cox_ph([4, 5, 6, 1, 2, 3], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]),
     "did not converge"),
])
def test_bad_inputs_are_named(call, message):
  with pytest.raises(ConfigError, match=message):
    call()


def test_collinear_covariates_are_named():
  x = np.arange(6.0)
  with pytest.raises(ConfigError, match="collinear"):
    survival.cox_ph([1, 2, 3, 4, 5, 6], [1, 1, 0, 1, 1, 0], np.stack([x, 2 * x + 1], axis=1))


def test_groups_of_any_label_type_come_back_as_plain_values():
  times, events = [1, 2, 3, 4], [1, 1, 0, 1]
  for groups in (["a", "b", "a", "b"], np.array(["a", "b", "a", "b"], object), [0, 1, 0, 1]):
    fits = survival.kaplan_meier_by_group(times, events, groups)
    assert all(type(key) in (str, int) for key in fits)
    result = survival.logrank_test(times, events, groups)
    assert result.groups == tuple(fits)
    np.testing.assert_array_equal(fits[result.groups[0]].times, [1, 3])
