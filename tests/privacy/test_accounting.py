"""Accounting equals dp_accounting driven directly, and the analytic Gaussian mechanism."""

import math
import time

import dp_accounting
import pytest
from dp_accounting import pld
from dp_accounting import rdp
from scipy import optimize
from scipy import stats

from jaxml.errors import ConfigError
from jaxml.privacy import accounting

NeighborRel = dp_accounting.NeighboringRelation

# (σ, q, steps, δ); σ >= 0.8 keeps PLD construction well under a second each.
CASES = [(1.0, 0.01, 1000, 1e-5), (0.8, 0.05, 200, 1e-6), (2.0, 0.1, 50, 1e-5),
         (1.5, 0.001, 5000, 1e-7)]


def analytic_gaussian_epsilon(noise_multiplier, delta):
  """ε of one Gaussian release with std/sensitivity σ (Balle & Wang 2018, Theorem 8).

  δ(ε) = Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ) decreases in ε; solve δ(ε) = delta.
  """
  def excess(eps):
    s = noise_multiplier
    tail = math.exp(eps) * stats.norm.cdf(-1 / (2 * s) - eps * s)
    return stats.norm.cdf(1 / (2 * s) - eps * s) - tail - delta
  return optimize.brentq(excess, 0.0, 500.0, xtol=1e-12)


def direct_epsilon(accountant, relation, event, delta):
  acc = accountant(neighboring_relation=relation)
  acc.compose(event)
  return acc.get_epsilon(delta)


@pytest.mark.parametrize("sigma,q,steps,delta", CASES)
def test_poisson_rdp_equals_dp_accounting(sigma, q, steps, delta):
  event = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
  want = direct_epsilon(rdp.RdpAccountant, NeighborRel.ADD_OR_REMOVE_ONE, event, delta)
  assert accounting.epsilon(sigma, q, steps, delta) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("sigma,q,steps,delta", CASES)
def test_poisson_pld_equals_dp_accounting_and_is_at_most_rdp(sigma, q, steps, delta):
  acc = pld.PLDAccountant()
  acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)),
              steps)
  want = acc.get_epsilon(delta)
  got = accounting.epsilon(sigma, q, steps, delta, accountant="pld")
  assert got == pytest.approx(want, rel=1e-9)
  rdp_eps = accounting.epsilon(sigma, q, steps, delta, accountant="rdp")
  # PLD is the tighter of the two (up to its discretisation); RDP is usually within ~2x.
  assert got <= rdp_eps * 1.001 + 1e-3
  assert got >= 0.5 * rdp_eps


def test_without_replacement_is_replace_one_rdp_at_half_sigma():
  sigma, n, b, steps, delta = 1.2, 1000, 10, 300, 1e-5
  event = dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
      n, b, dp_accounting.GaussianDpEvent(sigma / 2)), steps)
  want = direct_epsilon(rdp.RdpAccountant, NeighborRel.REPLACE_ONE, event, delta)
  got = accounting.epsilon(sigma, b / n, steps, delta, sampling="without_replacement")
  assert got == pytest.approx(want, rel=1e-12)
  # The sizes handed to dp_accounting are the reduced fraction of b/n.
  assert accounting._as_sizes(b / n) == (100, 1)
  assert accounting._as_sizes(256 / 50000) == (3125, 16)  # 256/50000 reduced


def test_without_replacement_with_pld_is_a_config_error():
  with pytest.raises(ConfigError, match="without_replacement.*pld"):
    accounting.epsilon(1.0, 0.01, 10, 1e-5, sampling="without_replacement",
                       accountant="pld")


@pytest.mark.parametrize("steps,q,want", [(250, 0.01, 3), (300, 0.01, 3), (301, 0.01, 4),
                                          (3, 1 / 3, 1), (0, 0.5, 0), (1, 0.001, 1)])
def test_shuffle_participations(steps, q, want):
  assert accounting.shuffle_participations(q, steps) == want


def test_shuffle_is_unamplified_gaussian_with_replace_one_sensitivity():
  sigma, q, steps, delta = 3.0, 0.01, 1000, 1e-5  # 10 epochs
  # Ten releases with std/(2C) = 1.5 compose to one Gaussian of multiplier 1.5/sqrt(10).
  want = analytic_gaussian_epsilon(sigma / 2 / math.sqrt(10), delta)
  got_pld = accounting.epsilon(sigma, q, steps, delta, sampling="shuffle", accountant="pld")
  assert got_pld == pytest.approx(want, rel=1e-3)
  rdp_event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma / 2), 10)
  got_rdp = accounting.epsilon(sigma, q, steps, delta, sampling="shuffle")
  assert got_rdp == pytest.approx(
      direct_epsilon(rdp.RdpAccountant, NeighborRel.ADD_OR_REMOVE_ONE, rdp_event, delta),
      rel=1e-12)
  assert want <= got_rdp
  # No amplification: far more than Poisson at the same σ and batch fraction.
  assert got_rdp > 3 * accounting.epsilon(sigma, q, steps, delta)


@pytest.mark.parametrize("sigma,delta", [(1.0, 1e-5), (3.0, 1e-6), (0.7, 1e-3)])
def test_single_gaussian_matches_balle_wang(sigma, delta):
  want = analytic_gaussian_epsilon(sigma, delta)
  assert want == pytest.approx(dp_accounting.get_epsilon_gaussian(sigma, delta), rel=1e-4)
  got_pld = accounting.epsilon(sigma, 1.0, 1, delta, accountant="pld")
  assert got_pld == pytest.approx(want, rel=1e-3)
  assert got_pld >= want * (1 - 1e-6)  # PLD's pessimistic estimate never under-reports
  got_rdp = accounting.epsilon(sigma, 1.0, 1, delta, accountant="rdp")
  assert got_rdp >= want


def test_composed_gaussians_equal_one_gaussian():
  sigmas, delta = [2.0, 3.0, 6.0], 1e-6
  # Gaussian releases compose to a Gaussian: 1/σ² adds (here 1/4 + 1/9 + 1/36 = 7/18).
  combined = 1 / math.sqrt(sum(s**-2 for s in sigmas))
  want = analytic_gaussian_epsilon(combined, delta)
  events = [dp_accounting.GaussianDpEvent(s) for s in sigmas]
  got = accounting.epsilon_of_events(events, delta, "pld")
  assert got == pytest.approx(want, rel=1e-3)
  same = accounting.epsilon_of_events(dp_accounting.ComposedDpEvent(events), delta, "pld")
  assert same == got
  got_rdp = accounting.epsilon_of_events(events, delta, "rdp")
  direct = dp_accounting.rdp.RdpAccountant()
  direct.compose(dp_accounting.GaussianDpEvent(combined))
  assert got_rdp == pytest.approx(direct.get_epsilon(delta), rel=1e-9)


def test_unsupported_event_is_a_config_error():
  event = dp_accounting.SampledWithReplacementDpEvent(100, 10, dp_accounting.GaussianDpEvent(1))
  with pytest.raises(ConfigError, match="cannot account"):
    accounting.epsilon_of_events([event], 1e-5, "rdp")


@pytest.mark.parametrize("target,q,steps,delta,sampling,acc", [
    (2.0, 0.01, 1000, 1e-5, "poisson", "rdp"),
    (0.5, 0.004, 2000, 1e-6, "poisson", "rdp"),
    (8.0, 0.01, 500, 1e-5, "without_replacement", "rdp"),
    (4.0, 0.02, 300, 1e-5, "shuffle", "rdp"),
    (2.0, 0.05, 100, 1e-5, "poisson", "pld"),
    (1.0, 0.1, 20, 1e-5, "shuffle", "pld"),
])
def test_calibration_round_trips(target, q, steps, delta, sampling, acc):
  sigma = accounting.calibrate_noise(target, q, steps, delta, sampling=sampling,
                                     accountant=acc)
  def eps(s):
    return accounting.epsilon(s, q, steps, delta, sampling=sampling, accountant=acc)
  assert eps(sigma) == pytest.approx(target, rel=2e-3)
  assert eps(sigma) <= target * 1.001
  assert eps(sigma * 0.99) > target  # and it is (about) the least noise that does it


def test_pld_calibration_needs_no_more_noise_than_rdp():
  kwargs = dict(sampling="poisson")
  sigma_rdp = accounting.calibrate_noise(2.0, 0.05, 100, 1e-5, accountant="rdp", **kwargs)
  sigma_pld = accounting.calibrate_noise(2.0, 0.05, 100, 1e-5, accountant="pld", **kwargs)
  assert 0.5 * sigma_rdp < sigma_pld <= sigma_rdp


def test_unreachable_target_names_the_numbers():
  with pytest.raises(ConfigError) as err:
    accounting.calibrate_noise(0.001, 1.0, 2_000_000, 1e-5)
  message = str(err.value)
  assert "0.001" in message and "unreachable" in message
  assert "1000" in message and "2000000 steps" in message and "1e-05" in message


def test_nonpositive_target_is_a_config_error():
  with pytest.raises(ConfigError, match="target epsilon"):
    accounting.calibrate_noise(0.0, 0.01, 100, 1e-5)


def test_check_delta():
  accounting.check_delta(1e-5, 1000)
  accounting.check_delta(accounting.default_delta(50_000), 50_000)
  for bad in (0.0, -1e-5, 1e-3, 0.5):
    with pytest.raises(ConfigError) as err:
      accounting.check_delta(bad, 1000)
    assert str(bad) in str(err.value) and "n=1000" in str(err.value)


def test_default_delta():
  assert accounting.default_delta(1000) == pytest.approx(1000**-1.1)
  assert accounting.default_delta(1000) < 1 / 1000


def test_check_budget():
  spec = accounting.DpSgdSpec(1.0, 0.01, 1000, 1e-5)
  final = accounting.check_budget(spec, 3.0)
  assert final == pytest.approx(accounting.epsilon(1.0, 0.01, 1000, 1e-5))
  with pytest.raises(ConfigError) as err:
    accounting.check_budget(spec, 1.0)
  assert f"epsilon={final:.4g}" in str(err.value) and "budget of 1.0" in str(err.value)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sampling="uniform"), "sampling"), (dict(accountant="gdp"), "accountant"),
    (dict(sampling_probability=0.0), "probability"), (dict(steps=-1), "steps"),
    (dict(noise_multiplier=-1.0), "noise"), (dict(delta=1.0), "delta"),
])
def test_spec_rejects_bad_values(kwargs, match):
  args = dict(noise_multiplier=1.0, sampling_probability=0.01, steps=10, delta=1e-5)
  args.update(kwargs)
  with pytest.raises(ConfigError, match=match):
    accounting.DpSgdSpec(**args)


@pytest.mark.parametrize("sampling,acc", [("poisson", "rdp"), ("shuffle", "pld")])
def test_budget_tracker(sampling, acc):
  spec = accounting.DpSgdSpec(1.0, 0.02, 400, 1e-5, sampling, acc)
  tracker = accounting.BudgetTracker(spec)
  assert tracker.epsilon_at(0) == 0.0
  values = [tracker.epsilon_at(step) for step in (1, 50, 100, 399, 400)]
  assert values == sorted(values) and values[0] > 0
  assert tracker.final_epsilon == accounting.spec_epsilon(spec)
  assert tracker.epsilon_at(100) == accounting.epsilon(
      1.0, 0.02, 100, 1e-5, sampling=sampling, accountant=acc)


def test_budget_tracker_rdp_is_cheap_enough_for_every_log_step():
  tracker = accounting.BudgetTracker(accounting.DpSgdSpec(1.0, 0.01, 100_000, 1e-5))
  began = time.perf_counter()
  for step in range(1000, 21_000, 1000):
    tracker.epsilon_at(step)
  assert (time.perf_counter() - began) / 20 < 0.5  # ~22 ms measured; generous for CI


@pytest.mark.parametrize("target", [0.1, 1.0, 8.0])
def test_calibrate_gaussian_matches_the_analytic_gaussian(target):
  delta = 1e-5
  sigma_pld = accounting.calibrate_gaussian(target, delta, accountant="pld")
  assert analytic_gaussian_epsilon(sigma_pld, delta) == pytest.approx(target, rel=1e-2)
  sigma_rdp = accounting.calibrate_gaussian(target, delta)
  assert sigma_rdp >= sigma_pld  # RDP's bound is looser, so it needs more noise
  assert accounting.epsilon_of_events(dp_accounting.GaussianDpEvent(sigma_rdp),
                                      delta) == pytest.approx(target, rel=1e-3)


def test_composed_gaussians_equal_one_gaussian_with_summed_precision():
  # 1/σ² adds: Gaussians (2, 3, 3, 3) together equal one with σ = (1/4 + 3/9)^(-1/2).
  sigmas = [2.0, 3.0, 3.0, 3.0]
  single = sum(s ** -2 for s in sigmas) ** -0.5
  events = [dp_accounting.GaussianDpEvent(s) for s in sigmas]
  assert accounting.epsilon_of_events(events, 1e-6, "pld") == pytest.approx(
      analytic_gaussian_epsilon(single, 1e-6), rel=1e-2)


def test_calibrate_gaussian_refuses_unreachable_targets():
  with pytest.raises(ConfigError, match="outside"):
    accounting.calibrate_gaussian(1e4, 1e-5)
  with pytest.raises(ConfigError, match="> 0"):
    accounting.calibrate_gaussian(0.0, 1e-5)
