"""RL Unplugged Atari (TFDS `rlu_atari`: DQN replay episodes), read TF-free as MGDT windows.

Source `rlu_atari:<Game>_run_<n>[,<Game>_run_<n>...]` (e.g. `rlu_atari:Pong_run_1`), or plain
`rlu_atari` with `data.games` (e.g. ("Pong", "Breakout")) and `data.run` (default 1). The game
index of a window is the game's position in that list. Other config fields: `data_dir` (None
or "" = TFDS default), `context` (steps per window, default 4), `frame_stack` (S, default 4),
`test_fraction` (the last fraction of each game's episodes is the test split; default 0.1) and
`max_episodes` (read only each game's first N episodes; 0 = all). "First" and "last" are in
record order, which TFDS shuffled when preparing: a fixed sample across DQN checkpoints, not
the earliest or the latest play.

Windows have the fields of the `episodes:` source (`episodes.WindowSplit`): `frame`
[K, 84, 84, S] float32 in [0, 1] (the last S grayscale observations, the newest in the last
channel, zeros before the episode's start), `action` [K] int32 in ALE's full 18-action set,
`reward` [K] float32 (raw: TFDS 1.3.0 stores the unclipped reward, whatever its feature doc
says), `done` [K] bool (the episode's last step), `return_to_go` [K] float32 (sum of the raw
rewards from the step to the episode's end), `step_mask` [K] float32 and `game` [] int32
(categories: the games). The task is kind "none", with input `frame`.

Reading. `tfds.data_source` reads these nested-episode records without TensorFlow (measured
with tfds 4.9.10). Decoding a record's `steps` as a lazy nested source would cost one Python
call per step to collect the rewards a return-to-go needs, so `steps` is read undecoded
(`tfds.decode.SkipDecoding`: NumPy arrays of actions, rewards and PNG bytes) and only the
K + S - 1 PNGs a window shows are decoded. (`DESERIALIZE_NO_DECODE` would need TF.) Each episode
is one record, so reading a window reads its whole episode; loading reads every selected
episode once, to index windows by per-episode offsets: memory is O(episodes), frames stay on
disk; cap `max_episodes` on full-size runs.

Actions. rlu_atari actions index the game's *minimal* ALE action set (Dopamine played the
minimal sets). `MINIMAL_ACTIONS` is that set for every rlu_atari game, copied from ale-py
0.12.1's `ALEInterface.getMinimalActionSet()` (so ale-py and its ROMs are not needed to read
data; the tests check it against ale-py when that is installed); games not listed there use
all 18 actions.

Preparing needs TensorFlow and Apache Beam, once, and must write ArrayRecord:

    pip install 'jaxml[tf]' apache-beam && \
      tfds build rlu_atari/Pong_run_1 --file_format=array_record [--data_dir=DIR]
"""

from __future__ import annotations

import dataclasses
import difflib
import re

import numpy as np
import tensorflow_datasets as tfds
# Importing the builder registers it: tfds imports its dataset modules lazily.
from tensorflow_datasets.rl_unplugged.rlu_atari import rlu_atari as tfds_rlu_atari

from jaxml.data.base import Dataset
from jaxml.data.sources.episodes import WINDOW_TASK, WindowSplit, window_fields
from jaxml.errors import ConfigError

NAME = "rlu_atari"
NUM_ACTIONS = 18  # ALE's full action set
OBSERVATION_SHAPE = (84, 84)
GAMES = tuple(sorted({c.game for c in tfds_rlu_atari.RluAtari.BUILDER_CONFIGS}))
RUNS = tuple(sorted({c.run for c in tfds_rlu_atari.RluAtari.BUILDER_CONFIGS}))
# Full ALE action id of each minimal action, for the games whose minimal set is not all 18.
MINIMAL_ACTIONS = {
    "Amidar": (0, 1, 2, 3, 4, 5, 10, 11, 12, 13), "Assault": (0, 1, 2, 3, 4, 11, 12),
    "Asterix": (0, 2, 3, 4, 5, 6, 7, 8, 9), "Atlantis": (0, 1, 11, 12),
    "BeamRider": (0, 1, 2, 3, 4, 6, 7, 11, 12), "Breakout": (0, 1, 3, 4),
    "Carnival": (0, 1, 3, 4, 11, 12), "CrazyClimber": (0, 2, 3, 4, 5, 6, 7, 8, 9),
    "DemonAttack": (0, 1, 3, 4, 11, 12), "Enduro": (0, 1, 3, 4, 5, 8, 9, 11, 12),
    "Freeway": (0, 2, 5), "Gopher": (0, 1, 2, 3, 4, 10, 11, 12),
    "KungFuMaster": (0, 2, 3, 4, 5, 8, 9, 11, 12, 13, 14, 15, 16, 17),
    "MsPacman": (0, 2, 3, 4, 5, 6, 7, 8, 9), "NameThisGame": (0, 1, 3, 4, 11, 12),
    "Phoenix": (0, 1, 3, 4, 5, 11, 12, 13), "Pong": (0, 1, 3, 4, 11, 12),
    "Pooyan": (0, 1, 2, 5, 10, 13), "Qbert": (0, 1, 2, 3, 4, 5),
    "SpaceInvaders": (0, 1, 3, 4, 11, 12), "TimePilot": (0, 1, 2, 3, 4, 5, 10, 11, 12, 13),
    "UpNDown": (0, 1, 2, 5, 10, 13), "VideoPinball": (0, 1, 2, 3, 4, 5, 10, 11, 12),
    "WizardOfWor": (0, 1, 2, 3, 4, 5, 10, 11, 12, 13),
}


def minimal_actions(game: str) -> np.ndarray:
  """int32 [game's action count]: the full ALE action of each of the game's actions."""
  return np.asarray(MINIMAL_ACTIONS.get(game, range(NUM_ACTIONS)), np.int32)


def valid_actions(games) -> np.ndarray:
  """bool [len(games), 18]: which full actions each game has (MGDT's action masks)."""
  table = np.zeros((len(games), NUM_ACTIONS), bool)
  for row, game in enumerate(games):
    table[row, minimal_actions(game)] = True
  return table


class StackedFrames:
  """An episode's frames, decoded only when sliced: [steps, 84, 84, S] float32 in [0, 1]."""

  def __init__(self, pngs: np.ndarray, decode, stack: int):
    self._pngs, self._decode, self._stack = pngs, decode, stack

  def __len__(self) -> int:
    return len(self._pngs)

  def __getitem__(self, steps: slice) -> np.ndarray:
    start, stop, _ = steps.indices(len(self))
    stop = max(start, stop)
    first = start - self._stack + 1  # the oldest observation the first frame shows
    timeline = np.zeros((stop - first,) + OBSERVATION_SHAPE, np.float32)
    for t in range(max(first, 0), stop):
      timeline[t - first] = self._decode(self._pngs[t])[..., 0] * np.float32(1 / 255)
    # Frame t's channel c is observation t - (S - 1) + c: the window axis comes out last. A
    # view, not a copy: the caller stacks the batch, which copies once.
    return np.lib.stride_tricks.sliding_window_view(timeline, self._stack, axis=0)


@dataclasses.dataclass(frozen=True)
class RluAtariSplit:
  """Windows over episodes left on disk: window i starts at step i - offsets[e] of episode e.

  Per episode only its game, its record in that game's source and its first window's index
  are held; a read decodes the episodes it touches into `episodes.WindowSplit`'s format.
  """

  sources: tuple  # per game: tfds data source with `steps` undecoded
  games: tuple[str, ...]
  game: np.ndarray  # [E] game index of each episode
  record: np.ndarray  # [E] its record in its game's source
  offsets: np.ndarray  # [E + 1] index of each episode's first window; offsets[-1] = len
  context: int
  frame_stack: int

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f"indices out of range for a split of {len(self)} windows")
    episode = np.searchsorted(self.offsets, indices, side="right") - 1
    touched, position = np.unique(episode, return_inverse=True)
    starts = np.stack([position, indices - self.offsets[episode]], axis=1)
    return WindowSplit(self._episodes(touched), starts, self.context).read(
        np.arange(len(indices)))

  def _episodes(self, episodes: np.ndarray) -> tuple:
    """The episodes at `episodes` as WindowSplit episode dicts with lazily decoded frames."""
    steps = {}
    for game in np.unique(self.game[episodes]):
      mine = episodes[self.game[episodes] == game]
      records = self.sources[game].__getitems__([int(r) for r in self.record[mine]])
      steps.update(zip(mine, (r["steps"] for r in records)))
    return tuple(self._as_episode(steps[e], int(self.game[e])) for e in episodes)

  def _as_episode(self, steps: dict, game: int) -> dict:
    actions, full = np.asarray(steps["action"]), minimal_actions(self.games[game])
    if actions.size and not 0 <= actions.min() <= actions.max() < len(full):
      raise ValueError(f"rlu_atari {self.games[game]}: actions {actions.min()}.."
                       f"{actions.max()} outside its {len(full)} minimal actions")
    reward = np.asarray(steps["reward"], np.float32)
    decode = self.sources[game].dataset_info.features["steps"]["observation"].decode_example_np
    return {"frame": StackedFrames(steps["observation"], decode, self.frame_stack),
            "action": full[actions], "reward": reward, "done": np.asarray(steps["is_last"]),
            "return_to_go": np.cumsum(reward[::-1], dtype=np.float64)[::-1],
            "game": game}


def selected_runs(data_config) -> list[tuple[str, int]]:
  """(game, run) per game, from `rlu_atari:<Game>_run_<n>,...` or `data.games` + `data.run`."""
  arg = data_config.source.partition(":")[2]
  run = 1 if data_config.get("run") is None else int(data_config.get("run"))
  configured = list(data_config.get("games") or ())
  if arg:
    pairs = []
    for name in arg.split(","):
      match = re.fullmatch(r"(\w+?)(?:_run_(\d+))?", name.strip())
      if not match:
        raise ConfigError(f"rlu_atari: cannot parse {name!r}; expected <Game>_run_<n>")
      pairs.append((match[1], int(match[2] or run)))
    if configured and configured != [game for game, _ in pairs]:
      raise ConfigError(f"rlu_atari: data.games={configured} disagrees with the source's "
                        f"games {[game for game, _ in pairs]}; set one of them")
  else:
    pairs = [(game, run) for game in configured]
  if not pairs:
    raise ConfigError("rlu_atari needs games: source='rlu_atari:Pong_run_1' or data.games")
  for game, game_run in pairs:
    if game not in GAMES:
      close = difflib.get_close_matches(game, GAMES, n=3)
      hint = f" Did you mean {', '.join(close)}?" if close else f" Games: {', '.join(GAMES)}."
      raise ConfigError(f"rlu_atari has no game {game!r}.{hint}")
    if game_run not in RUNS:
      raise ConfigError(f"rlu_atari {game}: run {game_run} is not one of {RUNS}")
  if len(set(pairs)) != len(pairs):
    raise ConfigError(f"rlu_atari: {pairs} names a game run twice")
  return pairs


def open_run(game: str, run: int, data_dir: str | None):
  """The TF-free data source of one prepared game run, `steps` left undecoded."""
  name = f"{NAME}/{game}_run_{run}"
  builder = tfds.builder(name, data_dir=data_dir)
  flag = f" --data_dir={data_dir}" if data_dir else ""
  build = (f"pip install 'jaxml[tf]' apache-beam && tfds build {name} "
           f"--file_format=array_record{flag}")
  if not builder.is_prepared():
    raise ConfigError(f"{name} is not prepared in {builder.data_dir}. Prepare it once (needs "
                      f"TensorFlow and Apache Beam): {build}; or set data.data_dir to where it "
                      "is prepared.")
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise ConfigError(f"{name} in {builder.data_dir} is {builder.info.file_format.value}, which "
                      f"has no random access; prepare it as ArrayRecord: {build}")
  return builder.as_data_source(split="train", decoders={"steps": tfds.decode.SkipDecoding()})


def episode_lengths(source, count: int, chunk: int = 16) -> np.ndarray:
  """Steps in each of the first `count` episodes (reads each record once, in batches).

  A record holds a whole episode's PNGs (up to 27k steps), so batches are kept small.
  """
  lengths = []
  for first in range(0, count, chunk):
    records = source.__getitems__(list(range(first, min(first + chunk, count))))
    lengths += [len(r["steps"]["action"]) for r in records]
  return np.asarray(lengths, np.int64)


def load(data_config) -> Dataset:
  pairs = selected_runs(data_config)
  context = int(data_config.get("context", 4))
  frame_stack = int(data_config.get("frame_stack", 4))
  test_fraction = float(data_config.get("test_fraction", 0.1))
  max_episodes = int(data_config.get("max_episodes") or 0)
  if context < 1 or frame_stack < 1 or not 0 < test_fraction < 1 or max_episodes < 0:
    raise ConfigError(f"rlu_atari: context={context} and frame_stack={frame_stack} must be "
                      f">= 1, test_fraction={test_fraction} in (0, 1), max_episodes="
                      f"{max_episodes} >= 0 (0: all)")
  data_dir = data_config.get("data_dir") or None
  sources = tuple(open_run(game, run, data_dir) for game, run in pairs)
  games = tuple(game for game, _ in pairs)
  parts = {"train": [], "test": []}  # (game, record, length) arrays per game
  for game, source in enumerate(sources):
    count = min(len(source), max_episodes) if max_episodes else len(source)
    lengths = episode_lengths(source, count)
    cut = count - int(round(test_fraction * count))
    for role, records in (("train", np.arange(cut)), ("test", np.arange(cut, count))):
      parts[role].append((np.full(len(records), game), records, lengths[records]))
  splits = {}
  for role, rows in parts.items():
    game, record, length = (np.concatenate(column) for column in zip(*rows))
    if not length.sum():
      raise ConfigError(f"rlu_atari {list(games)}: too few episodes for a train and a test "
                        f"split (max_episodes={max_episodes}, test_fraction={test_fraction})")
    splits[role] = RluAtariSplit(sources, games, game.astype(np.int32), record,
                                 np.concatenate([[0], np.cumsum(length)]), context, frame_stack)
  fields = window_fields(context, OBSERVATION_SHAPE + (frame_stack,), games)
  return Dataset(splits["train"], splits["test"], fields, WINDOW_TASK,
                 name=f"{NAME}:" + ",".join(f"{g}_run_{r}" for g, r in pairs))
