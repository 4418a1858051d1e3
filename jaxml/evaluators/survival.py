"""Survival analysis of a risk score on the host (NumPy/SciPy): Kaplan-Meier curves with
Greenwood confidence bands, the log-rank test across groups, Cox proportional hazards by
Newton-Raphson on the partial likelihood (Efron or Breslow ties), Harrell's concordance index,
and the quantile groups (quartiles) of a score that the curves are drawn for.

Times are non-negative durations to the event or to censoring; events are 1 where the event
was observed, 0 where the individual was censored. The conventions are lifelines' (its
`KaplanMeierFitter`, `logrank_test`/`multivariate_logrank_test`, `CoxPHFitter` and
`utils.concordance_index` are the tests' references), with two differences stated where they
arise: a confidence band is 0 where the curve is 0 (lifelines reports 1 there), and
`concordance_index` takes a *risk* score (higher = earlier event), as a liability score is.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from jaxml.errors import ConfigError


def _first_bad(mask: np.ndarray) -> str:
  rows = np.flatnonzero(mask)
  return f"{len(rows)} rows, the first row {int(rows[0])}"


def _numbers(values, name: str) -> np.ndarray:
  values = np.asarray(values)
  if values.ndim != 1:
    raise ConfigError(f"{name} must be 1-D, got shape {values.shape}")
  if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
    raise ConfigError(f"{name} must be numbers, got dtype {values.dtype}")
  values = values.astype(np.float64)
  if not np.all(np.isfinite(values)):
    raise ConfigError(f"{name} must be finite: NaN or infinite in "
                      f"{_first_bad(~np.isfinite(values))}")
  return values


def survival_data(times, events, scores=None, scores_name: str = "scores"):
  """(times, events[, scores]) as float64, bool[, float64] arrays [N], or one ConfigError
  naming the problem (and the first bad row): times finite and >= 0, events 0/1, one length."""
  times, events = _numbers(times, "times"), _numbers(events, "events")
  if len(times) != len(events):
    raise ConfigError(f"times ({len(times)}) and events ({len(events)}) must have one length")
  if len(times) == 0:
    raise ConfigError("no individuals: times and events are empty")
  if np.any(times < 0):
    raise ConfigError(f"times must be >= 0: negative in {_first_bad(times < 0)}")
  if np.any((events != 0) & (events != 1)):
    raise ConfigError("events must be 0 (censored) or 1 (observed): other values in "
                      f"{_first_bad((events != 0) & (events != 1))}")
  if scores is None:
    return times, events.astype(bool)
  scores = _numbers(scores, scores_name)
  if len(scores) != len(times):
    raise ConfigError(f"{scores_name} ({len(scores)}) and times ({len(times)}) must have "
                      "one length")
  return times, events.astype(bool), scores


def _z(level: float) -> float:
  if not 0 < level < 1:
    raise ConfigError(f"confidence level must be in (0, 1), got {level}")
  return float(stats.norm.ppf(0.5 + level / 2))


@dataclasses.dataclass(frozen=True)
class KaplanMeier:
  """The Kaplan-Meier curve at each distinct observed time (event or censoring), ascending;
  `survival` is S just after that time, `variance` Greenwood's, and `lower`/`upper` the
  pointwise band at `level` from the log(-log S) transform (lifelines' "exponential
  Greenwood"), which stays inside [0, 1]."""
  times: np.ndarray
  at_risk: np.ndarray
  events: np.ndarray
  censored: np.ndarray
  survival: np.ndarray
  variance: np.ndarray
  lower: np.ndarray
  upper: np.ndarray
  level: float

  def survival_at(self, times) -> np.ndarray:
    """S at the given times, a right-continuous step: 1 before the first observed time."""
    index = np.searchsorted(self.times, np.asarray(times, np.float64), side="right")
    return np.concatenate([[1.0], self.survival])[index]

  def median(self) -> float:
    """The first time S falls to 0.5 or below; inf if it never does."""
    below = np.flatnonzero(self.survival <= 0.5)
    return float(self.times[below[0]]) if len(below) else float("inf")


def kaplan_meier(times, events, level: float = 0.95) -> KaplanMeier:
  """The Kaplan-Meier estimate of survival from durations [N] and event indicators [N]."""
  times, events = survival_data(times, events)
  z = _z(level)
  distinct, inverse = np.unique(times, return_inverse=True)
  leaving = np.bincount(inverse, minlength=len(distinct))
  deaths = np.bincount(inverse, weights=events, minlength=len(distinct))
  at_risk = len(times) - np.cumsum(leaving) + leaving
  survival = np.cumprod(1 - deaths / at_risk)
  with np.errstate(divide="ignore", invalid="ignore"):
    # sum d / (n (n - d)): infinite from a time where everyone at risk dies (S = 0 on).
    greenwood = np.cumsum(deaths / (at_risk * (at_risk - deaths)))
    variance = np.where(survival > 0, survival ** 2 * greenwood, 0.0)
    # log(-log S) +- z * sqrt(greenwood) / |log S|, mapped back: S ** exp(-+c).
    spread = z * np.sqrt(greenwood) / -np.log(survival)
    inside = (survival > 0) & (survival < 1)
    lower = np.where(inside, survival ** np.exp(spread), survival)
    upper = np.where(inside, survival ** np.exp(-spread), survival)
  return KaplanMeier(distinct, at_risk.astype(np.int64), deaths.astype(np.int64),
                     (leaving - deaths).astype(np.int64), survival, variance, lower, upper,
                     level)


def _group_codes(groups, count: int) -> tuple[np.ndarray, np.ndarray]:
  groups = np.asarray(groups)
  if groups.ndim != 1 or len(groups) != count:
    raise ConfigError(f"groups must be 1-D with one entry per individual ({count}), got shape "
                      f"{groups.shape}")
  if groups.dtype.kind == "f" and not np.all(np.isfinite(groups)):
    raise ConfigError(f"groups must be finite: NaN in {_first_bad(~np.isfinite(groups))}")
  names, codes = np.unique(groups, return_inverse=True)
  # Plain Python values (np.str_ -> str, np.int64 -> int), as dictionary keys and in tables.
  return [getattr(name, "item", lambda n=name: n)() for name in names], codes


def kaplan_meier_by_group(times, events, groups, level: float = 0.95) -> dict:
  """{group: KaplanMeier} for each distinct value of groups [N], in sorted order."""
  times, events = survival_data(times, events)
  names, codes = _group_codes(groups, len(times))
  return {name: kaplan_meier(times[codes == g], events[codes == g], level)
          for g, name in enumerate(names)}


@dataclasses.dataclass(frozen=True)
class LogRank:
  """The log-rank test that groups share one hazard: chi-squared `statistic` on `df` = groups
  - 1 degrees of freedom, and each group's observed and expected events."""
  statistic: float
  df: int
  p_value: float
  groups: tuple
  observed: np.ndarray
  expected: np.ndarray


def logrank_test(times, events, groups) -> LogRank:
  """The log-rank test across the distinct values of groups [N] (two or more): at each event
  time the deaths are shared out hypergeometrically over those at risk in each group."""
  times, events = survival_data(times, events)
  names, codes = _group_codes(groups, len(times))
  if len(names) < 2:
    raise ConfigError(f"the log-rank test needs two or more groups, got {len(names)}")
  distinct, inverse = np.unique(times, return_inverse=True)
  shape = (len(distinct), len(names))
  leaving, deaths = np.zeros(shape), np.zeros(shape)
  np.add.at(leaving, (inverse, codes), 1.0)
  np.add.at(deaths, (inverse, codes), events.astype(np.float64))
  at_risk = np.cumsum(leaving[::-1], axis=0)[::-1]
  keep = deaths.sum(axis=1) > 0
  at_risk, deaths = at_risk[keep], deaths[keep]
  n, d = at_risk.sum(axis=1), deaths.sum(axis=1)
  share = at_risk / n[:, None]
  expected = (d[:, None] * share).sum(axis=0)
  observed = deaths.sum(axis=0)
  # Hypergeometric covariance; a time with a single individual at risk contributes nothing.
  factor = np.where(n > 1, d * (n - d) / np.maximum(n - 1, 1), 0.0)
  covariance = (np.einsum("t,tg,gh->gh", factor, share, np.eye(len(names)))
                - np.einsum("t,tg,th->gh", factor, share, share))
  difference = (observed - expected)[:-1]
  statistic = float(difference @ np.linalg.pinv(covariance[:-1, :-1]) @ difference)
  df = len(names) - 1
  return LogRank(statistic, df, float(stats.chi2.sf(statistic, df)),
                 tuple(names), observed, expected)


def concordance_index(times, events, risk_scores) -> float:
  """Harrell's C of a risk score (higher = earlier event): among comparable pairs, the share
  where the individual whose event came first has the higher score, tied scores counting one
  half. A pair is comparable when the earlier time is an observed event, or when the times
  tie and only one is an event (the censored one outlived it). Equal to
  `lifelines.utils.concordance_index(times, -risk_scores, events)`; NaN with no comparable pair.
  O(N log N): a Fenwick tree over score ranks, filled from the latest time back."""
  times, events, risk = survival_data(times, events, risk_scores, "risk_scores")
  # Events before censorings at a tied time: each event's comparable partners are then
  # exactly the individuals after the last event at its time.
  order = np.lexsort((~events, times))
  times, events, risk = times[order], events[order], risk[order]
  ranks = np.unique(risk, return_inverse=True)[1] + 1
  size = int(ranks.max())
  start = np.searchsorted(times, times, side="left")
  deaths_at = np.bincount(start, weights=events, minlength=len(times)).astype(np.int64)
  partners_from = start + deaths_at[start]
  tree = [0] * (size + 1)

  def count_below(rank: int) -> int:  # inserted scores with rank <= `rank`
    total = 0
    while rank > 0:
      total += tree[rank]
      rank -= rank & -rank
    return total

  pairs = concordant = tied = 0
  inserted = len(times)
  for i in np.flatnonzero(events)[::-1]:
    while inserted > partners_from[i]:
      inserted -= 1
      position = int(ranks[inserted])
      while position <= size:
        tree[position] += 1
        position += position & -position
    below, at_most = count_below(int(ranks[i]) - 1), count_below(int(ranks[i]))
    pairs += len(times) - inserted
    concordant += below
    tied += at_most - below
  return (concordant + 0.5 * tied) / pairs if pairs else float("nan")


def quantile_groups(scores, groups: int = 4) -> np.ndarray:
  """The quantile group (0 = lowest) of each score [N]: intervals (q_k, q_k+1] between the
  linearly interpolated quantiles, the lowest closed; `pandas.qcut(scores, groups,
  labels=False)`. Ties so heavy that two quantiles coincide are an error (a group would be
  empty)."""
  scores = _numbers(scores, "scores")
  if groups < 2 or len(scores) < groups:
    raise ConfigError(f"{groups} quantile groups need groups >= 2 and at least that many "
                      f"scores, got {len(scores)}")
  edges = np.quantile(scores, np.linspace(0, 1, groups + 1))
  if np.any(np.diff(edges) == 0):
    raise ConfigError(f"scores are too tied for {groups} quantile groups: quantiles "
                      f"{edges.tolist()} repeat")
  return np.searchsorted(edges[1:-1], scores, side="left")


@dataclasses.dataclass(frozen=True)
class CoxFit:
  """A fitted Cox model: per covariate the coefficient (log hazard ratio), its standard error
  from the observed information, Wald z and two-sided p, the hazard ratio and its CI at
  `level`; for the model the partial log-likelihood (fitted and at 0), the likelihood-ratio
  and score tests of all coefficients = 0, and the concordance of the linear predictor."""
  names: tuple
  coef: np.ndarray
  se: np.ndarray
  z: np.ndarray
  p_value: np.ndarray
  hazard_ratio: np.ndarray
  hr_lower: np.ndarray
  hr_upper: np.ndarray
  covariance: np.ndarray
  log_likelihood: float
  null_log_likelihood: float
  likelihood_ratio: float
  likelihood_ratio_p: float
  score_statistic: float
  score_p: float
  concordance: float
  ties: str
  iterations: int
  level: float

  def rows(self) -> list[dict]:
    """One plain-number row per covariate, for tables and JSON."""
    keys = ("coef", "se", "z", "p_value", "hazard_ratio", "hr_lower", "hr_upper")
    return [{"name": name, **{k: float(getattr(self, k)[j]) for k in keys}}
            for j, name in enumerate(self.names)]


def _covariates(covariates, count: int, names) -> tuple[np.ndarray, tuple]:
  x = np.asarray(covariates)
  x = x[:, None] if x.ndim == 1 else x
  if x.ndim != 2 or len(x) != count:
    raise ConfigError(f"covariates must be [N] or [N, P] with N = {count} individuals, got "
                      f"shape {np.shape(covariates)}")
  if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
    raise ConfigError(f"covariates must be numbers, got dtype {x.dtype}")
  x = x.astype(np.float64)
  if not np.all(np.isfinite(x)):
    raise ConfigError(f"covariates must be finite: NaN or infinite in "
                      f"{_first_bad(~np.all(np.isfinite(x), axis=1))}")
  names = tuple(str(n) for n in names) or tuple(f"x{j}" for j in range(x.shape[1]))
  if len(names) != x.shape[1]:
    raise ConfigError(f"{len(names)} covariate names for {x.shape[1]} covariates")
  constant = np.flatnonzero(np.all(x == x[:1], axis=0))
  if len(constant):
    raise ConfigError(f"covariate {names[constant[0]]!r} is constant: its hazard ratio is not "
                      "identified")
  return x, names


def _partial_likelihood(beta, x, events, risk_from, death_time, row_time, row_frac):
  """Partial log-likelihood, gradient and Hessian at beta. Individuals are sorted by time;
  `risk_from[k]` is the first one at risk at the k-th distinct event time, `death_time` maps
  each death to its k, and each death also gives one row (k, fraction): Efron's denominator
  R_k - fraction * D_k (fraction = j / d_k for the j-th of d_k tied deaths; 0 for Breslow)."""
  eta = x @ beta
  shift = eta.max()  # exp of a shifted predictor: the ratios below do not change
  w = np.exp(eta - shift)
  wx = w[:, None] * x
  wxx = wx[:, :, None] * x[:, None, :]
  suffix = lambda a: np.cumsum(a[::-1], axis=0)[::-1][risk_from]
  risk_w, risk_wx, risk_wxx = suffix(w), suffix(wx), suffix(wxx)
  k_count = len(risk_from)
  dead = np.flatnonzero(events)
  death_w = np.bincount(death_time, weights=w[dead], minlength=k_count)
  death_wx = np.zeros((k_count, x.shape[1]))
  np.add.at(death_wx, death_time, wx[dead])
  death_wxx = np.zeros((k_count, x.shape[1], x.shape[1]))
  np.add.at(death_wxx, death_time, wxx[dead])
  f = row_frac
  denominator = risk_w[row_time] - f * death_w[row_time]
  mean = (risk_wx[row_time] - f[:, None] * death_wx[row_time]) / denominator[:, None]
  second = ((risk_wxx[row_time] - f[:, None, None] * death_wxx[row_time])
            / denominator[:, None, None])
  log_likelihood = eta[dead].sum() - np.sum(np.log(denominator) + shift)
  gradient = x[dead].sum(axis=0) - mean.sum(axis=0)
  hessian = -(second.sum(axis=0) - mean.T @ mean)
  return float(log_likelihood), gradient, hessian


def cox_ph(times, events, covariates, names=(), *, ties: str = "efron", level: float = 0.95,
           max_iterations: int = 100, tolerance: float = 1e-11) -> CoxFit:
  """Cox proportional hazards of covariates [N] or [N, P], fitted by Newton-Raphson from 0 with
  step halving whenever the partial likelihood would fall; converged when the largest step is
  below `tolerance` (relative to the coefficients). ties: "efron" (lifelines' and R's default)
  or "breslow". A likelihood that keeps rising (covariates that separate the events) is an
  error, not a huge hazard ratio."""
  times, events = survival_data(times, events)
  x, names = _covariates(covariates, len(times), names)
  if ties not in ("efron", "breslow"):
    raise ConfigError(f"ties must be 'efron' or 'breslow', got {ties!r}")
  if not events.any():
    raise ConfigError("no observed event: a Cox model needs at least one")
  z_level = _z(level)
  order = np.argsort(times, kind="stable")
  times, events, x = times[order], events[order], x[order] - x.mean(axis=0)
  event_times, deaths = np.unique(times[events], return_counts=True)
  risk_from = np.searchsorted(times, event_times, side="left")
  death_time = np.searchsorted(event_times, times[events])
  row_time = np.repeat(np.arange(len(event_times)), deaths)
  row_frac = np.arange(len(row_time)) - np.repeat(np.cumsum(deaths) - deaths, deaths)
  row_frac = row_frac / np.repeat(deaths, deaths) if ties == "efron" else 0.0 * row_frac
  evaluate = lambda b: _partial_likelihood(b, x, events, risk_from, death_time, row_time,
                                           row_frac)

  beta = np.zeros(x.shape[1])
  null_ll, gradient, hessian = evaluate(beta)
  score_statistic = float(gradient @ np.linalg.lstsq(-hessian, gradient, rcond=None)[0])
  if np.linalg.matrix_rank(hessian) < len(beta):
    raise ConfigError(f"the covariates {list(names)} are collinear among those at risk: their "
                      "hazard ratios are not identified")
  ll, iterations, converged = null_ll, 0, False
  while not converged:
    try:
      step = np.linalg.solve(-hessian, gradient)
    except np.linalg.LinAlgError:
      step = np.full_like(beta, np.nan)
    if iterations == max_iterations or not np.all(np.isfinite(step)):
      raise ConfigError(f"the Cox fit did not converge in {iterations} Newton steps "
                        f"(coefficients {beta.tolist()}): do the covariates separate the "
                        "events?")
    iterations += 1
    for _ in range(30):
      candidate = evaluate(beta + step)
      if candidate[0] >= ll - 1e-12 * abs(ll):
        break
      step = step / 2
    beta = beta + step
    ll, gradient, hessian = candidate
    converged = np.max(np.abs(step)) < tolerance * (1 + np.max(np.abs(beta)))
  covariance = np.linalg.inv(-hessian)
  se = np.sqrt(np.diag(covariance))
  z = beta / se
  likelihood_ratio = max(2 * (ll - null_ll), 0.0)
  return CoxFit(
      names=names, coef=beta, se=se, z=z, p_value=2 * stats.norm.sf(np.abs(z)),
      hazard_ratio=np.exp(beta), hr_lower=np.exp(beta - z_level * se),
      hr_upper=np.exp(beta + z_level * se), covariance=covariance, log_likelihood=ll,
      null_log_likelihood=null_ll, likelihood_ratio=likelihood_ratio,
      likelihood_ratio_p=float(stats.chi2.sf(likelihood_ratio, len(beta))),
      score_statistic=score_statistic,
      score_p=float(stats.chi2.sf(score_statistic, len(beta))),
      concordance=concordance_index(times, events, x @ beta), ties=ties,
      iterations=iterations, level=level)
