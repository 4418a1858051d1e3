"""Changing any setting of a study re-runs its rows; the same settings reuse them.

Each study runs end to end through `run_study` (the workdir contract included) with its
training and measurements replaced by fast fakes that count how often they are called.
"""

import json
import types

import ml_collections
import numpy as np
import pytest

from experiments import dp_transfer
from experiments import mgdt as mgdt_config
from jaxml import trained
from jaxml.studies import dp_features, mgdt, results, run_study, runs, unipi


def _fingerprints(workdir) -> list[str]:
  return [r["fingerprint"] for r in results.read_records(str(workdir / results.RESULTS))]


def _check_workdir(workdir, summary):
  assert summary["preempted"] is False and summary["step"] > 0
  assert all(name in summary for name in summary["headline"])
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert rows and all("step" in r for r in rows)
  for path in ("config.json", "artifacts/summary.json", "artifacts/metrics.png"):
    assert (workdir / path).exists(), path


@pytest.fixture
def no_training(monkeypatch):
  """runs.run_once records the runs a study asks for instead of training them."""
  trained = []
  monkeypatch.setattr(runs, "run_once", lambda config, workdir: trained.append(workdir) or {})
  return trained


# --- dp_features -------------------------------------------------------------------------

@pytest.fixture
def dp_fakes(monkeypatch):
  """Random features instead of an encoder, and a constant non-private probe."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(48, 4)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  labels = rng.integers(0, 3, 48)
  monkeypatch.setattr(dp_features, "extract_features",
                      lambda *_: (x[:40], labels[:40], x[40:], labels[40:], 3))
  monkeypatch.setattr(dp_features.linear_probe, "evaluate",
                      lambda *a, **k: {"test_accuracy": 0.5})


def _dp_config(**overrides):
  config = dp_transfer.get_config("smoke")
  config.update(methods=("least_squares",), epsilons=(8.0,), seeds=(0,),
                public_workdir="/unused", progress=False)
  config.update(overrides)
  return config


def test_dp_features_reruns_changed_settings(tmp_path, dp_fakes):
  del dp_fakes
  summary = run_study(_dp_config(), str(tmp_path))
  _check_workdir(tmp_path, summary)
  assert len(_fingerprints(tmp_path)) == 2  # ε = 8 and ε = ∞, seed 0
  run_study(_dp_config(progress=True, num_devices=1), str(tmp_path))
  assert len(_fingerprints(tmp_path)) == 2  # nothing that changes a row changed
  # A new seed or ε is a new cell of the same study: computed, the old cells reused.
  run_study(_dp_config(seeds=(0, 1)), str(tmp_path))
  run_study(_dp_config(seeds=(0, 1), epsilons=(1.0, 8.0)), str(tmp_path))
  rows = results.read_records(str(tmp_path / results.RESULTS))
  assert [r["key"] for r in rows[2:]] == [["least_squares", 8.0, 1], ["least_squares", None, 1],
                                          ["least_squares", 1.0, 0], ["least_squares", 1.0, 1]]
  # Any other setting is another study: every cell is computed again under its fingerprint.
  for changed in ({"features": {"clip": 2.0}}, {"least_squares": {"l2": 0.5}},
                  {"least_squares": {"gram_budget": 0.5}}, {"features": {"normalize": False}},
                  {"delta": 1e-3}):
    config = _dp_config()
    config.update(changed)
    before = len(_fingerprints(tmp_path))
    run_study(config, str(tmp_path))
    new = _fingerprints(tmp_path)[before:]
    assert len(new) == 2 and set(new) == {dp_features.fingerprint(config)}, changed


# --- mgdt ---------------------------------------------------------------------------------

GAMES = list(mgdt_config.get_config("smoke").data.games)


@pytest.fixture
def mgdt_plays(monkeypatch, no_training):
  """Plays recorded as (run, envs, steps, kappa_scale, knobs) instead of rolled out."""
  del no_training
  played = []

  def load(workdir):
    return types.SimpleNamespace(config=mgdt_config.get_config("smoke"), dataset=None,
                                 state=None)

  def play(config, state, key, *, envs, steps, **knobs):
    del state, key
    played.append((config.play.kappa_scale, envs, steps, tuple(sorted(knobs.items()))))
    return {"score": 0.1 * len(played)}

  def scores(config, result):
    out = {f"play/{g}/{k}": result["score"] for g in config.data.games
           for k in ("return", "normalised")}
    return {**out, "play/iqm_normalised": result["score"]}

  monkeypatch.setattr(trained, "load", load)
  monkeypatch.setattr(mgdt.mgdt_algo, "play", play)
  monkeypatch.setattr(mgdt.mgdt_algo, "scores", scores)
  return played


def _mgdt_config(**overrides):
  config = mgdt.defaults()
  config.update(seeds=(0,), envs=2, steps=5, studies=("returns", "sizes"), smoke=True)
  config.update(overrides)
  return config


def test_mgdt_reruns_changed_settings(tmp_path, mgdt_plays, no_training):
  summary = run_study(_mgdt_config(), str(tmp_path))
  _check_workdir(tmp_path, summary)
  plays = len(mgdt_plays)
  assert plays == summary["step"] == 6 + 3  # returns: 3 κ, best of, fixed R, BC; 3 sizes
  assert "returns/best_of_16/iqm" in summary["headline"]
  assert {w.rsplit("/", 1)[1] for w in no_training} == {
      "dt-seed0", "bc-seed0", "size-tiny", "size-base"}
  assert (tmp_path / "artifacts" / "mgdt_study.md").read_text().count("| κ=3 |") == 1
  run_study(_mgdt_config(), str(tmp_path))
  assert len(mgdt_plays) == plays  # same settings: every play reused
  run_study(_mgdt_config(seeds=(0, 1)), str(tmp_path))
  assert len(mgdt_plays) == plays + 6  # a new seed: its returns plays only
  plays = len(mgdt_plays)
  for changed, last in (({"envs": 3}, ("game", 3, 5)), ({"steps": 7}, ("game", 2, 7)),
                        ({"kappa_scale": "global"}, ("global", 2, 5)), ({"best_of": 4}, None),
                        ({"target_return": 10.0}, None), ({"smoke": False}, None)):
    run_study(_mgdt_config(**changed), str(tmp_path))
    assert len(mgdt_plays) == plays + 9, changed  # every play of both studies again
    assert last is None or mgdt_plays[-1][:3] == last
    plays = len(mgdt_plays)


# --- unipi --------------------------------------------------------------------------------

@pytest.fixture
def unipi_measures(monkeypatch, no_training):
  """Closed-loop episodes and plans replaced by counters."""
  del no_training
  calls = {"control": [], "consistency": []}
  smoke = ml_collections.ConfigDict({"seed": 0, "control": {"episodes": 0}, "data": {}})

  def control(config, state, key, *, want, guidance=None, act=None, policy=None):
    del state, key, guidance, act
    calls["control"].append(config.control.episodes)
    return {"goto": types.SimpleNamespace(success_rate=0.5, mean_steps=3.0,
                                          success=[True, False])}

  def window_plans(config, state, split, key, *, count, guidance=None, policy=None):
    del config, state, split, key, guidance
    calls["consistency"].append(count)
    video = np.zeros((count, 3, 2, 2, 3), np.float32)
    return video + 0.1, video

  dataset = types.SimpleNamespace(test=None)
  monkeypatch.setattr(trained, "load", lambda workdir: types.SimpleNamespace(
      config=smoke.copy_and_resolve_references(), dataset=dataset, state=None))
  monkeypatch.setattr(unipi.unipi_algo, "control", control)
  monkeypatch.setattr(unipi.unipi_algo, "window_plans", window_plans)
  monkeypatch.setattr(unipi.babyai_source, "heldout_split", lambda data: None)
  return calls


def _unipi_config(**overrides):
  config = unipi.defaults()
  config.update(episodes=2, windows=4, studies=("control", "consistency"), smoke=True)
  config.update(overrides)
  return config


def test_unipi_reruns_changed_settings(tmp_path, unipi_measures):
  summary = run_study(_unipi_config(), str(tmp_path))
  _check_workdir(tmp_path, summary)
  assert summary["control/unipi_w=1/heldout"] == 0.5 and summary["step"] == 7 + 3
  assert unipi_measures == {"control": [2] * 14, "consistency": [4] * 6}
  run_study(_unipi_config(record=5), str(tmp_path))  # GIFs only: nothing measured again
  assert len(unipi_measures["control"]) == 14 and len(unipi_measures["consistency"]) == 6
  run_study(_unipi_config(episodes=3), str(tmp_path))  # control again, consistency reused
  assert unipi_measures["control"][14:] == [3] * 14 and len(unipi_measures["consistency"]) == 6
  run_study(_unipi_config(windows=8), str(tmp_path))  # consistency again, control reused
  assert unipi_measures["consistency"][6:] == [8] * 6 and len(unipi_measures["control"]) == 28
  for changed in ({"seed": 1}, {"smoke": False}):
    run_study(_unipi_config(**changed), str(tmp_path))
  assert len(unipi_measures["control"]) == 28 + 28 and len(unipi_measures["consistency"]) == 24
