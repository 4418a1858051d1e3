"""run_once: a finished run is reused, a preempted one resumed, another config's run refused."""

import json
import os

import ml_collections
import pytest

from jaxml import runner
from jaxml.errors import ConfigError
from jaxml.studies import runs


def _config(**overrides):
  config = ml_collections.ConfigDict({"algo": "classifier", "seed": 0, "progress": True,
                                      "model": {"width": 4}})
  config.update(overrides)
  return config


@pytest.fixture
def trains(monkeypatch):
  """A fake runner.run that leaves what a real one leaves (config.json, a summary)."""
  calls = []

  def run(config, workdir):
    calls.append(workdir)
    os.makedirs(os.path.join(workdir, "artifacts"), exist_ok=True)
    json.dump(json.loads(config.to_json_best_effort()), open(f"{workdir}/config.json", "w"))
    summary = {"step": 20, "preempted": False, "eval/accuracy": 0.5 + len(calls)}
    json.dump(summary, open(f"{workdir}/artifacts/summary.json", "w"))
    return summary

  monkeypatch.setattr(runner, "run", run)
  return calls


def test_run_once_trains_again_only_a_preempted_or_extended_run(tmp_path, trains):
  first = runs.run_once(_config(), str(tmp_path))
  again = runs.run_once(_config(progress=False), str(tmp_path))  # progress bars don't count
  assert trains == [str(tmp_path)] and again == first
  summary_path = tmp_path / "artifacts" / "summary.json"
  json.dump({**again, "preempted": True}, open(summary_path, "w"))
  resumed = runs.run_once(_config(), str(tmp_path))
  assert trains == [str(tmp_path)] * 2 and resumed["eval/accuracy"] == 2.5
  assert runs.run_once(_config(num_steps=20), str(tmp_path)) == resumed  # finished at step 20
  extended = runs.run_once(_config(num_steps=40), str(tmp_path))
  assert trains == [str(tmp_path)] * 3 and extended["eval/accuracy"] == 3.5


def test_a_workdir_of_another_config_is_refused(tmp_path, trains):
  runs.run_once(_config(), str(tmp_path))
  with pytest.raises(ConfigError, match=r"another config \(model.width 4→8\)"):
    runs.run_once(_config(model={"width": 8}), str(tmp_path))
  assert len(trains) == 1
