"""BabyAI bot demonstrations (format: `jaxml.data.formats.babyai_demos`), read as short videos
with missions.

Source `babyai:<dir>`. Config fields: `horizon` (actions per window, default 8), `max_len`
(mission tokens, default 12), `levels` (a subset of the manifest's; default all),
`test_fraction` (the last fraction of each level's seen-mission episodes is the test split;
default 0.1).

Example i of a split is the window starting at one step of one episode; every step of every
episode starts a window. Fields: `video` [horizon + 1, H, W, 3] float32 in [0, 1], `actions`
[horizon] int32, `action_mask` [horizon] float32 (1 for real actions), `tokens` [max_len]
int32 (`babyai_demos.tokenize` of the mission), `level` [] int32 (index into the levels, which are
its categories), `episode` [] int32 (index into the split's episodes; e.g. to train a model on
a subset of them). A window that runs past its episode's end repeats the last frame (the scene
is static once the goal is reached) and pads actions with 0 under a zero mask. The task is
kind "none", with inputs `video` and `tokens`.

Held-out-mission episodes (`<level>/heldout.npz`, never trained on) are read by
`heldout_split(data_config)` as the same kind of split.

Loading never builds: with `build.enabled` and `build.command` naming the BabyAI dataset
command's module, the runner builds the dataset on first use (`jaxml.training.data.
prepare_data`; `build.levels`, default `levels` or all; `build.episodes`, default 1000 per
level; `build.heldout_episodes`, default a tenth; `build.seed`; `build.tile`, default 4).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxml.data.base import Dataset, Field, Task
from jaxml.data.formats import babyai_demos as stored
from jaxml.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class VideoWindowSplit:
  """Windows over episodes stored back to back; a read is one vectorised gather."""

  frames: np.ndarray  # [F, H, W, 3] uint8: each episode's T+1 frames, episodes back to back
  actions: np.ndarray  # [F] int32: the action taken at each frame (0 at an episode's last)
  tokens: np.ndarray  # [E, max_len] int32, per episode
  levels: np.ndarray  # [E] int32, per episode
  missions: tuple  # [E] str, per episode (for closed-loop evaluation)
  seeds: np.ndarray  # [E] int64, per episode: `babyai.Episode(level, seed)` replays it
  first: np.ndarray  # [N]: frame index where each window starts
  last: np.ndarray  # [N]: frame index of the last frame of its episode
  episode: np.ndarray  # [N]: its episode
  horizon: int

  def __len__(self) -> int:
    return len(self.first)

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64).reshape(-1)
    last = self.last[indices, None]
    steps = self.first[indices, None] + np.arange(self.horizon + 1)
    real = steps[:, :-1] < last  # frame t's action exists only before the episode's end
    episode = self.episode[indices]
    actions = np.where(real, self.actions[np.minimum(steps[:, :-1], last)], 0)
    return {"video": self.frames[np.minimum(steps, last)].astype(np.float32) / 255.0,
            "actions": actions.astype(np.int32), "action_mask": real.astype(np.float32),
            "tokens": self.tokens[episode], "level": self.levels[episode],
            "episode": episode.astype(np.int32)}


def window_fields(horizon: int, max_len: int, frame_shape, levels) -> dict[str, Field]:
  """What `VideoWindowSplit.read` returns per window."""
  return {"video": Field((horizon + 1, *frame_shape), "float32"),
          "actions": Field((horizon,), "int32"), "action_mask": Field((horizon,), "float32"),
          "tokens": Field((max_len,), "int32"), "level": Field((), "int32", tuple(levels)),
          "episode": Field((), "int32")}


def windows(episodes: list[dict], level_index: dict[str, int], horizon: int,
            max_len: int) -> VideoWindowSplit:
  """Every window of `horizon` actions over `episodes` (as `stored.read_episodes` gives)."""
  lengths = np.array([len(e["actions"]) for e in episodes], np.int64)
  start = np.concatenate([[0], np.cumsum(lengths + 1)])[:-1]
  episode = np.repeat(np.arange(len(episodes)), lengths)
  step = np.arange(len(episode)) - (np.cumsum(lengths) - lengths)[episode]
  frames = [e["frames"] for e in episodes]
  actions = [np.append(e["actions"], 0).astype(np.int32) for e in episodes]
  missions = tuple(e["mission"] for e in episodes)
  return VideoWindowSplit(
      frames=np.concatenate(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8),
      actions=np.concatenate(actions) if actions else np.zeros(0, np.int32),
      tokens=stored.tokenize(missions, max_len),
      levels=np.array([level_index[e["level"]] for e in episodes], np.int32),
      missions=missions, seeds=np.array([e["seed"] for e in episodes], np.int64),
      first=start[episode] + step, last=(start + lengths)[episode], episode=episode,
      horizon=horizon)


def _prepare(data_config) -> tuple[str, dict, list[str], int, int]:
  """(root, manifest, levels, horizon, max_len), checked."""
  root = data_config.source.partition(":")[2] or data_config.get("dir", "")
  if not root:
    raise ConfigError("babyai source needs a directory: source='babyai:<dir>'")
  manifest = stored.read_manifest(root)
  levels = list(data_config.get("levels") or manifest["levels"])
  missing = [level for level in levels if level not in manifest["levels"]]
  if missing:
    raise ConfigError(f"babyai: levels {missing} not in the dataset at {root} (levels "
                      f"{manifest['levels']})")
  horizon = int(data_config.get("horizon", 8))
  max_len = int(data_config.get("max_len", 12))
  if horizon < 1 or max_len < 1:
    raise ConfigError(f"babyai: horizon={horizon} and max_len={max_len} must be >= 1")
  return root, manifest, levels, horizon, max_len


def _read(root: str, levels: list[str], split: str) -> list[list[dict]]:
  return [stored.read_episodes(os.path.join(root, level, f"{split}.npz")) for level in levels]


def load(data_config) -> Dataset:
  root, manifest, levels, horizon, max_len = _prepare(data_config)
  test_fraction = float(data_config.get("test_fraction", 0.1))
  if not 0 < test_fraction < 1:
    raise ConfigError(f"babyai: test_fraction={test_fraction} must be in (0, 1)")
  train, test = [], []
  for episodes in _read(root, levels, "train"):
    cut = len(episodes) - int(round(test_fraction * len(episodes)))
    train += episodes[:cut]
    test += episodes[cut:]
  if not train or not test:
    raise ConfigError(f"babyai at {root}: too few episodes for a train and a test split")
  level_index = {level: i for i, level in enumerate(levels)}
  fields = window_fields(horizon, max_len, manifest["frame_shape"], levels)
  return Dataset(windows(train, level_index, horizon, max_len),
                 windows(test, level_index, horizon, max_len), fields,
                 Task("none", inputs=("video", "tokens"), target=None, num_classes=0),
                 name=f"babyai:{root}")


def heldout_split(data_config) -> VideoWindowSplit:
  """Windows over every held-out-mission episode of the levels (none is ever trained on)."""
  root, _, levels, horizon, max_len = _prepare(data_config)
  episodes = [e for level_episodes in _read(root, levels, "heldout") for e in level_episodes]
  return windows(episodes, {level: i for i, level in enumerate(levels)}, horizon, max_len)
