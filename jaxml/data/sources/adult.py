"""UCI Adult (Census Income): predict whether a person earns over $50K; groups sex and race.

Source `adult`. Reads the copy shipped in `jaxml/data/files/adult/` (UCI, CC BY 4.0: see the
README there), or with `data.dir` a directory holding a user's own `adult.data` and
`adult.test` (each plain or `.gz`). UCI's own split: 32,561 train and 16,281 test rows.
Config: `drop`, columns left out of `features` (e.g. ("sex", "race") for a model that does not
see the groups, or ("fnlwgt",), a census sampling weight rather than a trait); default none.

Fields: `features` float32 [D] (D = 108 with nothing dropped), `income` int32 (0 "<=50K",
1 ">50K"; about 24% positive), and the groups `sex` int32 (SEX) and `race` int32 (RACE), in
the value order of `adult.names`. Task: 2-class classification of `income` from `features`,
groups ("sex", "race").

The encoding is fitted on the train split only, so nothing about the test split leaks into
it: the six numeric columns are standardised with the train mean and standard deviation; the
eight categorical ones are one-hot over the values seen in train, in sorted order, a missing
value "?" being a value of its own; a test value never seen in train encodes as all zeros.
"""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np

from jaxml.data import shipped
from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError

COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
           "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
           "hours-per-week", "native-country", "income")
NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL = tuple(c for c in COLUMNS if c not in NUMERIC and c != "income")
SEX = ("Female", "Male")
RACE = ("White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black")
INCOME = ("<=50K", ">50K")
FILES = {"train": "adult.data", "test": "adult.test"}


@dataclasses.dataclass(frozen=True)
class Encoding:
  """How rows become `features`: fitted on train rows only (`fit`)."""

  numeric: tuple[str, ...]
  mean: np.ndarray  # [len(numeric)]
  std: np.ndarray  # [len(numeric)]
  categories: tuple[tuple[str, tuple[str, ...]], ...]  # (column, its train values, sorted)

  @classmethod
  def fit(cls, table: dict[str, np.ndarray], drop=()) -> Encoding:
    numeric = tuple(c for c in NUMERIC if c not in drop)
    values = np.stack([table[c].astype(np.float64) for c in numeric], axis=1) \
        if numeric else np.zeros((len(table["income"]), 0))
    std = values.std(axis=0)
    return cls(numeric, values.mean(axis=0), np.where(std > 0, std, 1.0),
               tuple((c, tuple(np.unique(table[c]).tolist())) for c in CATEGORICAL
                     if c not in drop))

  @property
  def dim(self) -> int:
    return len(self.numeric) + sum(len(values) for _, values in self.categories)

  def names(self) -> tuple[str, ...]:
    """What each entry of `features` is, e.g. "age" or "workclass=Private"."""
    return self.numeric + tuple(f"{c}={v}" for c, values in self.categories for v in values)

  def encode(self, table: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [rows, dim]."""
    rows = len(table["income"])
    numeric = [(table[c].astype(np.float64) - m) / s
               for c, m, s in zip(self.numeric, self.mean, self.std)]
    parts = [np.stack(numeric, axis=1) if numeric else np.zeros((rows, 0))]
    for column, values in self.categories:
      values = np.array(values)
      codes = np.minimum(np.searchsorted(values, table[column]), len(values) - 1)
      seen = values[codes] == table[column]  # False for a value train never had
      parts.append((codes[:, None] == np.arange(len(values))) & seen[:, None])
    return np.concatenate(parts, axis=1).astype(np.float32)


def read_text(data_dir: str, split: str) -> tuple[str, str]:
  """(where, text) of `split`: the user's copy in `data_dir`, else the shipped one."""
  return shipped.read_text("adult", FILES[split], data_dir, f"{FILES[split]}.gz")


def read_table(data_dir: str, split: str) -> dict[str, np.ndarray]:
  """Column name -> [rows] str array, from UCI's format (a "|" line is a comment; the test
  file's labels end in ".")."""
  path, text = read_text(data_dir, split)
  rows = []
  for line, row in enumerate(csv.reader(io.StringIO(text), skipinitialspace=True), start=1):
    if not row or row[0].startswith("|"):
      continue
    if len(row) != len(COLUMNS):
      raise ConfigError(f"adult: {path}:{line} has {len(row)} values, not {len(COLUMNS)}")
    rows.append(row)
  if not rows:
    raise ConfigError(f"adult: {path} holds no rows")
  table = np.strings.strip(np.array(rows))
  columns = dict(zip(COLUMNS, table.T))
  columns["income"] = np.strings.rstrip(columns["income"], ".")
  return columns


def _codes(table: dict[str, np.ndarray], column: str, values: tuple[str, ...]) -> np.ndarray:
  return shipped.category_codes("adult", column, table[column], values)


def load(data_config) -> Dataset:
  data_dir = data_config.get("dir") or ""
  drop = tuple(data_config.get("drop") or ())
  unknown = [c for c in drop if c not in NUMERIC + CATEGORICAL]
  if unknown:
    raise ConfigError(f"adult: data.drop has {unknown}, not feature columns "
                      f"({', '.join(NUMERIC + CATEGORICAL)})")
  tables = {split: read_table(data_dir, split) for split in FILES}
  encoding = Encoding.fit(tables["train"], drop)
  if not encoding.dim:
    raise ConfigError("adult: data.drop leaves no feature columns")
  splits = {split: ArraySplit({"features": encoding.encode(table),
                               "income": _codes(table, "income", INCOME),
                               "sex": _codes(table, "sex", SEX),
                               "race": _codes(table, "race", RACE)})
            for split, table in tables.items()}
  fields = {"features": Field((encoding.dim,), "float32"),
            "income": Field((), "int32", INCOME), "sex": Field((), "int32", SEX),
            "race": Field((), "int32", RACE)}
  task = Task("classification", inputs=("features",), target="income", num_classes=2,
              groups=("sex", "race"))
  return Dataset(splits["train"], splits["test"], fields, task, name="adult")
