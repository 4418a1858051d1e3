"""Offline MinAtar episodes: splitting streams, returns-to-go, storage, and windows."""

import json
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.envs import collect, minatar
from jaxml.errors import ConfigError
from tests.launch_utils import REPO

# Its trained fixture is costly: one worker runs all of its tests (--dist loadgroup in
# pyproject.toml), and the fixture is session-scoped, so it is built once (a module-scoped one
# is torn down whenever the worker runs another module's test in between, and built again).
pytestmark = pytest.mark.xdist_group("collect")


def test_split_episodes_keeps_finished_episodes_per_env():
  done = np.zeros((7, 2), bool)
  done[[2, 5], 0] = True  # env 0: episodes of steps 0-2 and 3-5, then an unfinished step
  done[6, 1] = True  # env 1: one episode of 7 steps
  stream = {"action": np.arange(14).reshape(7, 2), "done": done}
  episodes = collect.split_episodes(stream)
  assert [e["action"].tolist() for e in episodes] == [[0, 2, 4], [6, 8, 10],
                                                     [1, 3, 5, 7, 9, 11, 13]]
  assert all(e["done"][-1] and not e["done"][:-1].any() for e in episodes)


def test_returns_to_go_are_suffix_sums():
  np.testing.assert_array_equal(collect.returns_to_go(np.array([1.0, 0.0, 2.0, -1.0])),
                                [2.0, 1.0, 1.0, -1.0])


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("episodes"))
  collect.build(out, ["breakout", "freeway"],
                collect.make_policies(["random"], ["breakout", "freeway"]), envs=4, steps=150,
                seed=0)
  return out


def test_build_writes_episodes_and_manifest(dataset_dir):
  manifest = json.load(open(f"{dataset_dir}/manifest.json"))
  assert manifest["games"] == ["breakout", "freeway"]
  breakout = collect.read_episodes(f"{dataset_dir}/breakout/random.npz")
  stats = manifest["per_game"]["breakout"]["random"]
  assert stats["episodes"] == len(breakout) > 4
  assert stats["max_return"] == max(collect.episode_return(e) for e in breakout)
  assert all(e["frame"].shape[1:] == (10, 10, 10) and e["frame"].dtype == bool for e in breakout)
  # Freeway's episodes last 2500 steps: none finishes in 150, and none is stored.
  assert manifest["per_game"]["freeway"]["random"]["episodes"] == 0


def test_windows_pad_past_the_episode_end(dataset_dir):
  config = ml_collections.ConfigDict({"source": f"episodes:{dataset_dir}", "context": 5,
                                      "games": ("breakout",)})
  dataset = load_dataset(config)
  episodes = collect.read_episodes(f"{dataset_dir}/breakout/random.npz")
  cut = len(episodes) - round(0.1 * len(episodes))
  assert len(dataset.train) == sum(len(e["action"]) for e in episodes[:cut])
  first = episodes[0]
  length = len(first["action"])
  window = dataset.train.read(np.array([length - 2]))  # the last two steps of episode 0
  np.testing.assert_array_equal(window["step_mask"][0], [1, 1, 0, 0, 0])
  np.testing.assert_array_equal(window["action"][0, :2], first["action"][-2:])
  rtg = collect.returns_to_go(first["reward"])
  np.testing.assert_array_equal(window["return_to_go"][0, :2], rtg[-2:])
  assert window["frame"].shape == (1, 5, 10, 10, 10) and window["game"][0] == 0
  # max_episodes keeps the first episodes for training; the test split does not change.
  few = load_dataset(ml_collections.ConfigDict({**config.to_dict(), "max_episodes": 2}))
  assert len(few.train) == sum(len(e["action"]) for e in episodes[:2])
  np.testing.assert_array_equal(few.test.starts, dataset.test.starts)


def test_bad_dataset_configs(tmp_path, dataset_dir):
  with pytest.raises(ConfigError, match="manifest.json missing"):
    load_dataset(ml_collections.ConfigDict({"source": f"episodes:{tmp_path}"}))
  with pytest.raises(ConfigError, match="not in the dataset"):
    load_dataset(ml_collections.ConfigDict({"source": f"episodes:{dataset_dir}",
                                            "games": ("pong",)}))


def test_epsilon_noisy_ppo_plays_better_than_random_and_worse_than_ppo():
  names = ["random", "ppo_eps0.5", "ppo"]
  policies = collect.make_policies(names, ["breakout"], ppo_steps=150_000, seed=0)
  games = minatar.make_games(["breakout"])
  means = []
  for name in names:
    result = jax.jit(lambda k, agent=policies[name]: minatar.rollout(
        games, agent, k, envs_per_game=32, num_steps=400))(jax.random.key(1))
    means.append(float(np.nanmean(result["first_return"])))
  assert means[0] < means[1] < means[2], means
  with pytest.raises(ConfigError, match="unknown policy"):
    collect.parse_policy("ppo_eps2")


def test_command_rejects_unknown_policy_with_exit_2(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "jaxml.envs.collect", f"--out={tmp_path}",
                         "--policies=expert_oracle"], capture_output=True, text=True, cwd=REPO,
                        check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown policy")
