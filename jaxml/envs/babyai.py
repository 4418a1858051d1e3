"""BabyAI single-room levels (minigrid) as small fully observed videos with language missions.

  python -m jaxml.envs.babyai --out data/babyai --episodes 2000

Three levels share one 8x8 room (6x6 cells inside the wall ring), so every frame has one
shape: 6 * tile pixels square (24x24x3 at the default tile of 4).

  goto     BabyAI-GoToLocal-v0     "go to the red ball", "go to a grey key"
  pickup   BabyAI-PickupLoc-v0     "pick up the blue key", "pick up a ball on your left"
  putnext  BabyAI-PutNextLocal-v0  "put the green box next to the yellow ball"

PickupLoc is the only registered single-room pick-up level: its objects may be described
without a colour and with a location relative to the agent's start ("in front of you").

Frames are minigrid's own full-grid renderer without the agent's field-of-view highlight, so
the agent's position and heading (the red triangle) are visible and turn-left differs from
turn-right. A carried object is not drawn: it vanishes from the grid on pick-up (PutNextLocal's
objects are all distinct, so the missing one is the carried one).

Combinatorial generalisation: no training mission names a `HELDOUT_COMBOS` object in any slot,
nor a purple object in a pick-up (`HELDOUT_SLOT`), though every colour and type is trained.
Demonstrations come from minigrid's `BabyAIBot`; the layout of `--out` is
`jaxml.data.formats.babyai_demos`'s. The directory is built under a temporary name and renamed
into place when complete; a directory that already holds a dataset is left as it is. A
config's `data.build` block with `command = "jaxml.envs.babyai"` builds the same dataset on
first use (`build_dataset`; jaxml/training/data.py).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import flags

from jaxml import cli
from jaxml.core import files
# The command's output format and the missions' vocabulary, re-exported for its callers.
from jaxml.data.formats.babyai_demos import (  # noqa: F401
    ACTIONS, COLORS, NUM_ACTIONS, PAD, SPLITS, TEMPLATE_WORDS, TYPES, UNK, VOCAB, detokenize,
    read_episodes, read_manifest, tokenize, write_episodes)
from jaxml.errors import ConfigError

try:
  import gymnasium as gym
  import minigrid  # noqa: F401  (importing it registers the BabyAI levels)
  from minigrid.utils.baby_ai_bot import BabyAIBot
except ImportError:  # an optional extra; say how to get it when a level is asked for
  minigrid = None

MANIFEST = files.MANIFEST

LEVELS = {"goto": "BabyAI-GoToLocal-v0", "pickup": "BabyAI-PickupLoc-v0",
          "putnext": "BabyAI-PutNextLocal-v0"}
ROOM_CELLS = 6  # inside the wall ring of every level's 8x8 room

_LOCATIONS = ("in front of you", "behind you", "on your left", "on your right")

# One combo per colour but purple (whose pick-ups are held out instead), types spread
# 2/1/2, so every colour and every type is still named in training.
HELDOUT_COMBOS = frozenset({("red", "key"), ("green", "ball"), ("blue", "box"),
                            ("yellow", "key"), ("grey", "ball")})
HELDOUT_SLOT = ("pickup", "purple")  # "pick up the purple X" held out; "go to" it is not
WANTS = ("seen", "heldout", "any")


def frame_shape(tile: int = 4) -> tuple[int, int, int]:
  return (ROOM_CELLS * tile, ROOM_CELLS * tile, 3)


def render(env, tile: int = 4) -> np.ndarray:
  """The whole room, walls cropped: uint8 [6 * tile, 6 * tile, 3].

  The grid is rendered directly: `get_frame(highlight=False)` gives the same pixels but first
  computes the agent's field of view, which doubles the cost.
  """
  env = env.unwrapped
  frame = env.grid.render(tile, env.agent_pos, env.agent_dir)
  return frame[tile:-tile, tile:-tile]


# ----------------------------------------------------------------------------- missions


def _parse_object(words: list[str], text: str) -> tuple[str | None, str | None]:
  """("the" | "a") [colour] type [location] -> (colour or None, type); location dropped."""
  phrase = " ".join(words[1:])
  for location in _LOCATIONS:
    if phrase.endswith(" " + location):
      phrase = phrase[:-len(location) - 1]
  parts = phrase.split()
  color = parts[0] if len(parts) == 2 else None
  kind = parts[-1] if parts else ""
  if (not words or words[0] not in ("the", "a") or len(parts) not in (1, 2)
      or (len(parts) == 2 and color not in COLORS) or kind not in (*TYPES, "object")):
    raise ConfigError(f"cannot parse the object {' '.join(words)!r} in mission {text!r}")
  return color, None if kind == "object" else kind


def parse_mission(text: str) -> tuple[str, tuple[tuple[str | None, str | None], ...]]:
  """("goto" | "pickup" | "putnext", ((colour, type), ...)), colour None where unnamed.

  E.g. "put the green box next to a yellow ball" -> ("putnext", (("green", "box"),
  ("yellow", "ball"))). Locations ("on your left") are not returned.
  """
  words = text.lower().split()
  if words[:2] == ["go", "to"]:
    return "goto", (_parse_object(words[2:], text),)
  if words[:2] == ["pick", "up"]:
    return "pickup", (_parse_object(words[2:], text),)
  if words[:1] == ["put"]:
    for i in range(2, len(words) - 1):
      if words[i:i + 2] == ["next", "to"]:
        return "putnext", (_parse_object(words[1:i], text), _parse_object(words[i + 2:], text))
  raise ConfigError(f"mission {text!r} is not go to / pick up / put ... next to")


def is_heldout(mission: str) -> bool:
  template, objects = parse_mission(mission)
  return any(obj in HELDOUT_COMBOS or (template, obj[0]) == HELDOUT_SLOT for obj in objects)


def _wanted(mission: str, want: str) -> bool:
  return want == "any" or is_heldout(mission) == (want == "heldout")


# ----------------------------------------------------------------------------- episodes


def _check(level: str, want: str = "any") -> None:
  if minigrid is None:
    raise ConfigError("BabyAI needs minigrid: pip install 'jaxml[rl]'")
  if level not in LEVELS:
    raise ConfigError(f"unknown BabyAI level {level!r}; available: {', '.join(LEVELS)}")
  if want not in WANTS:
    raise ConfigError(f"want={want!r} must be one of {WANTS}")


class Episode:
  """One level for closed-loop control; each `reset` takes the next seed whose mission is
  `want` ("seen", "heldout" or "any"), counting up from `seed`."""

  def __init__(self, level: str, seed: int = 0, want: str = "any", tile: int = 4,
               max_steps: int | None = None, max_tries: int = 1000):
    _check(level, want)
    self.level, self.want, self.tile, self.max_steps = level, want, tile, max_steps
    self.max_tries = max_tries
    self.next_seed = seed
    self.seed = self.env = self.mission = None
    self.steps = 0
    self.skipped = 0  # seeds passed over because their mission was not `want`

  def reset(self) -> tuple[np.ndarray, str]:
    for _ in range(self.max_tries):
      seed, self.next_seed = self.next_seed, self.next_seed + 1
      # A fresh env per episode: the layout then depends on the seed alone, never on the
      # episodes before it (gym.make costs ~0.1 ms).
      env = gym.make(LEVELS[self.level], disable_env_checker=True)
      with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints rejected layouts
        obs, _ = env.reset(seed=seed)
      if _wanted(obs["mission"], self.want):
        self.env, self.seed, self.mission, self.steps = env, seed, obs["mission"], 0
        return render(env, self.tile), self.mission
      self.skipped += 1
    raise RuntimeError(f"{self.level}: no {self.want} mission in {self.max_tries} seeds "
                       f"before {self.next_seed}")

  def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
    """(frame, reward, done, success); done also once `max_steps` actions are taken."""
    if self.env is None:
      raise RuntimeError("Episode.step before reset")
    _, reward, terminated, truncated, _ = self.env.step(int(action))
    self.steps += 1
    done = terminated or truncated or (self.max_steps is not None
                                       and self.steps >= self.max_steps)
    return render(self.env, self.tile), float(reward), bool(done), bool(reward > 0)


def make_env(level: str, seed: int = 0, want: str = "any", tile: int = 4,
             max_steps: int | None = None) -> Episode:
  return Episode(level, seed, want, tile, max_steps)


def _demonstrate(level: str, num_episodes: int, seed: int, tile: int, max_steps: int,
                 want: str) -> tuple[list[dict], dict]:
  """The bot's successful episodes and counts of what was skipped or failed."""
  episode = Episode(level, seed, want, tile, max_steps)
  episodes, failed = [], 0
  while len(episodes) < num_episodes:
    frame, mission = episode.reset()
    bot = BabyAIBot(episode.env)
    frames, actions, done, success = [frame], [], False, False
    while not done:
      actions.append(int(bot.replan()))
      frame, _, done, success = episode.step(actions[-1])
      frames.append(frame)
    if not success:  # the bot gave up, or ran past max_steps
      failed += 1
      if failed > 10 + num_episodes:
        raise RuntimeError(f"BabyAIBot failed {failed} episodes of {level}")
      continue
    episodes.append({"frames": np.stack(frames), "actions": np.array(actions, np.int32),
                     "mission": mission, "success": True, "level": level,
                     "seed": episode.seed})
  lengths = [len(e["actions"]) for e in episodes]
  counts = {"episodes": len(episodes), "steps": int(sum(lengths)),
            "mean_length": float(np.mean(lengths)) if lengths else None,
            "max_length": max(lengths, default=None), "bot_failed": failed,
            "skipped_missions": episode.skipped, "seeds": [seed, episode.next_seed]}
  return episodes, counts


def demonstrations(level: str, num_episodes: int, seed: int, tile: int = 4,
                   max_steps: int = 64, want: str = "seen") -> list[dict]:
  """`num_episodes` successful bot episodes on consecutive seeds from `seed`.

  Each: `frames` uint8 [T+1, H, W, 3] (before each action, then the last), `actions` int32
  [T], `mission`, `success`, `level`, `seed`. Seeds whose mission is not `want` are skipped,
  and episodes the bot fails or does not finish in `max_steps` are dropped.
  """
  return _demonstrate(level, num_episodes, seed, tile, max_steps, want)[0]


# ----------------------------------------------------------------------------- storage


def build(out_dir: str, levels: Sequence[str] = tuple(LEVELS), episodes_per_level: int = 2000,
          seed: int = 0, tile: int = 4, heldout_per_level: int | None = None,
          max_steps: int = 64) -> dict:
  """Writes `<level>/{train,heldout}.npz` for every level and then the manifest; returns it.

  Both splits search seeds from `seed`: a seed's mission is either seen or held out, so the
  two never share a layout. Held-out episodes default to a tenth of the training ones.
  """
  levels = list(levels)
  for level in levels:
    _check(level)
  if episodes_per_level < 1 or tile < 1:
    raise ConfigError(f"episodes_per_level={episodes_per_level} and tile={tile} must be >= 1")
  if heldout_per_level is None:
    heldout_per_level = max(1, episodes_per_level // 10)
  shape = frame_shape(tile)
  manifest = {"levels": levels, "ids": {level: LEVELS[level] for level in levels},
              "tile": tile, "frame_shape": list(shape), "seed": seed, "max_steps": max_steps,
              "counts": {}, "heldout_combos": sorted(map(list, HELDOUT_COMBOS)),
              "heldout_slot": list(HELDOUT_SLOT), "vocab": list(VOCAB)}
  for level in levels:
    os.makedirs(os.path.join(out_dir, level), exist_ok=True)
    manifest["counts"][level] = {}
    for split, want, count in (("train", "seen", episodes_per_level),
                               ("heldout", "heldout", heldout_per_level)):
      episodes, counts = _demonstrate(level, count, seed, tile, max_steps, want)
      write_episodes(os.path.join(out_dir, level, f"{split}.npz"), episodes, shape)
      manifest["counts"][level][split] = counts
  files.write_manifest(out_dir, manifest)  # last: its presence means complete
  return manifest


def build_dataset(data_config, directory: str) -> dict:
  """Builds the dataset `data_config.build` describes into `directory` (the runner's
  build-on-first-use hook): `build.levels` (default `data_config.levels`, else all),
  `build.episodes` (1000 per level), `build.heldout_episodes` (a tenth), `build.seed` (0),
  `build.tile` (4), `build.max_steps` (64)."""
  spec = data_config.build
  heldout = spec.get("heldout_episodes")
  return build(directory, list(spec.get("levels") or data_config.get("levels") or LEVELS),
               int(spec.get("episodes", 1000)), seed=int(spec.get("seed", 0)),
               tile=int(spec.get("tile", 4)),
               heldout_per_level=None if heldout is None else int(heldout),
               max_steps=int(spec.get("max_steps", 64)))


def _define_flags() -> None:
  # Only when run as the command: a module that defines flags on import collides with every
  # other one that defines the same names (collect's --out) in one process.
  flags.DEFINE_string("out", None, "dataset directory to write")
  flags.DEFINE_list("levels", list(LEVELS), "levels")
  flags.DEFINE_integer("episodes", 2000, "training episodes per level")
  flags.DEFINE_integer("heldout_episodes", None,
                       "held-out-mission episodes per level (default: episodes // 10)")
  flags.DEFINE_integer("seed", 0, "first seed")
  flags.DEFINE_integer("tile", 4, "pixels per grid cell")
  flags.DEFINE_integer("max_steps", 64, "longest episode kept")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  if not f.out:
    raise ConfigError("--out is required")
  for level in f.levels:
    _check(level)  # a typo fails now, not after the first level's demonstrations
  config = ml_collections.ConfigDict({"build": {
      "levels": f.levels, "episodes": f.episodes, "heldout_episodes": f.heldout_episodes,
      "seed": f.seed, "tile": f.tile, "max_steps": f.max_steps}})
  if not files.build_once(f.out, lambda directory: build_dataset(config, directory)):
    print(f"{f.out} already holds a dataset ({MANIFEST}); delete it to build again")
    return
  manifest = read_manifest(f.out)
  for level, splits in manifest["counts"].items():
    for split, c in splits.items():
      print(f"{level:8s} {split:8s} {c['episodes']:5d} episodes  mean length "
            f"{c['mean_length'] or 0:.1f}  max {c['max_length']}  bot failed {c['bot_failed']}")
  print(f"frames {tuple(manifest['frame_shape'])}; wrote {f.out}")




if __name__ == "__main__":
  _define_flags()
  cli.run(main)
