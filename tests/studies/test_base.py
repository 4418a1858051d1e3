"""The study protocol: loaded by name, every setting checked before anything trains, and the
benchmark command lines answer bad settings with one line and exit 2."""

import os

import ml_collections
import pytest

from jaxml.errors import ConfigError
from jaxml.studies import base, mgdt, run_study, unipi
from tests.launch_utils import load_benchmark


def test_studies_are_loaded_by_name(tmp_path):
  assert base.available() == ["allo", "copd", "diarization", "dp_features", "drift",
                              "early_readouts", "fairness", "mgdt", "odor",
                              "smooth_activations", "unipi"]
  with pytest.raises(ConfigError, match="unknown study 'nope'; available: allo, copd, "
                     "diarization, dp_features, drift, early_readouts, fairness, mgdt"):
    run_study(ml_collections.ConfigDict({"study": "nope"}), str(tmp_path))


@pytest.mark.parametrize("module,overrides,message", [
    (mgdt, {"envs": 0}, "envs=0 must be an integer >= 1"),
    (mgdt, {"seeds": ()}, "seeds=[]"),
    (mgdt, {"kappa_scale": "best"}, "kappa_scale='best'"),
    (mgdt, {"studies": ("returns", "sizez")}, "studies=['returns', 'sizez']"),
    (unipi, {"episodes": 0}, "episodes=0"),
    (unipi, {"windows": 1}, "windows=1"),
    (unipi, {"studies": ("ctrl",)}, "studies=['ctrl']"),
])
def test_bad_settings_fail_before_anything_trains(module, overrides, message, tmp_path,
                                                  never_trains):
  del never_trains
  config = module.defaults()
  config.update(overrides)
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
    run_study(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # not even config.json


@pytest.mark.parametrize("script,study", [("mgdt_study", mgdt), ("unipi_study", unipi)])
def test_benchmark_command_lines_exit_2_on_bad_settings(script, study, tmp_path, capsys,
                                                        never_trains):
  del never_trains
  module = load_benchmark(script)
  with pytest.raises(SystemExit) as exit_info:
    module.main(["--out", str(tmp_path), "--studies", "nothing"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.strip().splitlines() == [
      f"error: studies=['nothing']: choose from {', '.join(study.STUDIES)}"]
