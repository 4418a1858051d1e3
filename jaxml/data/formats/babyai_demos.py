"""BabyAI bot demonstrations on disk, as the BabyAI dataset command writes them (BUILD.md,
Datasets), and the missions' word vocabulary.

  <level>/train.npz     seen-mission episodes      frames [F, H, W, 3] uint8 (each episode's
  <level>/heldout.npz   held-out-mission episodes  T+1 frames back to back), actions [F - E]
                                                   int32, frame_start [E + 1], mission [E],
                                                   seed [E], success [E], level []
  manifest.json         levels, tile, frame shape, counts, the held-out split and the vocab;
                        written last, so its presence means complete
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxml.core import files
from jaxml.errors import ConfigError

SPLITS = ("train", "heldout")
# minigrid's actions, in its order (the BabyAI environment imports these from here).
ACTIONS = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
NUM_ACTIONS = len(ACTIONS)

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
TYPES = ("ball", "box", "key")
TEMPLATE_WORDS = ("go", "to", "pick", "up", "put", "next", "the", "a")
VOCAB = ("<pad>", "<unk>", *TEMPLATE_WORDS, *COLORS, *TYPES,
         "in", "front", "of", "you", "behind", "on", "your", "left", "right")
PAD, UNK = 0, 1
_WORD_ID = {word: i for i, word in enumerate(VOCAB)}


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


def write_episodes(path: str, episodes: list[dict], shape: tuple[int, int, int]) -> None:
  """One .npz of concatenated episodes with their frame offsets, written atomically."""
  lengths = [len(e["frames"]) for e in episodes]
  files.write_npz(path, {
      "frames": (np.concatenate([e["frames"] for e in episodes]) if episodes
                 else np.zeros((0, *shape), np.uint8)),
      "actions": np.concatenate([e["actions"] for e in episodes] + [np.zeros(0, np.int32)]),
      "frame_start": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
      "mission": np.array([e["mission"] for e in episodes], dtype=np.str_),
      "seed": np.array([e["seed"] for e in episodes], np.int64),
      "success": np.array([e["success"] for e in episodes], bool),
      "level": np.array(episodes[0]["level"] if episodes else ""),
  })


def read_episodes(path: str) -> list[dict]:
  """The episodes of one .npz: `frames` uint8 [T+1, H, W, 3] (views), `actions` int32 [T],
  `mission`, `success`, `level`, `seed`."""
  with np.load(path) as data:
    arrays = {k: data[k] for k in data.files}
  starts = arrays["frame_start"]
  level = str(arrays["level"])
  return [{"frames": arrays["frames"][a:b], "actions": arrays["actions"][a - e:b - e - 1],
           "mission": str(arrays["mission"][e]), "success": bool(arrays["success"][e]),
           "level": level, "seed": int(arrays["seed"][e])}
          for e, (a, b) in enumerate(zip(starts[:-1], starts[1:]))]


def read_manifest(root: str) -> dict:
  return files.read_manifest(
      root, what="BabyAI dataset",
      hint="build it with the BabyAI dataset command (BUILD.md, Datasets) or set data.build")
