"""The `fico` source: weighted rows that reproduce the published distribution, refused for
training."""

import csv
import os
import shutil

import ml_collections
import numpy as np
import pytest

from experiments import classifier as classifier_config
from jaxml import runner
from jaxml.data import Field, Task, load_dataset
from jaxml.data.base import check_task
from jaxml.data.sources import fico
from jaxml.errors import ConfigError

SHIPPED = os.path.join(os.path.dirname(fico.__file__), "..", "files", "fico")
GROUPS = ("Non- Hispanic white", "Black", "Hispanic", "Asian")


def config(**fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"source": "fico", **fields})


def read(name: str, folder: str = SHIPPED) -> list[dict[str, str]]:
  with open(os.path.join(folder, name), newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dataset():
  return load_dataset(config())


def test_description_and_task(dataset):
  task = dataset.task
  assert (task.kind, task.inputs, task.target, task.num_classes, task.groups, task.weight) == (
      "classification", ("score",), "repay", 2, ("race",), "weight")
  assert task.fields_used() == ("score", "repay", "race", "weight")
  assert dataset.fields["race"].categories == ("white", "black", "hispanic", "asian")
  assert dataset.fields["repay"].categories == ("default", "repay")
  assert dataset.train is dataset.test  # a published distribution: nothing to hold out
  arrays = dataset.train.arrays
  assert {k: v.dtype for k, v in arrays.items()} == {
      "score": np.float32, "repay": np.int32, "race": np.int32, "weight": np.float32}
  assert (arrays["weight"] > 0).all()
  assert set(np.unique(arrays["score"]).tolist()) <= {float(r["Score"]) for r in
                                                      read(fico.FILES["cdf"])}
  assert len(np.unique(arrays["score"])) == 198


def test_each_groups_weights_sum_to_its_total(dataset):
  totals = next(r for r in read("totals.csv") if r["Kind"] == "SSA")
  arrays = dataset.train.arrays
  for code, column in enumerate(GROUPS):
    mine = arrays["weight"][arrays["race"] == code].astype(np.float64).sum()
    assert mine == pytest.approx(float(totals[column]), rel=1e-6)
  assert int(totals["Non- Hispanic white"]) == 133_165  # the groups line up with the files


def test_each_bins_weighted_default_rate_is_the_files_percentage(dataset):
  arrays = {k: v.astype(np.float64) for k, v in dataset.train.arrays.items()}
  cdf, performance = read(fico.FILES["cdf"]), read(fico.FILES["performance"])
  checked = 0
  for code, column in enumerate(GROUPS):
    previous = 0.0
    for cdf_row, performance_row in zip(cdf, performance):
      step, previous = float(cdf_row[column]) - previous, float(cdf_row[column])
      rows = (arrays["race"] == code) & (arrays["score"] == float(cdf_row["Score"]))
      weight = arrays["weight"][rows]
      assert (step > 0) == (weight.sum() > 0), (column, cdf_row["Score"])
      if step > 0:
        defaulted = weight[arrays["repay"][rows] == 0].sum()
        assert defaulted / weight.sum() == pytest.approx(
            float(performance_row[column]) / 100, abs=1e-6)
        checked += 1
  assert checked > 4 * 190


def test_a_cdf_that_stops_short_of_100_is_renormalised(tmp_path):
  for name in fico.FILES.values():
    shutil.copy(os.path.join(SHIPPED, name), tmp_path / name)
  rows = read(fico.FILES["cdf"])
  for row in rows:  # a user's copy that sums to 99.5%, as rounding might leave it
    row["Black"] = f"{float(row['Black']) * 0.995:.4f}"
  with open(tmp_path / fico.FILES["cdf"], "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  arrays = load_dataset(config(dir=str(tmp_path))).train.arrays
  black = arrays["race"] == fico.RACE.index("black")
  assert arrays["weight"][black].astype(np.float64).sum() == pytest.approx(18_274, rel=1e-6)
  rows[-1]["Black"] = "90"  # below the bin before: not a CDF
  with open(tmp_path / fico.FILES["cdf"], "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  with pytest.raises(ConfigError, match="decreases with the score"):
    load_dataset(config(dir=str(tmp_path)))


def test_bad_user_copies_are_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="neither transrisk_cdf_by_race_ssa.csv nor"):
    load_dataset(config(dir=str(tmp_path)))
  for name in fico.FILES.values():
    shutil.copy(os.path.join(SHIPPED, name), tmp_path / name)
  (tmp_path / "totals.csv").write_text("Kind,Black,Hispanic,Asian\nSSA,1,2,3\n")
  with pytest.raises(ConfigError, match=r"totals.csv lacks columns \['Non- Hispanic white'\]"):
    load_dataset(config(dir=str(tmp_path)))
  (tmp_path / "totals.csv").write_text(f"Kind,{','.join(GROUPS)}\nSSA,1,2,x,4\n")
  with pytest.raises(ConfigError, match="not a number"):
    load_dataset(config(dir=str(tmp_path)))


def test_the_task_weight_must_be_a_float_scalar():
  fields = {"x": Field((), "float32"), "y": Field((), "int32"), "w": Field((), "int32")}
  with pytest.raises(ConfigError, match="weight 'w' must be a float scalar"):
    check_task(fields, Task("classification", "x", "y", 2, weight="w"))
  with pytest.raises(ConfigError, match=r"does not have"):
    check_task(fields, Task("classification", "x", "y", 2, weight="v"))


def test_the_runner_refuses_to_train_on_weighted_data(dataset):
  config_ = classifier_config.get_config("adult,smoke")
  with pytest.raises(ConfigError, match=r"data set 'fico' has example weights \(field "
                     r"'weight'\), which training does not apply: use it with jaxml.fairness"):
    runner.build_algorithm(config_, dataset)


def test_negative_example_weights_are_refused_on_load():
  from jaxml.data import ArraySplit, check_dataset  # pylint: disable=import-outside-toplevel
  from jaxml.data.base import Dataset  # pylint: disable=import-outside-toplevel
  fields = {"x": Field((), "float32"), "y": Field((), "int32"), "w": Field((), "float32")}
  split = ArraySplit({"x": np.zeros(3, np.float32), "y": np.array([0, 1, 0], np.int32),
                      "w": np.array([1.0, -0.5, 2.0], np.float32)})
  dataset_ = Dataset(split, split, fields, Task("classification", "x", "y", 2, weight="w"))
  with pytest.raises(ConfigError, match=r"field 'w' holds -0.5 at example 1: its values "
                     r"must be >= 0"):
    check_dataset(dataset_, "mine")
