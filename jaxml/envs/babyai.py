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
Demonstrations come from minigrid's `BabyAIBot`. Layout of `--out`:

  <level>/train.npz     seen-mission episodes      frames [F, H, W, 3] uint8 (each episode's
  <level>/heldout.npz   held-out-mission episodes  T+1 frames back to back), actions [F - E]
                                                   int32, frame_start [E + 1], mission [E],
                                                   seed [E], success [E]
  manifest.json         levels, tile, frame shape, counts, the held-out split and the vocab
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from jaxml.errors import ConfigError

try:
  import gymnasium as gym
  import minigrid  # noqa: F401  (importing it registers the BabyAI levels)
  from minigrid.utils.baby_ai_bot import BabyAIBot
except ImportError:  # an optional extra; say how to get it when a level is asked for
  minigrid = None

MANIFEST = "manifest.json"
SPLITS = ("train", "heldout")

LEVELS = {"goto": "BabyAI-GoToLocal-v0", "pickup": "BabyAI-PickupLoc-v0",
          "putnext": "BabyAI-PutNextLocal-v0"}
ROOM_CELLS = 6  # inside the wall ring of every level's 8x8 room

ACTIONS = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
NUM_ACTIONS = len(ACTIONS)

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
TYPES = ("ball", "box", "key")
_TEMPLATE_WORDS = ("go", "to", "pick", "up", "put", "next", "the", "a")
_LOCATIONS = ("in front of you", "behind you", "on your left", "on your right")
VOCAB = ("<pad>", "<unk>", *_TEMPLATE_WORDS, *COLORS, *TYPES,
         "in", "front", "of", "you", "behind", "on", "your", "left", "right")
PAD, UNK = 0, 1
_WORD_ID = {word: i for i, word in enumerate(VOCAB)}

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


def tokenize(missions: Sequence[str], max_len: int = 12) -> np.ndarray:
  """Word ids [N, max_len] int32, padded with 0; words outside VOCAB become <unk>."""
  out = np.full((len(missions), max_len), PAD, np.int32)
  for row, mission in enumerate(missions):
    words = mission.lower().split()
    if len(words) > max_len:
      raise ConfigError(f"mission {mission!r} has {len(words)} words, more than "
                        f"max_len={max_len}")
    out[row, :len(words)] = [_WORD_ID.get(w, UNK) for w in words]
  return out


def detokenize(tokens: np.ndarray) -> list[str]:
  return [" ".join(VOCAB[t] for t in row if t != PAD) for row in np.asarray(tokens)]


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


def write_episodes(path: str, episodes: list[dict], shape: tuple[int, int, int]) -> None:
  """One .npz of concatenated episodes with their frame offsets, written atomically."""
  lengths = [len(e["frames"]) for e in episodes]
  arrays = {
      "frames": (np.concatenate([e["frames"] for e in episodes]) if episodes
                 else np.zeros((0, *shape), np.uint8)),
      "actions": np.concatenate([e["actions"] for e in episodes] + [np.zeros(0, np.int32)]),
      "frame_start": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
      "mission": np.array([e["mission"] for e in episodes], dtype=np.str_),
      "seed": np.array([e["seed"] for e in episodes], np.int64),
      "success": np.array([e["success"] for e in episodes], bool),
      "level": np.array(episodes[0]["level"] if episodes else ""),
  }
  tmp = f"{path}.{os.getpid()}.tmp.npz"  # concurrent builders (test workers) never share it
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)


def read_episodes(path: str) -> list[dict]:
  """The episodes of one .npz as `demonstrations` returns them (frames are views)."""
  with np.load(path) as data:
    arrays = {k: data[k] for k in data.files}
  starts = arrays["frame_start"]
  level = str(arrays["level"])
  return [{"frames": arrays["frames"][a:b], "actions": arrays["actions"][a - e:b - e - 1],
           "mission": str(arrays["mission"][e]), "success": bool(arrays["success"][e]),
           "level": level, "seed": int(arrays["seed"][e])}
          for e, (a, b) in enumerate(zip(starts[:-1], starts[1:]))]


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
  tmp = os.path.join(out_dir, f"{MANIFEST}.{os.getpid()}.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2)
  os.replace(tmp, os.path.join(out_dir, MANIFEST))  # last: its presence means complete
  return manifest


def read_manifest(root: str) -> dict:
  try:
    with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise ConfigError(f"{root} holds no BabyAI dataset ({MANIFEST} missing); build one with "
                      "python -m jaxml.envs.babyai --out " + root) from None


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m jaxml.envs.babyai",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="dataset directory to write")
  parser.add_argument("--levels", default=",".join(LEVELS), help="comma-separated levels")
  parser.add_argument("--episodes", type=int, default=2000, help="training episodes per level")
  parser.add_argument("--heldout_episodes", type=int, default=None,
                      help="held-out-mission episodes per level (default: episodes // 10)")
  parser.add_argument("--seed", type=int, default=0, help="first seed")
  parser.add_argument("--tile", type=int, default=4, help="pixels per grid cell")
  parser.add_argument("--max_steps", type=int, default=64, help="longest episode kept")
  args = parser.parse_args(argv)
  try:
    manifest = build(args.out, [name for name in args.levels.split(",") if name], args.episodes,
                     args.seed, args.tile, args.heldout_episodes, args.max_steps)
  except ConfigError as err:  # one line and exit status 2, as the launcher does
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
  for level, splits in manifest["counts"].items():
    for split, c in splits.items():
      print(f"{level:8s} {split:8s} {c['episodes']:5d} episodes  mean length "
            f"{c['mean_length'] or 0:.1f}  max {c['max_length']}  bot failed {c['bot_failed']}")
  print(f"frames {tuple(manifest['frame_shape'])}; wrote {args.out}")


if __name__ == "__main__":
  main()
