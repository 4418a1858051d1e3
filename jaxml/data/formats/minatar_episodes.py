"""MinAtar episodes on disk, as the collection command writes them (BUILD.md, Datasets).

  <game>/<policy>.npz   frame [N, 10, 10, 10] bool, action / reward / done [N] and
                        episode_start [num_episodes + 1] (offsets into the N steps)
  manifest.json         games, policies, and per game: episodes, steps, and the return of
                        the worst, mean and best episode of each policy (used to normalise
                        evaluation scores); written last, so its presence means complete

Returns-to-go are not stored: they are the suffix sums of `reward` within an episode and are
computed when the data is read (`returns_to_go`).
"""

from __future__ import annotations

import numpy as np

from jaxml.core import files

# Every game's frames padded to 10 channels, actions in MinAtar's full set of 6 (no-op, left,
# up, right, down, fire): the MinAtar environment imports these constants from here.
FRAME_SHAPE = (10, 10, 10)
NUM_ACTIONS = 6
FIELDS = ("frame", "action", "reward", "done")


def write_episodes(path: str, episodes: list[dict[str, np.ndarray]]) -> None:
  """One .npz of concatenated episodes with their start offsets, written atomically."""
  lengths = [len(e["action"]) for e in episodes]
  arrays = {k: np.concatenate([e[k] for e in episodes]) if episodes else np.zeros((0,))
            for k in FIELDS}
  arrays["episode_start"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  files.write_npz(path, arrays)


def read_episodes(path: str) -> list[dict[str, np.ndarray]]:
  with np.load(path) as data:
    starts = data["episode_start"]
    arrays = {k: data[k] for k in FIELDS}
  return [{k: v[a:b] for k, v in arrays.items()} for a, b in zip(starts[:-1], starts[1:])]


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
  """R_t = Σ_{s >= t} r_s within one episode."""
  return np.cumsum(rewards[::-1])[::-1].astype(np.float32)


def read_manifest(root: str) -> dict:
  return files.read_manifest(
      root, what="episode dataset",
      hint="build it with the MinAtar collection command (BUILD.md, Datasets) or set data.build")
