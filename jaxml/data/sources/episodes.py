"""Offline MinAtar episodes (format: `jaxml.data.formats.minatar_episodes`), read as windows of
consecutive steps.

Source `episodes:<dir>`. Config fields: `context` (steps per window, default 4), `games` and
`policies` (subsets of the manifest's; default all), `test_fraction` (the last fraction of each
(game, policy)'s episodes is the test split; default 0.1), `max_episodes` (> 0: train on only
the first that many episodes of each (game, policy), e.g. to fine-tune on a few episodes of a
new game; the test split is unchanged).

Example i of a split is the window of `context` steps starting at one step of one episode;
every step of every episode starts a window, and a window that runs past its episode's end is
padded (`step_mask` 0). Fields: `frame` [K, 10, 10, 10] float32, `action` [K] int32 (full
MinAtar action set), `reward` [K] float32, `done` [K] bool, `return_to_go` [K] float32,
`step_mask` [K] float32, `game` [] int32 (index into the dataset's games, which are its
categories). The task is kind "none" (no single target), with input `frame`.

Loading never builds: with `build.enabled` and `build.command` naming the collection
command's module, the runner builds the dataset on first use (`jaxml.training.data.
prepare_data`; `build.games`, `build.policies`, `build.envs`, `build.steps`, `build.seed`,
`build.ppo_steps`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxml.data.base import Dataset, Field, Task
from jaxml.data.formats import minatar_episodes as stored
from jaxml.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class WindowSplit:
  """Windows over a list of episodes (each a dict of per-step arrays plus its game index)."""

  episodes: tuple
  starts: np.ndarray  # [N, 2]: (episode, first step) of every window
  context: int

  def __len__(self) -> int:
    return len(self.starts)

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    rows = [self._window(*self.starts[i]) for i in np.asarray(indices)]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]} if rows else {}

  def _window(self, episode: int, start: int) -> dict[str, np.ndarray]:
    ep = self.episodes[episode]
    stop = min(start + self.context, len(ep["action"]))
    pad = self.context - (stop - start)

    def take(x, dtype):
      x = np.asarray(x[start:stop], dtype)
      return np.concatenate([x, np.zeros((pad,) + x.shape[1:], dtype)]) if pad else x

    return {"frame": take(ep["frame"], np.float32), "action": take(ep["action"], np.int32),
            "reward": take(ep["reward"], np.float32), "done": take(ep["done"], bool),
            "return_to_go": take(ep["return_to_go"], np.float32),
            "step_mask": np.concatenate([np.ones(stop - start, np.float32),
                                         np.zeros(pad, np.float32)]),
            "game": np.int32(ep["game"])}


def window_fields(context: int, frame_shape, games) -> dict[str, Field]:
  """What `WindowSplit.read` returns per window of `context` steps of `frame_shape` frames."""
  per_step = {"action": "int32", "reward": "float32", "done": "bool",
              "return_to_go": "float32", "step_mask": "float32"}
  return {"frame": Field((context, *frame_shape), "float32"),
          **{name: Field((context,), dtype) for name, dtype in per_step.items()},
          "game": Field((), "int32", tuple(games))}


WINDOW_TASK = Task("none", inputs=("frame",), target=None, num_classes=0)


def windows(episodes, context: int) -> WindowSplit:
  starts = np.array([(e, s) for e, ep in enumerate(episodes)
                     for s in range(len(ep["action"]))], np.int64).reshape(-1, 2)
  return WindowSplit(tuple(episodes), starts, context)


def check_finite(episodes, path: str) -> None:
  """Raises ConfigError if a stored float array holds NaN or Inf. Loading checks only a sample
  of windows (`jaxml.data.check`), but the episodes are in memory, so they are checked whole."""
  for key in ("reward", "frame"):
    values = [np.asarray(ep[key]) for ep in episodes]
    if values and np.issubdtype(values[0].dtype, np.floating):
      finite = [bool(np.isfinite(v).all()) for v in values]
      if not all(finite):
        raise ConfigError(f"episodes: {path} field {key!r} holds NaN or Inf in episode "
                          f"{finite.index(False)}")


def load(data_config) -> Dataset:
  root = data_config.source.partition(":")[2] or data_config.get("dir", "")
  if not root:
    raise ConfigError("episodes source needs a directory: source='episodes:<dir>'")
  manifest = stored.read_manifest(root)
  games = list(data_config.get("games") or manifest["games"])
  policies = list(data_config.get("policies") or manifest["policies"])
  context = int(data_config.get("context", 4))
  test_fraction = float(data_config.get("test_fraction", 0.1))
  max_episodes = int(data_config.get("max_episodes", 0))
  if context < 1 or not 0 < test_fraction < 1 or max_episodes < 0:
    raise ConfigError(f"episodes: context={context} must be >= 1, test_fraction="
                      f"{test_fraction} in (0, 1) and max_episodes={max_episodes} >= 0")
  missing = [g for g in games if g not in manifest["games"]] + [
      p for p in policies if p not in manifest["policies"]]
  if missing:
    raise ConfigError(f"episodes: {missing} not in the dataset at {root} (games "
                      f"{manifest['games']}, policies {manifest['policies']})")
  train, test = [], []
  for game_index, game in enumerate(games):
    for policy in policies:
      path = os.path.join(root, game, f"{policy}.npz")
      episodes = stored.read_episodes(path)
      check_finite(episodes, path)
      for ep in episodes:
        ep["return_to_go"] = stored.returns_to_go(ep["reward"])
        ep["game"] = game_index
      cut = len(episodes) - int(round(test_fraction * len(episodes)))
      train += episodes[:cut][:max_episodes or None]
      test += episodes[cut:]
  if not train or not test:
    raise ConfigError(f"episodes at {root}: too few episodes for a train and a test split")
  fields = window_fields(context, train[0]["frame"].shape[1:], games)
  return Dataset(windows(train, context), windows(test, context), fields, WINDOW_TASK,
                 name=f"episodes:{root}")
