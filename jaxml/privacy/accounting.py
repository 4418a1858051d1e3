"""Privacy accounting: (ε, δ) of DP-SGD and of composed Gaussian releases, on the host.

Everything here runs on the host with numpy and `dp_accounting` (rule 4: no accounting in
jitted code) and nothing here writes an RDP or PLD formula by hand: each mechanism is
described as a `dp_accounting` event and an accountant turns it into ε.

What each batch-selection scheme is accounted as, and under which neighbouring relation
(the relation is part of the guarantee: "(ε, δ)-DP" means nothing without it):

- `poisson`: every example joins each step's batch independently with probability q
  (`sampling.poisson_batch_indices`). Event: `PoissonSampledDpEvent(q, GaussianDpEvent(σ))`
  self-composed `steps` times, under ADD_OR_REMOVE_ONE, where adding or removing one
  example moves the clipped-gradient sum by at most C, so the Gaussian's noise multiplier
  is σ = noise std / C. RDP and PLD both account it.
- `without_replacement`: each step draws a uniformly random subset of exactly b = q·n
  examples, independently of other steps (`sampling.fixed_size_batch_indices`). Event:
  `SampledWithoutReplacementDpEvent(n, b, GaussianDpEvent(σ / 2))`, self-composed, under
  REPLACE_ONE, the only relation dp_accounting 0.6 supports for it (its RDP bound is
  Theorem 27 of Wang, Balle & Kasiviswanathan 2019, stated for replace-one neighbours of
  a dataset whose size is public). Replacing one example moves the clipped sum by up to
  2C, so the event's noise multiplier is σ / 2; passing σ would under-report ε. Only the
  RDP accountant supports this event in dp_accounting 0.6; asking for PLD is a ConfigError.
- `shuffle`: batches are consecutive slices of a fresh permutation every epoch
  (`sampling.shuffled_batch_indices`, the same order as `jaxml.data.pipeline`). This is not
  independent sampling per step, so neither event above describes it, and dp_accounting
  has no shuffling-amplification event (known shuffle "amplification" arguments do not
  give the Poisson numbers; Chua et al. 2024). What does hold, for replace-one neighbours:
  an example takes part in at most one step per epoch, so over `steps` steps in at most
  k = ceil(steps·q) of them, each a Gaussian release of a sum whose replace-one
  sensitivity is 2C; the other steps do not depend on it. Event: `GaussianDpEvent(σ / 2)`
  self-composed k times, no amplification. It is much larger than the Poisson ε at the
  same σ: choose `poisson` to get amplification.

  The event is given to the accountant under ADD_OR_REMOVE_ONE, on purpose: dp_accounting
  0.6 reads a bare `GaussianDpEvent` differently under REPLACE_ONE in its two accountants
  (RDP reads the multiplier as std / sensitivity whatever the relation; PLD reads it as
  std / C and shifts by ±C, doubling the sensitivity itself). For an unsampled Gaussian
  the relation only sets the sensitivity, so stating the replace-one sensitivity (σ / 2)
  as a plain Gaussian of sensitivity 1 is read the same way by both.

So `poisson` reports an add/remove-one guarantee and the two fixed-size schemes a
replace-one guarantee (replace-one ε-DP follows from add/remove-one 2ε-DP, not the reverse).
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import logging
import math
from collections.abc import Sequence

import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp

from jaxml.errors import ConfigError

SAMPLINGS = ("poisson", "without_replacement", "shuffle")


class _DropRdpConvergenceWarnings(logging.Filter):
  """dp_accounting logs one warning per RDP order it excludes (at small σ, every few ms);
  excluding an order only loosens the bound, so the noise would bury real warnings."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.pathname.endswith("rdp_privacy_accountant.py")
                and "failed to converge" in record.getMessage())


logging.getLogger("absl").addFilter(_DropRdpConvergenceWarnings())

ACCOUNTANTS = ("rdp", "pld")
NeighborRel = dp_accounting.NeighboringRelation

# Calibration searches σ in this bracket. Below 0.1 no realistic (q, steps) gives a useful
# ε and PLD construction becomes very slow (σ = 0.2 took 6 s, σ = 0.01 did not finish in
# 5 min here); above 1e3 the signal is gone at any batch size a host can hold.
SIGMA_BRACKET = (0.1, 1e3)


@dataclasses.dataclass(frozen=True)
class DpSgdSpec:
  """Everything that determines the ε of a DP-SGD run; validated on construction."""
  noise_multiplier: float
  sampling_probability: float
  steps: int
  delta: float
  sampling: str = "poisson"
  accountant: str = "rdp"

  def __post_init__(self):
    if self.sampling not in SAMPLINGS:
      raise ConfigError(f"dp sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
    if self.accountant not in ACCOUNTANTS:
      raise ConfigError(f"dp accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
    if self.sampling == "without_replacement" and self.accountant == "pld":
      raise ConfigError(
          "dp sampling='without_replacement' cannot be accounted with accountant='pld': "
          "dp_accounting 0.6's PLD accountant has no SampledWithoutReplacementDpEvent; "
          "use accountant='rdp' or sampling='poisson'")
    if not 0 < self.sampling_probability <= 1:
      raise ConfigError(
          f"dp sampling probability must be in (0, 1], got {self.sampling_probability}")
    if self.noise_multiplier < 0:
      raise ConfigError(f"dp noise multiplier must be >= 0, got {self.noise_multiplier}")
    if self.steps < 0:
      raise ConfigError(f"dp steps must be >= 0, got {self.steps}")
    if not 0 < self.delta < 1:
      raise ConfigError(f"dp delta must be in (0, 1), got {self.delta}")


def neighboring_relation(sampling: str) -> NeighborRel:
  """The relation the accountant is built with for each scheme (see the module docstring)."""
  if sampling == "without_replacement":
    return NeighborRel.REPLACE_ONE
  return NeighborRel.ADD_OR_REMOVE_ONE


def shuffle_participations(sampling_probability: float, steps: int) -> int:
  """Most steps one example joins in `steps` steps of epoch-permuted batches of q·n."""
  # steps·q = steps·b/n is the number of epochs the stream touches; the small slack
  # stops a float product like 3·(1/3) = 1.0000000000000002 from adding an epoch.
  return math.ceil(steps * sampling_probability - 1e-9)


def _as_sizes(sampling_probability: float) -> tuple[int, int]:
  # dp_accounting's event wants integer (n, b) but its RDP bound only uses b/n; q = b/n
  # from a real dataset is recovered exactly (as the reduced fraction) for n <= 1e9.
  ratio = fractions.Fraction(sampling_probability).limit_denominator(10**9)
  return ratio.denominator, ratio.numerator


def dp_sgd_event(noise_multiplier: float, sampling_probability: float, steps: int,
                 sampling: str = "poisson") -> dp_accounting.DpEvent:
  """The `dp_accounting` event of `steps` DP-SGD steps with noise std σ·C on a clipped sum."""
  if steps == 0 or (sampling == "shuffle" and
                    shuffle_participations(sampling_probability, steps) == 0):
    return dp_accounting.NoOpDpEvent()  # PLD would divide by a zero count
  if sampling == "poisson":
    step = dp_accounting.PoissonSampledDpEvent(
        sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier))
    return dp_accounting.SelfComposedDpEvent(step, steps)
  # Replace-one sensitivity of a sum of C-clipped terms is 2C.
  gaussian = dp_accounting.GaussianDpEvent(noise_multiplier / 2)
  if sampling == "without_replacement":
    n, b = _as_sizes(sampling_probability)
    step = dp_accounting.SampledWithoutReplacementDpEvent(n, b, gaussian)
    return dp_accounting.SelfComposedDpEvent(step, steps)
  if sampling == "shuffle":
    return dp_accounting.SelfComposedDpEvent(
        gaussian, shuffle_participations(sampling_probability, steps))
  raise ConfigError(f"dp sampling must be one of {SAMPLINGS}, got {sampling!r}")


def make_accountant(accountant: str,
                    relation: NeighborRel = NeighborRel.ADD_OR_REMOVE_ONE
                    ) -> dp_accounting.PrivacyAccountant:
  if accountant == "rdp":
    return rdp.RdpAccountant(neighboring_relation=relation)
  if accountant == "pld":
    return pld.PLDAccountant(neighboring_relation=relation)
  raise ConfigError(f"dp accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


def epsilon_of_events(events: dp_accounting.DpEvent | Sequence[dp_accounting.DpEvent],
                      delta: float, accountant: str = "rdp", *,
                      relation: NeighborRel = NeighborRel.ADD_OR_REMOVE_ONE) -> float:
  """ε at `delta` of the adaptive composition of `events` (e.g. several Gaussian releases).

  A Gaussian release of a statistic whose sensitivity is Δ, with noise std s, is
  `GaussianDpEvent(s / Δ)`; DP-LS/Newton/FC pass one per privatised statistic. Keep the
  default relation for such unsampled releases and put the relation into Δ (e.g. 2C for
  replace-one): under REPLACE_ONE, dp_accounting's PLD doubles Δ itself and RDP does not.
  """
  if not isinstance(events, dp_accounting.DpEvent):
    events = dp_accounting.ComposedDpEvent(list(events))
  acc = make_accountant(accountant, relation)
  if not acc.supports(events):
    raise ConfigError(
        f"the {accountant} accountant under {relation.name} cannot account {events}")
  acc.compose(events)
  return float(acc.get_epsilon(delta))


def epsilon(noise_multiplier: float, sampling_probability: float, steps: int, delta: float,
            *, sampling: str = "poisson", accountant: str = "rdp") -> float:
  """ε at `delta` after `steps` DP-SGD steps (see the module docstring for the relation)."""
  spec = DpSgdSpec(noise_multiplier, sampling_probability, steps, delta, sampling, accountant)
  return spec_epsilon(spec)


def spec_epsilon(spec: DpSgdSpec, steps: int | None = None) -> float:
  """ε of `spec` after `steps` steps (default: all of them)."""
  event = dp_sgd_event(spec.noise_multiplier, spec.sampling_probability,
                       spec.steps if steps is None else steps, spec.sampling)
  return epsilon_of_events(event, spec.delta, spec.accountant,
                           relation=neighboring_relation(spec.sampling))


def calibrate_noise(target_epsilon: float, sampling_probability: float, steps: int,
                    delta: float, *, sampling: str = "poisson", accountant: str = "rdp",
                    tol: float = 1e-4) -> float:
  """The smallest noise multiplier σ (within `tol`) whose run has ε <= `target_epsilon`.

  Raises ConfigError when no σ in `SIGMA_BRACKET` reaches the target. When even the
  bracket's lower end meets it, returns that lower end (0.1): the target barely constrains.
  """
  if target_epsilon <= 0:
    raise ConfigError(f"dp target epsilon must be > 0, got {target_epsilon}")
  lo, hi = SIGMA_BRACKET

  def eps_at(sigma, acc=accountant):
    return epsilon(sigma, sampling_probability, steps, delta, sampling=sampling,
                   accountant=acc)

  worst = eps_at(hi)
  if worst > target_epsilon:
    raise ConfigError(
        f"dp target epsilon={target_epsilon} is unreachable: even noise multiplier {hi:g} "
        f"gives epsilon={worst:.4g} at sampling probability {sampling_probability}, "
        f"{steps} steps, delta={delta} ({sampling}, {accountant}); raise the target, "
        "lower the sampling probability or train fewer steps")
  if accountant == "pld":
    # PLD is tighter than RDP, so the RDP σ is an upper end; starting the search just
    # below it keeps PLD away from small σ, where it gets slow.
    hi = calibrate_noise(target_epsilon, sampling_probability, steps, delta,
                         sampling=sampling, accountant="rdp", tol=tol)
    if eps_at(hi) > target_epsilon:  # PLD above RDP only by discretisation slack
      hi = SIGMA_BRACKET[1]
    elif eps_at(max(lo, hi / 2)) > target_epsilon:
      lo = max(lo, hi / 2)
  if eps_at(lo) <= target_epsilon:
    return lo

  def make_event(sigma):
    return dp_sgd_event(sigma, sampling_probability, steps, sampling)

  return float(dp_accounting.calibrate_dp_mechanism(
      lambda: make_accountant(accountant, neighboring_relation(sampling)), make_event,
      target_epsilon, delta, dp_accounting.ExplicitBracketInterval(lo, hi), tol=tol))


def calibrate_gaussian(target_epsilon: float, delta: float, *, accountant: str = "rdp",
                       tol: float = 1e-4) -> float:
  """The smallest noise multiplier σ (within `tol`) of one unsampled Gaussian release with
  ε <= `target_epsilon` at `delta`.

  A composition of Gaussian releases with multipliers σᵢ has exactly the privacy loss of one
  Gaussian with 1/σ² = Σ 1/σᵢ² (under RDP and PLD alike), so this σ is the budget that
  DP-LS, DP-Newton and DP-FC split between their releases.
  """
  if target_epsilon <= 0:
    raise ConfigError(f"target epsilon must be > 0, got {target_epsilon}")
  lo, hi = SIGMA_BRACKET  # ε from ~100 down to ~1e-2 at the δ in use
  make = lambda: make_accountant(accountant)
  for end, what in ((hi, "smallest"), (lo, "largest")):
    eps = epsilon_of_events(dp_accounting.GaussianDpEvent(end), delta, accountant)
    if (eps > target_epsilon) == (what == "smallest"):
      raise ConfigError(f"target epsilon={target_epsilon} at delta={delta} is outside what "
                        f"noise multipliers in [{lo:g}, {hi:g}] give (the {what} is {eps:.4g})")
  return float(dp_accounting.calibrate_dp_mechanism(
      make, dp_accounting.GaussianDpEvent, target_epsilon, delta,
      dp_accounting.ExplicitBracketInterval(lo, hi), tol=tol))


def default_delta(num_examples: int) -> float:
  """δ = n^-1.1: below 1/n by a margin that grows with n (Mehta et al. use it)."""
  return float(num_examples) ** -1.1


def check_delta(delta: float, num_examples: int) -> None:
  """ConfigError unless 0 < δ < 1/n: with δ >= 1/n, releasing one random example is DP."""
  if not 0 < delta < 1 / num_examples:
    raise ConfigError(
        f"dp delta={delta} must be in (0, 1/n) = (0, {1 / num_examples:.3g}) for "
        f"n={num_examples} training examples; n**-1.1 = {default_delta(num_examples):.3g} "
        "is the usual choice")


def check_budget(spec: DpSgdSpec, max_epsilon: float) -> float:
  """The run's final ε; ConfigError (before anything compiles) if it exceeds the budget."""
  final = spec_epsilon(spec)
  if final > max_epsilon:
    raise ConfigError(
        f"dp run would spend epsilon={final:.4g} after {spec.steps} steps, over its budget "
        f"of {max_epsilon} (noise multiplier {spec.noise_multiplier}, sampling probability "
        f"{spec.sampling_probability}, delta={spec.delta}, {spec.sampling}, "
        f"{spec.accountant}); raise the noise, lower the steps, or set target_epsilon")
  return final


class BudgetTracker:
  """ε spent after each step, for the runner to log; memoised per step.

  Recomputing is cheap enough not to compose incrementally (measured here, 2 CPU cores):
  RDP ~22 ms for any step count (it scales the one-step RDP curve), RDP without
  replacement ~160 ms, PLD 0.3-0.5 s at σ=1 and more at small σ. Log PLD runs sparsely.
  """

  def __init__(self, spec: DpSgdSpec):
    self.spec = spec
    self.epsilon_at = functools.lru_cache(maxsize=64)(self._epsilon_at)

  def _epsilon_at(self, step: int) -> float:
    """ε after `step` completed steps."""
    return 0.0 if step <= 0 else spec_epsilon(self.spec, step)

  @property
  def final_epsilon(self) -> float:
    return self.epsilon_at(self.spec.steps)
