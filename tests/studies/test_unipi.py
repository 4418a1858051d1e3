"""The UniPi study's bookkeeping (jaxml/studies/unipi.py): which plan frame is shown next to
each executed step, how results are tabulated, and that a rerun skips measured rows."""

import types

import ml_collections
import numpy as np

from jaxml import trained
from jaxml.studies import figures, results, unipi


def test_each_executed_step_is_shown_with_the_plan_in_force():
  # Plans made at steps 0, 4, 8 (replan every 4); plan p's frame i is tagged 10 p + i.
  plans = [np.arange(9)[:, None] + 10 * p for p in range(3)]
  record = {"plans": plans, "frames": np.zeros((12, 2))}

  def shown(t):
    plan, i = figures.plan_in_force(record, t, 4)
    return int(plan[i][0])

  assert [shown(t) for t in range(12)] == [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]
  # Past the last plan (the episode ended early) the last plan's frames run on, then hold.
  assert figures.plan_in_force(record, 14, 4)[1] == 6
  assert figures.plan_in_force(record, 30, 4)[1] == 8


def test_control_table_averages_levels_and_marks_no_success():
  rows = [{"method": "m", "want": "seen", "level": "goto", "success": 0.5, "steps": 10.0},
          {"method": "m", "want": "seen", "level": "pickup", "success": 0.25, "steps": 20.0},
          {"method": "m", "want": "heldout", "level": "goto", "success": 0.0,
           "steps": float("nan")},
          {"method": "m", "want": "heldout", "level": "pickup", "success": 0.0,
           "steps": float("nan")}]
  table = unipi.control_table(rows, ["m", "absent"], ["goto", "pickup"])
  lines = table.strip().splitlines()
  assert len(lines) == 3  # header, rule, one row: a method without results is left out
  assert lines[2] == "| m | 50 | 25 | 38 | 0 | 0 | 0 | 15.0 | — |"


def test_measure_tags_rows_and_measures_a_run_once(tmp_path, monkeypatch):
  monkeypatch.setattr(trained, "load", lambda workdir: types.SimpleNamespace(
      config=ml_collections.ConfigDict({"seed": 0}), dataset=None, state=None))
  calls = []

  def measure(config, dataset, state, key, policy):
    calls.append(key)
    yield {"value": 1.5}

  config = unipi.defaults()
  workdir = str(tmp_path / "unipi-seed0") + "/"
  first = unipi.Measurements(config, str(tmp_path)).measure("control", "m", workdir, measure)
  assert first == [{"study": "control", "method": "m", "run": "unipi-seed0", "value": 1.5}]
  again = unipi.Measurements(config, str(tmp_path)).measure("control", "m", workdir, measure)
  assert again == first and len(calls) == 1
  record = results.read_records(str(tmp_path / results.RESULTS))[0]
  assert record["key"] == ["control", "m", "unipi-seed0"] and record["rows"] == first
