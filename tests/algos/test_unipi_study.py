"""The UniPi study's bookkeeping (benchmarks/unipi_study.py): which plan frame is shown next to
each executed step, how results are tabulated, and that a rerun skips measured rows."""

import importlib.util
import os

import numpy as np
import pytest

from tests.launch_utils import REPO


@pytest.fixture(scope="module")
def study():
  spec = importlib.util.spec_from_file_location(
      "unipi_study", os.path.join(REPO, "benchmarks", "unipi_study.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_each_executed_step_is_shown_with_the_plan_in_force(study):
  # Plans made at steps 0, 4, 8 (replan every 4); plan p's frame i is tagged 10 p + i.
  plans = [np.arange(9)[:, None] + 10 * p for p in range(3)]
  record = {"plans": plans, "frames": np.zeros((12, 2))}
  def shown(t):
    plan, i = study._plan_in_force(record, t, 4)
    return int(plan[i][0])

  assert [shown(t) for t in range(12)] == [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]
  # Past the last plan (the episode ended early) the last plan's frames run on, then hold.
  assert study._plan_in_force(record, 14, 4)[1] == 6
  assert study._plan_in_force(record, 30, 4)[1] == 8


def test_control_table_averages_levels_and_marks_no_success(study):
  rows = [{"method": "m", "want": "seen", "level": "goto", "success": 0.5, "steps": 10.0},
          {"method": "m", "want": "seen", "level": "pickup", "success": 0.25, "steps": 20.0},
          {"method": "m", "want": "heldout", "level": "goto", "success": 0.0,
           "steps": float("nan")},
          {"method": "m", "want": "heldout", "level": "pickup", "success": 0.0,
           "steps": float("nan")}]
  table = study.control_table(rows, ["m", "absent"], ["goto", "pickup"])
  lines = table.strip().splitlines()
  assert len(lines) == 3  # header, rule, one row: a method without results is left out
  assert lines[2] == "| m | 50 | 25 | 38 | 0 | 0 | 0 | 15.0 | — |"


def test_results_are_appended_and_found_again(study, tmp_path):
  results = study.Results(str(tmp_path))
  row = {"study": "control", "method": "m", "run": "r", "success": 1.0}
  results.add([row])
  again = study.Results(str(tmp_path))
  assert again.find("control", "m", "r") == [row]
  assert again.find("control", "m", "other") == []


def test_measured_tags_rows_and_measures_a_run_once(study, tmp_path, monkeypatch):
  import ml_collections  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(study.runner, "load_trained",
                      lambda workdir: (ml_collections.ConfigDict({"seed": 0}), None, None))
  calls = []

  def measure(config, dataset, state, key):
    calls.append(key)
    yield {"value": 1.5}

  results = study.Results(str(tmp_path))
  workdir = str(tmp_path / "unipi-seed0") + "/"
  first = study.measured(results, "control", "m", workdir, measure)
  assert first == [{"study": "control", "method": "m", "run": "unipi-seed0", "value": 1.5}]
  again = study.measured(study.Results(str(tmp_path)), "control", "m", workdir, measure)
  assert again == first and len(calls) == 1
