"""Gaussian clusters whose class boundaries rotate at per-cluster rates: drift with a known truth.

Source `drifting_mixture` (issue 20), the cleanest test of instance-conditional reweighting:
sub-populations drift at different speeds, some not at all, so no single decay of old data is
right for every example. Deterministic in `data.seed`; see jaxml/data/drift.py for the shared
conventions (periods, Eval-Fix splits, ages, groups).

The generative model, for C = len(rates) clusters in `dim` dimensions. Cluster c has centre
mu_c = spread * (cos(2 pi c / C), sin(2 pi c / C), 0, ..., 0); an example of period p is in
cluster c with probability 1 / C (exactly: each period's examples are split over the clusters
evenly, to one, in a random order), x = mu_c + N(0, I), and its label is the side of a line
(hyperplane) through the centre,

  label = 1 if n_c(p) . (x - mu_c) > 0 else 0,   n_c(p) = (cos a_c(p), sin a_c(p), 0, ..., 0),
  a_c(p) = 2 pi c / C + rates[c] * p,

so the normal starts pointing away from the origin and turns by rates[c] radians per period
(`boundary_angles`). Labels are noise-free: the Bayes-optimal rule of cluster c in period p is
that line, and it moves by rates[c] * p from period 0. Features and the label frequencies
(1/2 per cluster) do not drift; only P(label | x) does.

Fields: `features` float32 [dim]; `label` int32 (2 classes); `period` int32 (the timestamp);
`cluster` int32. Task: 2-class classification of `label` from `features`, groups
("period", "cluster"). Train: periods [0, train_periods), test: [train_periods, periods),
`examples_per_period` each.

Config (all optional): `seed` (0), `periods` (15), `train_periods` (10), `examples_per_period`
(400), `rates` ((0, 0.05, 0.15, 0.3) radians per period, one per cluster, >= 0), `dim` (2,
>= 2), `spread` (4.0, > 0: the centres' distance from the origin), `eval_split` ("test" or
"validation", an independent draw of the test periods).
"""

from __future__ import annotations

import numpy as np

from jaxml.data import drift
from jaxml.data.base import Dataset, Field
from jaxml.errors import ConfigError

NAME = "drifting_mixture"
DEFAULTS = {"seed": 0, "periods": 15, "train_periods": 10, "examples_per_period": 400,
            "rates": (0.0, 0.05, 0.15, 0.3), "dim": 2, "spread": 4.0, "eval_split": "test"}


def settings(data_config) -> dict:
  values = drift.settings(data_config, DEFAULTS, NAME)
  drift.check_integer(values, "dim", 2, NAME)
  spread = values["spread"]
  if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread > 0:
    raise ConfigError(f"{NAME}: data.spread={spread!r} must be a number > 0")
  return values


def drift_rates(data_config) -> np.ndarray:
  """The true rate of each cluster, radians per period [C]."""
  return settings(data_config)["rates"]


def centres(values: dict) -> np.ndarray:
  """[C, dim] cluster centres, evenly spaced on a circle of radius `spread`."""
  num_clusters = len(values["rates"])
  angles = 2 * np.pi * np.arange(num_clusters) / num_clusters
  out = np.zeros((num_clusters, values["dim"]))
  out[:, 0], out[:, 1] = np.cos(angles), np.sin(angles)
  return values["spread"] * out


def boundary_angles(values: dict, period) -> np.ndarray:
  """[C] angles (radians) of each cluster's boundary normal in `period`."""
  num_clusters = len(values["rates"])
  return 2 * np.pi * np.arange(num_clusters) / num_clusters + values["rates"] * period


def _draw(values: dict, rng: np.random.Generator, period: int) -> dict:
  n, num_clusters = values["examples_per_period"], len(values["rates"])
  cluster = rng.permutation(np.arange(n) % num_clusters).astype(np.int32)
  centre = centres(values)[cluster]
  features = (centre + rng.standard_normal((n, values["dim"]))).astype(np.float32)
  # The label is the side of the stored (float32) features, so the rule holds exactly.
  offset = features.astype(np.float64) - centre
  angle = boundary_angles(values, period)[cluster]
  side = np.cos(angle) * offset[:, 0] + np.sin(angle) * offset[:, 1]
  return {"features": features, "label": (side > 0).astype(np.int32), "cluster": cluster}


def load(data_config) -> Dataset:
  values = settings(data_config)
  splits = drift.generate(values, lambda rng, period, _: _draw(values, rng, period))
  num_clusters = len(values["rates"])
  return drift.dataset(splits, {"features": Field((values["dim"],), "float32")}, 2,
                       [str(p) for p in range(values["periods"])],
                       [str(c) for c in range(num_clusters)], NAME, class_names=("0", "1"))
