"""Closed-loop control in BabyAI: plan from the current frame, act, plan again.

`run_episodes` plays `episodes` environments of one level in lockstep around a batched policy
`act(frames uint8 [N, H, W, 3], tokens int32 [N, L], key) -> (actions [N, k], plans)`: every
`replan_every` steps the policy is asked again from the frames the environments show now, and
each environment executes the next of its actions. The policy sees a fixed batch of N (one
compilation); environments that have finished keep showing their last frame and ignore their
actions. The environments are real minigrid ones (Python), the policy is whatever is jitted.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxml.envs import babyai


@dataclasses.dataclass(frozen=True)
class ControlResult:
  """Per episode: `success` (reached the goal), `steps` (actions taken), `missions`, and for
  the first `record` episodes the executed `frames` [T + 1, H, W, 3] and every `plans` made
  (a list of [horizon + 1, H, W, 3] in [0, 1], or empty for a policy that does not plan)."""

  success: np.ndarray
  steps: np.ndarray
  missions: tuple[str, ...]
  recorded: tuple[dict, ...] = ()

  @property
  def success_rate(self) -> float:
    return float(np.mean(self.success)) if len(self.success) else float("nan")

  @property
  def mean_steps(self) -> float:
    """Mean steps to success over the successful episodes (NaN if none succeeded)."""
    return float(np.mean(self.steps[self.success])) if self.success.any() else float("nan")


def start_episodes(level: str, episodes: int, *, want: str, seed: int, tile: int,
                   max_steps: int) -> list[babyai.Episode]:
  """`episodes` reset environments with distinct seeds from `seed` up whose missions are
  `want`: the same seed and arguments give the same layouts and missions."""
  envs = []
  for _ in range(episodes):
    env = babyai.Episode(level, seed, want, tile=tile, max_steps=max_steps)
    env.reset()
    envs.append(env)
    seed = env.seed + 1
  return envs


def run_episodes(act, level: str, *, episodes: int, want: str, seed: int, max_steps: int,
                 replan_every: int, key, tile: int = 4, max_len: int = 12,
                 record: int = 0) -> ControlResult:
  envs = start_episodes(level, episodes, want=want, seed=seed, tile=tile, max_steps=max_steps)
  frames = np.stack([babyai.render(e.env, tile) for e in envs])
  missions = tuple(e.mission for e in envs)
  tokens = babyai.tokenize(missions, max_len)
  done = np.zeros(episodes, bool)
  success = np.zeros(episodes, bool)
  steps = np.zeros(episodes, np.int32)
  recorded = [{"mission": missions[i], "frames": [frames[i].copy()], "plans": [], "actions": []}
              for i in range(min(record, episodes))]
  actions, offset = None, 0
  for t in range(max_steps):
    if done.all():
      break
    if actions is None or t - offset >= min(replan_every, actions.shape[1]):
      actions, plans = act(frames, tokens, jax.random.fold_in(key, t))
      offset = t
      for i, rec in enumerate(recorded):
        if not done[i] and plans is not None:
          rec["plans"].append(plans[i])
    for i in np.flatnonzero(~done):
      action = int(actions[i, t - offset])
      frame, _, finished, won = envs[i].step(action)
      frames[i] = frame
      steps[i] += 1
      success[i] |= won
      done[i] = finished
      if i < len(recorded):
        recorded[i]["frames"].append(frame)
        recorded[i]["actions"].append(action)
  for rec in recorded:
    rec["frames"] = np.stack(rec["frames"])
    rec["actions"] = np.asarray(rec["actions"], np.int32)
  return ControlResult(success, steps, missions, tuple(recorded))
