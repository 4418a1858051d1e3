"""Time-stamped data under concept drift: what the drift sources share (issue 20).

Sources `drifting_mixture`, `drifting_digits` (generated, with a known truth) and `periods` (a
reader of real data kept one file or folder per period) follow these conventions, on which the
drift algorithms and their study rely:

- Time is a period index. Every example has an int32 scalar field `period` in [0, P), named
  by `Task.timestamp`; its `categories` name the periods ("0".."P-1", or the reader's file
  names such as "2012").
- Eval-Fix splits: `Dataset.train` holds the periods [0, train_periods) and `Dataset.test`
  the later periods [train_periods, P), every example of both sorted by period. A model is
  trained once on the past and scored on each future period.
- The age of a training example, relative to the end of training, is
  `train_periods - 1 - period` (`ages`): 0 for the last training period.
- Groups: `Task.groups = ("period", "cluster")`, so every evaluation reports each future
  period's accuracy (`period/<p>/accuracy` in the final report), their mean
  (`period/mean_group/accuracy`, the mean over test periods) and the worst; training periods
  are absent from the test split and reported as absent, never as 0.
- `cluster` (int32) is the sub-population whose drift rate is known: clusters drift at
  different speeds, some not at all, which is what makes instance-conditional reweighting
  testable. Each generated source has `drift_rates(data_config) -> np.ndarray [num_clusters]`,
  the true rate of each cluster (in the source's own unit: radians or degrees or shear per
  period), for the study's diagnostic. Read data has a `cluster` only where its files do, and
  no known rates.
- Config (generated sources): `periods` P (>= 2), `train_periods` (>= 1 and < P: the test
  periods must come after the training periods), `examples_per_period`, `rates` (one per
  cluster, each >= 0), `seed`, and `eval_split` ("test" or "validation"): "validation" gives
  an independent draw of the same future periods (for the generated digits, from digits
  disjoint from the test ones). The paper's protocol instead tunes on the last training
  period held out: `train_periods - 1` training periods with `periods = train_periods`.
- Each period's examples come from their own random stream, keyed by (seed, split, period):
  a period's examples do not change with `periods`, the other periods or the rates (a rate
  changes how a drawn example is labelled or transformed, not which one is drawn).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError

EVAL_SPLITS = ("test", "validation")
STREAMS = {"train": 0, "validation": 1, "test": 2}  # a random stream per split, as spurious.py
TIMESTAMP = "period"
GROUPS = ("period", "cluster")


def ages(periods, train_periods: int) -> np.ndarray:
  """The age of examples of `periods` at the end of training: train_periods - 1 - period
  (0 for the last training period, negative for test periods)."""
  return (int(train_periods) - 1 - np.asarray(periods)).astype(np.int32)


def _integer(value) -> bool:
  return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_integer(values: dict, key: str, least: int, name: str) -> int:
  value = values[key]
  if not _integer(value) or value < least:
    raise ConfigError(f"{name}: data.{key}={value!r} must be an integer >= {least}")
  return int(value)


def check_periods(periods: int, train_periods: int, name: str) -> None:
  """One ConfigError unless 1 <= train_periods < periods (Eval-Fix needs a future)."""
  if not _integer(train_periods) or train_periods < 1:
    raise ConfigError(f"{name}: data.train_periods={train_periods!r} must be an integer >= 1")
  if train_periods >= periods:
    raise ConfigError(f"{name}: data.train_periods={train_periods} >= {periods} periods: test "
                      "periods must come after training periods")


def check_rates(rates, name: str) -> np.ndarray:
  """The rates as float64 [C], or one ConfigError: a non-empty sequence of finite numbers >= 0."""
  try:
    array = np.asarray(rates, np.float64)
  except (TypeError, ValueError):
    array = None
  if array is None or array.ndim != 1 or not array.size or any(
      isinstance(r, bool) for r in rates):
    raise ConfigError(f"{name}: data.rates={rates!r} must be a non-empty list of numbers, one "
                      "per cluster")
  if not np.all(np.isfinite(array)) or np.any(array < 0):
    raise ConfigError(f"{name}: data.rates={tuple(rates)} must all be finite and >= 0")
  return array


def settings(data_config, defaults: dict, name: str) -> dict:
  """The config's values over `defaults`, the shared keys checked (seed, periods,
  train_periods, examples_per_period, rates, eval_split) with one-line ConfigErrors;
  `rates` comes back as float64 [C]. A key set to None takes its default."""
  values = {k: v if data_config.get(k) is None else data_config.get(k)
            for k, v in defaults.items()}
  check_integer(values, "seed", 0, name)
  periods = check_integer(values, "periods", 2, name)
  check_periods(periods, values["train_periods"], name)
  check_integer(values, "examples_per_period", 1, name)
  values["rates"] = check_rates(values["rates"], name)
  if values["eval_split"] not in EVAL_SPLITS:
    raise ConfigError(f"{name}: data.eval_split={values['eval_split']!r}: choose "
                      f"{' or '.join(EVAL_SPLITS)}")
  return values


def period_stream(seed: int, split: str, period: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), STREAMS[split], int(period)])


def generate(values: dict, draw: Callable[[np.random.Generator, int, str], dict]) -> dict:
  """{"train": arrays, "test": arrays}: `draw(rng, period, split)` -> {field: [n, ...]} for
  every period, from that period's own stream, with `period` added; training periods are
  drawn as "train", the later ones as `values["eval_split"]`."""
  out = {}
  for role, periods in (("train", range(values["train_periods"])),
                        (values["eval_split"], range(values["train_periods"],
                                                     values["periods"]))):
    parts = []
    for period in periods:
      arrays = draw(period_stream(values["seed"], role, period), period, role)
      size = len(next(iter(arrays.values())))
      parts.append({**arrays, TIMESTAMP: np.full(size, period, np.int32)})
    out["train" if role == "train" else "test"] = {
        k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
  return out


def dataset(splits: dict, input_fields: dict, num_classes: int, period_names: Sequence[str],
            cluster_names: Sequence[str] | None, name: str, class_names=()) -> Dataset:
  """The classification Dataset of `label` from `input_fields` with the drift fields `period`
  (the timestamp) and, unless `cluster_names` is None, `cluster` (the groups are those two)."""
  fields = {**input_fields, "label": Field((), "int32", tuple(class_names)),
            TIMESTAMP: Field((), "int32", tuple(period_names))}
  if cluster_names is not None:
    fields["cluster"] = Field((), "int32", tuple(cluster_names))
  task = Task("classification", tuple(input_fields), "label", num_classes,
              groups=tuple(g for g in GROUPS if g in fields), timestamp=TIMESTAMP)
  return Dataset(ArraySplit(splits["train"]), ArraySplit(splits["test"]), fields, task,
                 name=name)
