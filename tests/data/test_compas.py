"""The `compas` source: ProPublica's filter, a seeded split, an encoding fitted on train only."""

import csv
import gzip
import io
import os

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.sources import compas
from jaxml.errors import ConfigError

SHIPPED = os.path.join(os.path.dirname(compas.__file__), "..", "files", "compas",
                       "compas-scores-two-years.csv.gz")


def config(**fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"source": "compas", **fields})


def read_file() -> tuple[list[str], list[list[str]]]:
  with gzip.open(SHIPPED, "rt", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def propublica_rows(header, rows) -> list[int]:
  """Positions of the rows ProPublica kept, written out plainly as their notebook has it."""
  at = {name: header.index(name) for name in header}  # the first of a repeated name
  kept = []
  for i, row in enumerate(rows):
    days = row[at["days_b_screening_arrest"]]
    if (days != "" and -30 <= float(days) <= 30 and row[at["is_recid"]] != "-1"
        and row[at["c_charge_degree"]] != "O" and row[at["score_text"]] != "N/A"):
      kept.append(i)
  return kept


@pytest.fixture(scope="module")
def file():
  header, rows = read_file()
  return header, rows, propublica_rows(header, rows)


@pytest.fixture(scope="module")
def dataset():
  return load_dataset(config())


def both(dataset, field):
  """`field` of every kept row, in file order (the splits are each in file order)."""
  train, test = compas.split_rows(len(dataset.train) + len(dataset.test), 0.3, 0)
  values = np.empty(len(train) + len(test), dataset.train.arrays[field].dtype)
  values[train], values[test] = dataset.train.arrays[field], dataset.test.arrays[field]
  return values


def test_propublica_filter_rows_base_rate_and_groups(dataset, file):
  header, rows, kept = file
  assert len(rows) == 7_214 and len(kept) == 6_172
  assert (len(dataset.train), len(dataset.test)) == (4_320, 1_852)  # 0.3 of 6,172, rounded

  def column(name):
    return [rows[i][header.index(name)] for i in kept]

  recid = np.array(column("two_year_recid"), int)
  assert recid.mean() == pytest.approx(0.4551, abs=1e-4)  # ProPublica's 2,809 of 6,172
  np.testing.assert_array_equal(both(dataset, "two_year_recid"), recid)
  races = both(dataset, "race")
  assert [compas.RACE[r] for r in races] == column("race")
  counts = dict(zip(compas.RACE, np.bincount(races, minlength=len(compas.RACE)).tolist()))
  assert counts == {"African-American": 3_175, "Caucasian": 2_103, "Hispanic": 509,
                    "Other": 343, "Asian": 31, "Native American": 11}
  assert [compas.SEX[s] for s in both(dataset, "sex")] == column("sex")
  assert np.bincount(both(dataset, "sex")).tolist() == [1_175, 4_997]
  np.testing.assert_array_equal(both(dataset, "decile_score"),
                                np.array(column("decile_score"), int))


def test_description_and_task(dataset):
  task = dataset.task
  assert (task.kind, task.inputs, task.target, task.num_classes, task.groups, task.weight) == (
      "classification", ("features",), "two_year_recid", 2, ("race", "sex"), None)
  assert dataset.fields["features"].shape == (18,)
  assert dataset.fields["race"].categories == compas.RACE
  assert dataset.fields["sex"].categories == ("Female", "Male")
  assert dataset.fields["two_year_recid"].categories == ("no", "yes")
  scores = dataset.train.arrays["decile_score"]
  assert (scores.dtype, scores.min(), scores.max()) == (np.int32, 1, 10)


def test_split_is_seeded_disjoint_and_covers_every_row(dataset):
  train, test = compas.split_rows(6_172, 0.3, 0)
  assert not set(train.tolist()) & set(test.tolist())
  assert sorted([*train.tolist(), *test.tolist()]) == list(range(6_172))
  again = load_dataset(config())
  for split in ("train", "test"):
    for name, values in getattr(dataset, split).arrays.items():
      np.testing.assert_array_equal(getattr(again, split).arrays[name], values)
  other = load_dataset(config(split_seed=1, test_fraction=0.5))
  assert (len(other.train), len(other.test)) == (3_086, 3_086)
  assert not np.array_equal(compas.split_rows(6_172, 0.5, 1)[1],
                            compas.split_rows(6_172, 0.5, 0)[1])


def test_features_encode_the_first_kept_row(dataset, file):
  header, rows, kept = file
  names = compas.Encoding.fit(compas.propublica_filter(compas.read_table())).names()
  assert names[:5] == compas.NUMERIC and len(names) == 18
  first = compas.split_rows(6_172, 0.3, 0)[0][0]  # train's first row
  features = dataset.train.arrays["features"][0]
  row = rows[kept[first]]
  hot = {names[i] for i in np.flatnonzero(features[5:]) + 5}
  assert hot == {f"{c}={row[header.index(c)]}" for c in compas.CATEGORICAL}
  numeric = dataset.train.arrays["features"][:, :5]
  np.testing.assert_allclose(numeric.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(numeric.std(0), 1, atol=1e-4)


def test_the_test_split_does_not_leak_into_the_encoding(dataset, file, tmp_path):
  """A user copy whose test rows are far older leaves every train feature unchanged."""
  header, rows, kept = file
  test = {kept[i] for i in compas.split_rows(6_172, 0.3, 0)[1]}
  age = header.index("age")
  changed = [list(row) for row in rows]
  for i in test:
    changed[i][age] = str(int(rows[i][age]) * 10)  # ages far outside train's
  text = io.StringIO()
  csv.writer(text).writerows([header, *changed])
  (tmp_path / "compas-scores-two-years.csv").write_text(text.getvalue())  # plain, not .gz
  mine = load_dataset(config(dir=str(tmp_path)))
  np.testing.assert_array_equal(mine.train.arrays["features"], dataset.train.arrays["features"])
  assert (mine.test.arrays["features"][:, 0] > dataset.test.arrays["features"][:, 0]).all()


def test_drop_leaves_columns_out_of_the_features():
  dataset = load_dataset(config(drop=("sex", "race")))
  assert dataset.fields["features"].shape == (18 - 2 - 6,)
  assert "race" in dataset.task.groups  # still a group, only not a feature
  with pytest.raises(ConfigError, match="not feature columns"):
    load_dataset(config(drop=("two_year_recid",)))


@pytest.mark.parametrize("key,value,says", [
    ("test_fraction", 0.0, "must be a number in"), ("test_fraction", 1.0, "must be a number in"),
    ("test_fraction", "0.3", "must be a number in"), ("test_fraction", True, "must be a number"),
    ("test_fraction", 1e-6, "leaves 6172 train and 0 test rows"),
    ("split_seed", -1, "must be an integer >= 0"), ("split_seed", 0.5, "must be an integer")])
def test_bad_split_settings_are_config_errors(key, value, says):
  with pytest.raises(ConfigError, match=f"data.{key}=.*{says}"):
    load_dataset(config(**{key: value}))


def _write(tmp_path, header, rows):
  text = io.StringIO()
  csv.writer(text).writerows([header, *rows])
  with gzip.open(tmp_path / "compas-scores-two-years.csv.gz", "wt") as f:
    f.write(text.getvalue())


def test_bad_user_copies_are_config_errors(file, tmp_path):
  header, rows, kept = file
  with pytest.raises(ConfigError, match="neither compas-scores-two-years.csv nor"):
    load_dataset(config(dir=str(tmp_path)))
  race = header.index("race")
  _write(tmp_path, [h if h != "race" else "ethnicity" for h in header], rows[:50])
  with pytest.raises(ConfigError, match=r"lacks columns \['race'\]"):
    load_dataset(config(dir=str(tmp_path)))
  _write(tmp_path, header, [[*r[:race], "Martian", *r[race + 1:]] if i == kept[3] else r
                            for i, r in enumerate(rows)])
  with pytest.raises(ConfigError, match=r"column 'race' has values \['Martian'\]"):
    load_dataset(config(dir=str(tmp_path)))
  kept = set(kept)
  _write(tmp_path, header, [r for i, r in enumerate(rows) if i not in kept])
  with pytest.raises(ConfigError, match="filter leaves no rows"):
    load_dataset(config(dir=str(tmp_path)))
