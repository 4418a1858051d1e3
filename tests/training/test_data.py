"""prepare_data: a config's `data.build` command builds the dataset once, before loading."""

import os

import ml_collections
import numpy as np
import pytest

from jaxml.core import files
from jaxml.data import load_dataset
from jaxml.data.formats import minatar_episodes
from jaxml.errors import ConfigError
from jaxml.training.data import prepare_data

BUILDS = []  # directories this module's builder was called with


def build_dataset(data_config, directory):
  """A stand-in builder (this module is the `command`): two games of synthetic episodes in
  the MinAtar episode format, no environment involved."""
  BUILDS.append(directory)
  if data_config.build.get("fail"):
    minatar_episodes.write_episodes(os.path.join(directory, "half.npz"), [])
    raise RuntimeError("builder crashed")
  rng = np.random.default_rng(0)
  games = list(data_config.build.games)
  for game in games:
    os.makedirs(os.path.join(directory, game))
    episodes = [{"frame": rng.random((n,) + minatar_episodes.FRAME_SHAPE) < 0.1,
                 "action": rng.integers(0, 6, n), "reward": rng.integers(0, 2, n).astype(float),
                 "done": np.arange(n) == n - 1} for n in (5, 7, 3, 6)]
    minatar_episodes.write_episodes(os.path.join(directory, game, "random.npz"), episodes)
  files.write_manifest(directory, {"games": games, "policies": ["random"]})


def config(root, **build) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "source": f"episodes:{root}", "context": 3, "test_fraction": 0.25,
      "build": {"enabled": True, "command": __name__, "games": ["breakout", "asterix"],
                **build}})


def test_builds_once_then_reuses(tmp_path):
  BUILDS.clear()
  root = tmp_path / "episodes"
  assert prepare_data(config(root))
  assert not prepare_data(config(root))  # the second run reuses the dataset
  assert len(BUILDS) == 1 and not os.path.exists(BUILDS[0])  # built aside, renamed into place
  dataset = load_dataset(config(root))
  assert dataset.fields["frame"].shape[1:] == minatar_episodes.FRAME_SHAPE
  window = dataset.train.read(np.arange(2))
  assert window["frame"].shape == (2, 3, 10, 10, 10)
  assert sorted(os.listdir(tmp_path)) == ["episodes"]


def test_a_failed_build_leaves_nothing_and_loading_never_builds(tmp_path):
  root = tmp_path / "episodes"
  with pytest.raises(RuntimeError, match="builder crashed"):
    prepare_data(config(root, fail=True))
  assert os.listdir(tmp_path) == []
  with pytest.raises(ConfigError, match="manifest.json missing"):
    load_dataset(config(root))


def test_disabled_or_absent_build_does_nothing(tmp_path):
  assert not prepare_data(config(tmp_path / "x", enabled=False))
  assert not prepare_data(ml_collections.ConfigDict({"source": "digits"}))
  assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("build,message", [
    ({"command": ""}, "needs data.build.command"),
    ({"command": "no_such.module"}, "is not a module with build_dataset"),
    ({"command": "jaxml.errors"}, "is not a module with build_dataset"),
])
def test_bad_build_commands_are_config_errors(tmp_path, build, message):
  with pytest.raises(ConfigError, match=message):
    prepare_data(config(tmp_path / "x", **build))


def test_a_source_without_a_directory_cannot_be_built():
  bad = ml_collections.ConfigDict({"source": "episodes", "build": {"enabled": True,
                                                                   "command": __name__}})
  with pytest.raises(ConfigError, match="names no directory"):
    prepare_data(bad)
