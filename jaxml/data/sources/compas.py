"""ProPublica COMPAS: predict whether a defendant reoffends within two years; groups race, sex.

Source `compas`. Reads the copy shipped in `jaxml/data/files/compas/` (ProPublica's analysis
data: see the README there), or with `data.dir` a directory holding a user's own
`compas-scores-two-years.csv` (plain or `.gz`).

Rows are kept by ProPublica's own filter (their analysis notebook): the charge date within 30
days of the COMPAS screening (`days_b_screening_arrest` in [-30, 30]; a blank drops the row),
a known recidivism outcome (`is_recid != -1`), not an ordinary traffic offence
(`c_charge_degree != "O"`) and a COMPAS score (`score_text != "N/A"`): 6,172 of 7,214 rows,
45.5% of whom reoffended.

There is no official test split, so one is drawn: a permutation of the kept rows seeded by
`data.split_seed` (default 0) puts `data.test_fraction` of them (default 0.3, rounded) in test
and the rest in train, each kept in file order. The same seed gives the same split on every
machine (NumPy's PCG64 stream). Config: `drop`, as adult's: columns left out of `features`
(e.g. ("sex", "race") for a model that does not see the groups).

Fields: `features` float32 [D] (D = 18 with nothing dropped), `two_year_recid` int32 (0 "no",
1 "yes"), the groups `race` int32 (RACE) and `sex` int32 (SEX), and `decile_score` int32
(COMPAS's own risk score, 1-10: a ready-made score for post-processing). Task: 2-class
classification of `two_year_recid` from `features`, groups ("race", "sex").

The encoding is fitted on the train split only: the five numeric columns (age, priors and
juvenile counts) are standardised with the train mean and standard deviation; the categorical
ones are one-hot over their fixed value lists below, so the features are the same whatever
values the split happens to draw. A value outside those lists is a ConfigError, not a column.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import numbers

import numpy as np

from jaxml.data import shipped
from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError

FILE = "compas-scores-two-years.csv"
NUMERIC = ("age", "priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count")
RACE = ("African-American", "Caucasian", "Hispanic", "Other", "Asian", "Native American")
SEX = ("Female", "Male")
CATEGORICAL = {"c_charge_degree": ("F", "M"),
               "age_cat": ("Less than 25", "25 - 45", "Greater than 45"),
               "sex": SEX, "race": RACE}
RECID = ("no", "yes")
FILTER = ("days_b_screening_arrest", "is_recid", "c_charge_degree", "score_text")
COLUMNS = tuple(dict.fromkeys((*NUMERIC, *CATEGORICAL, *FILTER, "decile_score",
                               "two_year_recid")))
MAX_DAYS = 30  # ProPublica's window between the charge and the screening


@dataclasses.dataclass(frozen=True)
class Encoding:
  """How rows become `features`: the numeric scaling is fitted on train rows only (`fit`)."""

  numeric: tuple[str, ...]
  mean: np.ndarray  # [len(numeric)]
  std: np.ndarray  # [len(numeric)]
  categorical: tuple[str, ...]

  @classmethod
  def fit(cls, table: dict[str, np.ndarray], drop=()) -> Encoding:
    numeric = tuple(c for c in NUMERIC if c not in drop)
    values = np.stack([table[c] for c in numeric], axis=1) if numeric \
        else np.zeros((len(table["two_year_recid"]), 0))
    std = values.std(axis=0)
    return cls(numeric, values.mean(axis=0), np.where(std > 0, std, 1.0),
               tuple(c for c in CATEGORICAL if c not in drop))

  @property
  def dim(self) -> int:
    return len(self.numeric) + sum(len(CATEGORICAL[c]) for c in self.categorical)

  def names(self) -> tuple[str, ...]:
    """What each entry of `features` is, e.g. "age" or "race=Hispanic"."""
    return self.numeric + tuple(f"{c}={v}" for c in self.categorical for v in CATEGORICAL[c])

  def encode(self, table: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [rows, dim]."""
    rows = len(table["two_year_recid"])
    parts = [(np.stack([table[c] for c in self.numeric], axis=1) - self.mean) / self.std
             if self.numeric else np.zeros((rows, 0))]
    for column in self.categorical:
      parts.append(_codes(table, column, CATEGORICAL[column])[:, None]
                   == np.arange(len(CATEGORICAL[column])))
    return np.concatenate(parts, axis=1).astype(np.float32)


def read_text(data_dir: str) -> tuple[str, str]:
  """(where, text) of the file: the user's copy in `data_dir`, else the shipped one."""
  return shipped.read_text("compas", FILE, data_dir, f"{FILE}.gz")


def read_table(data_dir: str = "") -> dict[str, np.ndarray]:
  """Column name -> [rows] str array of every row of the file (COLUMNS only; where the header
  names a column twice, as it does `decile_score`, the first one)."""
  path, text = read_text(data_dir)
  reader = csv.reader(io.StringIO(text))
  header = [name.strip() for name in next(reader, [])]
  missing = [c for c in COLUMNS if c not in header]
  if missing:
    raise ConfigError(f"compas: {path} lacks columns {missing} (its header: "
                      f"{', '.join(header[:8])}{', ...' if len(header) > 8 else ''})")
  rows = []
  for line, row in enumerate(reader, start=2):
    if not row:
      continue
    if len(row) != len(header):
      raise ConfigError(f"compas: {path}:{line} has {len(row)} values, not {len(header)}")
    rows.append(row)
  if not rows:
    raise ConfigError(f"compas: {path} holds no rows")
  table = np.strings.strip(np.array(rows))
  return {c: table[:, header.index(c)] for c in COLUMNS}


def _numbers(table: dict[str, np.ndarray], column: str) -> np.ndarray:
  """float64 [rows]; a blank is NaN (the filter drops rows with a blank screening gap)."""
  values = table[column]
  try:
    return np.where(values == "", "nan", values).astype(np.float64)
  except ValueError:
    bad = next(v for v in values.tolist() if v and not _is_number(v))
    raise ConfigError(f"compas: column {column!r} holds {bad!r}, not a number") from None


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def propublica_filter(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The rows ProPublica analysed (see the module doc), numeric columns as float64."""
  days = _numbers(table, "days_b_screening_arrest")
  keep = ((np.abs(days) <= MAX_DAYS) & (_numbers(table, "is_recid") != -1)
          & (table["c_charge_degree"] != "O") & (table["score_text"] != "N/A"))
  kept = {c: values[keep] for c, values in table.items()}
  if not len(kept["two_year_recid"]):
    raise ConfigError("compas: ProPublica's filter leaves no rows")
  for column in (*NUMERIC, "decile_score", "two_year_recid"):
    kept[column] = _numbers(kept, column)
    if not np.isfinite(kept[column]).all():
      raise ConfigError(f"compas: column {column!r} is blank in a row the filter keeps")
  if not np.isin(kept["two_year_recid"], (0, 1)).all():
    raise ConfigError("compas: column 'two_year_recid' holds values other than 0 and 1")
  return kept


def split_rows(count: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) row indices, disjoint, each in file order: a seeded permutation's tail and
  head."""
  test_count = int(round(count * test_fraction))
  if not 0 < test_count < count:
    raise ConfigError(f"compas: data.test_fraction={test_fraction} leaves "
                      f"{count - test_count} train and {test_count} test rows of {count}")
  order = np.random.default_rng(seed).permutation(count)
  return np.sort(order[test_count:]), np.sort(order[:test_count])


def _split_config(data_config) -> tuple[float, int]:
  fraction = data_config.get("test_fraction", 0.3)
  if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) \
      or not 0 < fraction < 1:
    raise ConfigError(f"compas: data.test_fraction={fraction!r} must be a number in (0, 1)")
  seed = data_config.get("split_seed", 0)
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
    raise ConfigError(f"compas: data.split_seed={seed!r} must be an integer >= 0")
  return float(fraction), int(seed)


def _codes(table: dict[str, np.ndarray], column: str, values: tuple[str, ...]) -> np.ndarray:
  return shipped.category_codes("compas", column, table[column], values)


def load(data_config) -> Dataset:
  data_dir = data_config.get("dir") or ""
  drop = tuple(data_config.get("drop") or ())
  unknown = [c for c in drop if c not in (*NUMERIC, *CATEGORICAL)]
  if unknown:
    raise ConfigError(f"compas: data.drop has {unknown}, not feature columns "
                      f"({', '.join((*NUMERIC, *CATEGORICAL))})")
  test_fraction, seed = _split_config(data_config)
  table = propublica_filter(read_table(data_dir))
  for column, values in CATEGORICAL.items():  # every value known, dropped columns too
    _codes(table, column, values)
  rows = split_rows(len(table["two_year_recid"]), test_fraction, seed)
  tables = {split: {c: values[index] for c, values in table.items()}
            for split, index in zip(("train", "test"), rows)}
  encoding = Encoding.fit(tables["train"], drop)
  if not encoding.dim:
    raise ConfigError("compas: data.drop leaves no feature columns")
  splits = {split: ArraySplit({"features": encoding.encode(part),
                               "two_year_recid": part["two_year_recid"].astype(np.int32),
                               "race": _codes(part, "race", RACE),
                               "sex": _codes(part, "sex", SEX),
                               "decile_score": part["decile_score"].astype(np.int32)})
            for split, part in tables.items()}
  fields = {"features": Field((encoding.dim,), "float32"),
            "two_year_recid": Field((), "int32", RECID), "race": Field((), "int32", RACE),
            "sex": Field((), "int32", SEX), "decile_score": Field((), "int32")}
  task = Task("classification", inputs=("features",), target="two_year_recid", num_classes=2,
              groups=("race", "sex"))
  return Dataset(splits["train"], splits["test"], fields, task, name="compas")
