"""The babyai:<dir> source: windows of frames, actions and mission tokens, built on first use
by the runner's prepare_data (loading itself never builds)."""

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.sources import babyai as source
from jaxml.envs import babyai
from jaxml.errors import ConfigError
from jaxml.training.data import prepare_data

pytest.importorskip("minigrid")

HORIZON = 6


def pixels(frames: np.ndarray) -> np.ndarray:
  return frames.astype(np.float32) / 255.0


def config(root, **overrides) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "source": f"babyai:{root}", "horizon": HORIZON, "test_fraction": 0.25,
      "build": {"enabled": True, "command": "jaxml.envs.babyai",
                "levels": ["goto", "pickup", "putnext"], "episodes": 4,
                "heldout_episodes": 2, "seed": 0, "tile": 4},
      **overrides})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("babyai"))


@pytest.fixture(scope="module")
def dataset(root):
  assert prepare_data(config(root))
  return load_dataset(config(root))


def test_windows_start_at_every_step_and_pad_at_the_end(root, dataset):
  assert dataset.task.kind == "none" and dataset.fields["video"].shape[1:] == (24, 24, 3)
  assert dataset.fields["level"].categories == ("goto", "pickup", "putnext")
  train = babyai.read_episodes(f"{root}/goto/train.npz")[:3]  # 4 episodes: 3 train, 1 test
  assert len(dataset.train) == sum(len(e["actions"]) for level in babyai.LEVELS
                                   for e in babyai.read_episodes(f"{root}/{level}/train.npz")[:3])
  first = train[0]
  length = len(first["actions"])
  batch = dataset.train.read(np.array([0, length - 1]))  # episode 0's first and last step
  assert batch["video"].shape == (2, HORIZON + 1, 24, 24, 3)
  assert batch["video"].dtype == np.float32 and 0 <= batch["video"].min() <= 1
  np.testing.assert_array_equal(batch["video"][0, :length + 1][:HORIZON + 1],
                                pixels(first["frames"][:HORIZON + 1]))
  # The last step's window: its action, then the final frame repeated under a zero mask.
  np.testing.assert_array_equal(batch["actions"][1], [first["actions"][-1]] + [0] * (HORIZON - 1))
  np.testing.assert_array_equal(batch["action_mask"][1], [1] + [0] * (HORIZON - 1))
  np.testing.assert_array_equal(batch["video"][1, 1:],
                                np.broadcast_to(pixels(first["frames"][-1]), (HORIZON, 24, 24, 3)))
  np.testing.assert_array_equal(batch["video"][1, 0], pixels(first["frames"][-2]))
  np.testing.assert_array_equal(batch["tokens"][0], babyai.tokenize([first["mission"]])[0])
  np.testing.assert_array_equal(batch["level"], [0, 0])
  everything = dataset.train.read(np.arange(len(dataset.train)))
  assert set(np.unique(everything["level"])) == {0, 1, 2}
  np.testing.assert_array_equal(everything["action_mask"].sum(), sum(
      min(len(e["actions"]) - s, HORIZON) for level in babyai.LEVELS
      for e in babyai.read_episodes(f"{root}/{level}/train.npz")[:3]
      for s in range(len(e["actions"]))))
  assert not any(babyai.is_heldout(m) for m in dataset.train.missions + dataset.test.missions)


def test_reads_are_deterministic_and_order_free(dataset):
  indices = np.array([5, 0, len(dataset.test) - 1, 5])
  batch = dataset.test.read(indices)
  again = dataset.test.read(indices[::-1])
  for key, value in batch.items():
    np.testing.assert_array_equal(value, again[key][::-1])
  assert dataset.test.read(np.zeros(0, np.int64))["video"].shape == (0, HORIZON + 1, 24, 24, 3)


def test_heldout_split_reads_only_heldout_missions(root, dataset):
  del dataset  # built
  heldout = source.heldout_split(config(root, levels=["pickup", "putnext"]))
  assert len(heldout.missions) == 4 and all(babyai.is_heldout(m) for m in heldout.missions)
  batch = heldout.read(np.arange(len(heldout)))
  assert set(np.unique(batch["level"])) == {0, 1}  # indices into the configured levels
  assert batch["tokens"].shape == (len(heldout), 12)


def test_an_existing_dataset_is_reused(root, dataset, monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("rebuilt")

  monkeypatch.setattr(babyai, "build", fail)
  assert not prepare_data(config(root, max_len=10))
  again = load_dataset(config(root, max_len=10))
  assert again.train.tokens.shape[1] == 10
  np.testing.assert_array_equal(again.train.first, dataset.train.first)


def test_bad_configs(tmp_path, root, dataset):
  del dataset  # built
  with pytest.raises(ConfigError, match="manifest.json missing"):
    load_dataset(ml_collections.ConfigDict({"source": f"babyai:{tmp_path}"}))
  with pytest.raises(ConfigError, match="manifest.json missing"):  # loading never builds
    load_dataset(config(tmp_path / "unbuilt"))
  with pytest.raises(ConfigError, match="needs a directory"):
    load_dataset(ml_collections.ConfigDict({"source": "babyai"}))
  with pytest.raises(ConfigError, match="not in the dataset"):
    load_dataset(config(root, levels=["gotoseq"]))
  with pytest.raises(ConfigError, match="more than max_len=5"):
    load_dataset(config(root, max_len=5))
  with pytest.raises(ConfigError, match="horizon=0"):
    load_dataset(config(root, horizon=0))
