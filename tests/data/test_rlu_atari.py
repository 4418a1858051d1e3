"""The rlu_atari source on a tiny dataset really prepared as ArrayRecord under the real name.

`tfds.testing.mock_data` cannot stand in here: in data_source mode it encodes its random
84x84 images with TensorFlow. So a builder with rlu_atari's own features and name writes a few
episodes (PNGs encoded by PIL, no TF) to a temporary data_dir, and the source reads them
through `tfds.data_source` exactly as it reads the full-size dataset. Expected windows are
built from TFDS's own nested decoding of the same records, step by step.
"""

import io

import ml_collections
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.rl_unplugged.rlu_atari import rlu_atari as tfds_rlu_atari

from jaxml.data import load_dataset
from jaxml.data.sources import rlu_atari
from jaxml.errors import ConfigError

GAMES = ("Pong", "Breakout")
LENGTHS = (2, 3, 6, 7, 9)  # per game; some shorter than the context and the frame stack
CONTEXT = 4


def png(image: np.ndarray) -> bytes:
  out = io.BytesIO()
  PIL.Image.fromarray(image).save(out, format="PNG")
  return out.getvalue()


class FakeRluAtari(tfds_rlu_atari.RluAtari, skip_registration=True):
  """rlu_atari's features and name, with made-up episodes instead of the GCS download."""

  name = "rlu_atari"
  url_infos = None  # no downloads to checksum (tfds 4.9.10 needs importlib_resources for it)

  def _split_generators(self, dl_manager):
    return {"train": self._episodes()}

  def _episodes(self):
    game = self.builder_config.game
    num_actions = len(rlu_atari.minimal_actions(game))
    for episode, length in enumerate(LENGTHS):
      rng = np.random.default_rng([GAMES.index(game), episode])
      steps = [{"observation": png(rng.integers(0, 256, (84, 84), dtype=np.uint8)),
                "action": int(rng.integers(num_actions)),
                "reward": float(rng.choice([0.0, 1.0, -1.0, 7.0])),  # raw, unclipped
                "is_first": t == 0, "is_last": t == length - 1,
                "is_terminal": t == length - 1, "discount": 1.0} for t in range(length)]
      yield str(episode), {"steps": steps, "checkpoint_id": 0, "episode_id": episode,
                           "episode_return": 0.0}


def prepare_fake(data_dir: str) -> str:
  """Writes the fake `rlu_atari` of every game in GAMES under `data_dir` (TFDS layout)."""
  for game in GAMES:
    FakeRluAtari(config=f"{game}_run_1", data_dir=data_dir,
                 file_format="array_record").download_and_prepare()
  return data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return prepare_fake(str(tmp_path_factory.mktemp("tfds")))


def config(data_dir, source="rlu_atari", **fields):
  return ml_collections.ConfigDict({"source": source, "data_dir": data_dir, "games": GAMES,
                                    "context": CONTEXT, "test_fraction": 0.4, **fields})


def reference(data_dir, game):
  """The game's episodes in record order, decoded by TFDS's nested decoding (not ours)."""
  source = tfds.data_source(f"rlu_atari/{game}_run_1", split="train", data_dir=data_dir,
                            download=False)
  return [{key: np.stack([step[key] for step in record["steps"]])
           for key in ("observation", "action", "reward", "is_last")} for record in source]


def expected_window(episode, game, start, stack):
  """The window at `start`, built step by step from the definition."""
  steps, full = len(episode["action"]), rlu_atari.minimal_actions(game)
  frame = np.zeros((CONTEXT, 84, 84, stack), np.float32)
  for k in range(min(CONTEXT, steps - start)):
    for channel in range(stack):
      t = start + k - (stack - 1) + channel
      if t >= 0:
        frame[k, ..., channel] = episode["observation"][t, ..., 0] / 255
  valid = np.arange(CONTEXT) < steps - start
  pad = lambda x: np.where(valid, np.resize(x[start:start + CONTEXT], CONTEXT), 0)  # noqa: E731
  return {"frame": frame, "action": pad(full[episode["action"]]), "reward": pad(episode["reward"]),
          "done": pad(episode["is_last"]).astype(bool),
          "return_to_go": pad(np.cumsum(episode["reward"][::-1])[::-1]),
          "step_mask": valid.astype(np.float32)}


@pytest.mark.parametrize("stack", [4, 2])
def test_windows_match_their_definition(data_dir, stack):
  dataset = rlu_atari.load(config(data_dir, frame_stack=stack))
  assert dataset.task.kind == "none" and dataset.fields["frame"].shape[1:] == (84, 84, stack)
  assert dataset.fields["game"].categories == GAMES
  assert dataset.name == "rlu_atari:Pong_run_1,Breakout_run_1"
  episodes = {g: reference(data_dir, game) for g, game in enumerate(GAMES)}
  for split in (dataset.train, dataset.test):
    batch = split.read(np.arange(len(split)))
    dtypes = {"frame": np.float32, "action": np.int32, "reward": np.float32, "done": bool,
              "return_to_go": np.float32, "step_mask": np.float32, "game": np.int32}
    assert {k: v.dtype for k, v in batch.items()} == dtypes
    assert batch["frame"].shape == (len(split), CONTEXT, 84, 84, stack)
    assert batch["game"].shape == (len(split),)
    i = 0
    for game, record in zip(split.game, split.record):
      episode = episodes[game][record]
      for start in range(len(episode["action"])):
        want = expected_window(episode, GAMES[game], start, stack)
        for key, value in want.items():
          np.testing.assert_allclose(batch[key][i], value, rtol=1e-6, err_msg=key)
        assert batch["game"][i] == game
        i += 1
    assert i == len(split)


def test_frame_stacking_padding_and_actions_explicitly(data_dir):
  dataset = rlu_atari.load(config(data_dir))
  # The 3-step episode of some game, in whichever split the record shuffle put it.
  split, e = next((s, e) for s in (dataset.train, dataset.test)
                  for e in np.flatnonzero(np.diff(s.offsets) == 3))
  episode = reference(data_dir, GAMES[split.game[e]])[split.record[e]]
  window = {k: v[0] for k, v in split.read(np.array([split.offsets[e]])).items()}
  obs = episode["observation"][..., 0] / np.float32(255)
  np.testing.assert_allclose(window["frame"][0, ..., 3], obs[0])  # newest frame last
  np.testing.assert_array_equal(window["frame"][0, ..., :3], 0)  # before the episode's start
  np.testing.assert_allclose(window["frame"][2], np.stack([0 * obs[0], obs[0], obs[1], obs[2]],
                                                          axis=-1))
  np.testing.assert_array_equal(window["step_mask"], [1, 1, 1, 0])
  np.testing.assert_array_equal(window["frame"][3], 0)
  assert window["done"].tolist() == [False, False, True, False]
  np.testing.assert_allclose(window["return_to_go"][:3], np.cumsum(episode["reward"][::-1])[::-1])
  pong = np.array([0, 1, 3, 4, 11, 12])  # NOOP FIRE RIGHT LEFT RIGHTFIRE LEFTFIRE
  breakout = np.array([0, 1, 3, 4])  # NOOP FIRE RIGHT LEFT
  full = (pong, breakout)[split.game[e]]
  np.testing.assert_array_equal(window["action"][:3], full[episode["action"]])


def test_train_and_test_hold_disjoint_episodes(data_dir):
  dataset = rlu_atari.load(config(data_dir))
  train = set(zip(dataset.train.game.tolist(), dataset.train.record.tolist()))
  test = set(zip(dataset.test.game.tolist(), dataset.test.record.tolist()))
  assert not train & test
  assert train | test == {(g, r) for g in range(2) for r in range(len(LENGTHS))}
  assert {r for _, r in test} == {3, 4}  # the last 40% of each game's records
  assert len(dataset.train) + len(dataset.test) == 2 * sum(LENGTHS)


def test_source_argument_max_episodes_and_dispatch(data_dir):
  fields = {"source": "rlu_atari:Breakout_run_1", "data_dir": data_dir, "max_episodes": 3,
            "test_fraction": 1 / 3}
  dataset = load_dataset(ml_collections.ConfigDict(fields))
  lengths = [len(e["action"]) for e in reference(data_dir, "Breakout")]
  assert len(dataset.train) + len(dataset.test) == sum(lengths[:3])
  assert set(dataset.train.game.tolist()) == {0}
  with pytest.raises(IndexError):
    dataset.test.read(np.array([len(dataset.test)]))


@pytest.mark.parametrize("fields, match", [
    ({"games": ("Pongg",)}, r"no game 'Pongg'. Did you mean Pong"),
    ({"games": ("Pong",), "run": 9}, r"run 9 is not one of \(1, 2, 3, 4, 5\)"),
    ({"games": ()}, r"needs games"),
    ({"context": 0}, r"context=0 .* must be >= 1"),
    ({"frame_stack": 0}, r"frame_stack=0 must be >= 1"),
    ({"test_fraction": 1.0}, r"test_fraction=1.0 in \(0, 1\)"),
    ({"source": "rlu_atari:Pong_run_1"}, r"data.games=\['Pong', 'Breakout'\] disagrees"),
    ({"source": "rlu_atari:Pong-1", "games": None}, r"cannot parse 'Pong-1'"),
    ({"max_episodes": 1}, r"too few episodes for a train and a test split"),
])
def test_config_errors(data_dir, fields, match):
  with pytest.raises(ConfigError, match=match):
    rlu_atari.load(config(data_dir, **fields))


def test_unprepared_dataset_names_its_directory_and_the_build_command(tmp_path):
  with pytest.raises(ConfigError) as error:
    rlu_atari.load(config(str(tmp_path), games=("Breakout", "Pong")))
  message = str(error.value)
  assert f"rlu_atari/Breakout_run_1 is not prepared in {tmp_path}/rlu_atari/Breakout_run_1/" in (
      message)
  assert ("pip install 'jaxml[tf]' apache-beam && tfds build rlu_atari/Breakout_run_1 "
          f"--file_format=array_record --data_dir={tmp_path}") in message


def test_valid_actions_table():
  table = rlu_atari.valid_actions(("Pong", "Alien"))
  assert table.shape == (2, 18) and table[1].all()
  assert np.flatnonzero(table[0]).tolist() == [0, 1, 3, 4, 11, 12]


def test_minimal_action_table_equals_ale_py():
  ale_py = pytest.importorskip("ale_py")
  ale = ale_py.ALEInterface()
  ale.setLoggerMode(ale_py.LoggerMode.Error)
  # Every game the table lists, and some that it leaves at all 18 actions: ALE takes ~0.2 s
  # to load a ROM, so checking all 46 games would double this file's run time.
  full_games = [game for game in rlu_atari.GAMES if game not in rlu_atari.MINIMAL_ACTIONS]
  for game in sorted(rlu_atari.MINIMAL_ACTIONS) + full_games[::5]:
    rom = "".join(f"_{c.lower()}" if c.isupper() else c for c in game)[1:]  # UpNDown: up_n_down
    ale.loadROM(ale_py.roms.get_rom_path(rom))
    minimal = [action.value for action in ale.getMinimalActionSet()]
    assert rlu_atari.minimal_actions(game).tolist() == minimal, game
