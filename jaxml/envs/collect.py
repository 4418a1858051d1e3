"""Build an offline dataset of MinAtar episodes from agents of mixed quality, once, on disk.

  python -m jaxml.envs.collect --out data/minatar --games breakout,freeway \
      --policies random,ppo_eps0.5,ppo_eps0.1,ppo --envs 64 --steps 2000 --seed 0

Policies: `random`, `ppo` (a PPO policy trained here per game, `--ppo_steps`), and
`ppo_eps<ε>` (that policy with a uniformly random valid action with probability ε), so the
returns span beginner to competent.

Each (game, policy) pair plays `--envs` environments for `--steps` steps inside one jitted
rollout; every finished episode is kept (the unfinished tail of each environment is dropped).
Layout of `--out`:

  <game>/<policy>.npz   frame [N, 10, 10, 10] bool, action / reward / done [N] and
                        episode_start [num_episodes + 1] (offsets into the N steps)
  manifest.json         games, policies, and per game: episodes, steps, and the return of
                        the worst, mean and best episode of each policy (used to normalise
                        evaluation scores)

Returns-to-go are not stored: they are the suffix sums of `reward` within an episode and are
computed when the data is read (`returns_to_go`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jaxml.envs import minatar
from jaxml.errors import ConfigError

MANIFEST = "manifest.json"


def split_episodes(trajectory: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
  """[T, E, ...] streams of one game (auto-reset) -> the finished episodes, env by env."""
  episodes = []
  steps, envs = trajectory["done"].shape
  for env in range(envs):
    ends = np.flatnonzero(trajectory["done"][:, env])
    start = 0
    for end in ends:
      episodes.append({k: np.asarray(v[start:end + 1, env]) for k, v in trajectory.items()})
      start = end + 1
  return episodes


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
  """R_t = Σ_{s >= t} r_s within one episode."""
  return np.cumsum(rewards[::-1])[::-1].astype(np.float32)


def collect(games: Sequence[minatar.Game], agent: minatar.Agent, key, *, envs: int,
            steps: int) -> list[list[dict[str, np.ndarray]]]:
  """Finished episodes of every game (a list per game) played by `agent`."""
  play = jax.jit(lambda k: minatar.rollout(games, agent, k, envs_per_game=envs,
                                           num_steps=steps, record=True))
  trajectory = jax.device_get(play(key)["trajectory"])
  return [split_episodes({k: v[:, i] for k, v in trajectory.items()})
          for i in range(len(games))]


def write_episodes(path: str, episodes: list[dict[str, np.ndarray]]) -> None:
  """One .npz of concatenated episodes with their start offsets, written atomically."""
  lengths = [len(e["action"]) for e in episodes]
  arrays = {k: np.concatenate([e[k] for e in episodes]) if episodes else np.zeros((0,))
            for k in ("frame", "action", "reward", "done")}
  arrays["episode_start"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  tmp = f"{path}.{os.getpid()}.tmp.npz"  # concurrent builders (test workers) never share it
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)


def read_episodes(path: str) -> list[dict[str, np.ndarray]]:
  with np.load(path) as data:
    starts = data["episode_start"]
    arrays = {k: data[k] for k in ("frame", "action", "reward", "done")}
  return [{k: v[a:b] for k, v in arrays.items()} for a, b in zip(starts[:-1], starts[1:])]


def episode_return(episode) -> float:
  return float(np.sum(episode["reward"]))


def build(out: str, game_names: Sequence[str], policies: dict[str, minatar.Agent], *,
          envs: int, steps: int, seed: int) -> dict:
  """Collects every (game, policy) into `out` and writes the manifest; returns it."""
  games = minatar.make_games(game_names)
  manifest = {"games": list(game_names), "policies": list(policies), "envs": envs,
              "steps": steps, "seed": seed, "per_game": {}}
  collected = {name: {} for name in game_names}
  for p, (policy, agent) in enumerate(policies.items()):
    key = jax.random.fold_in(jax.random.key(seed), p)
    for game, episodes in zip(game_names, collect(games, agent, key, envs=envs, steps=steps)):
      collected[game][policy] = episodes
  for game in game_names:
    os.makedirs(os.path.join(out, game), exist_ok=True)
    stats = {}
    for policy, episodes in collected[game].items():
      write_episodes(os.path.join(out, game, f"{policy}.npz"), episodes)
      returns = [episode_return(e) for e in episodes]
      stats[policy] = {"episodes": len(episodes), "steps": int(sum(len(e["action"])
                                                                   for e in episodes)),
                       "min_return": min(returns, default=None),
                       "mean_return": float(np.mean(returns)) if returns else None,
                       "max_return": max(returns, default=None)}
    manifest["per_game"][game] = stats
  tmp = os.path.join(out, f"{MANIFEST}.{os.getpid()}.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2)
  os.replace(tmp, os.path.join(out, MANIFEST))
  return manifest


def read_manifest(root: str) -> dict:
  try:
    with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise ConfigError(f"{root} holds no episode dataset ({MANIFEST} missing); build one with "
                      "python -m jaxml.envs.collect --out " + root) from None


def ppo_agent(games: Sequence[minatar.Game], policies, epsilon: float) -> minatar.Agent:
  """Each game's PPO policy (sampled actions); with probability `epsilon` per step, a
  uniformly random valid action instead."""

  def act(carry, frames, valid, key):
    keys = jax.random.split(key, len(games) + 2)
    actions = jnp.stack([
        jnp.asarray(game.action_set)[policy.act(keys[i], frames[i][..., :game.channels])]
        for i, (game, policy) in enumerate(zip(games, policies))])
    uniform = jax.random.categorical(keys[-2], jnp.where(valid, 0.0, -jnp.inf))
    explore = jax.random.bernoulli(keys[-1], epsilon, actions.shape)
    return jnp.where(explore, uniform, actions), carry

  return minatar.Agent(init=lambda g, e: (), act=act, observe=lambda carry, a, r, d: carry)


def parse_policy(name: str) -> float | None:
  """None for "random"; ε for "ppo" (0) and "ppo_eps<ε>"."""
  if name == "random":
    return None
  if name == "ppo":
    return 0.0
  if name.startswith("ppo_eps"):
    try:
      epsilon = float(name[len("ppo_eps"):])
    except ValueError:
      epsilon = -1.0
    if 0 <= epsilon <= 1:
      return epsilon
  raise ConfigError(f"unknown policy {name!r}; available: random, ppo, ppo_eps<ε> "
                    "(e.g. ppo_eps0.25: PPO with a random action 25% of the time)")


def make_policies(names: Sequence[str], game_names: Sequence[str], *,
                  ppo_steps: int = 1_000_000, seed: int = 0) -> dict[str, minatar.Agent]:
  """Behaviour policies by name, a spread of quality: random, PPO trained here per game
  (`jaxml.envs.ppo`, ~1 min per game on 2 CPU cores at 1M steps) and ε-noisy PPO."""
  epsilons = {name: parse_policy(name) for name in names}
  policies = {name: minatar.random_agent() for name, eps in epsilons.items() if eps is None}
  if len(policies) < len(names):
    from jaxml.envs import ppo  # pylint: disable=import-outside-toplevel  # trains on demand

    games = minatar.make_games(game_names)
    config = ppo.PpoConfig(total_steps=ppo_steps)
    trained = [ppo.train(minatar.GAMES[g], config, seed)[0] for g in game_names]
    for name, eps in epsilons.items():
      if eps is not None:
        policies[name] = ppo_agent(games, trained, eps)
  return {name: policies[name] for name in names}


_OUT = flags.DEFINE_string("out", None, "dataset directory to write")
_GAMES = flags.DEFINE_list("games", list(minatar.GAMES), "MinAtar games")
_POLICIES = flags.DEFINE_list("policies", ["random"], "behaviour policies")
_ENVS = flags.DEFINE_integer("envs", 64, "environments per game and policy")
_STEPS = flags.DEFINE_integer("steps", 2000, "steps per environment")
_SEED = flags.DEFINE_integer("seed", 0, "collection seed")
_PPO_STEPS = flags.DEFINE_integer("ppo_steps", 1_000_000, "PPO training steps per game")


def main(argv):
  del argv
  try:
    if not _OUT.value:
      raise ConfigError("--out is required")
    policies = make_policies(_POLICIES.value, _GAMES.value, ppo_steps=_PPO_STEPS.value,
                             seed=_SEED.value)
    manifest = build(_OUT.value, _GAMES.value, policies,
                     envs=_ENVS.value, steps=_STEPS.value, seed=_SEED.value)
  except ConfigError as err:  # one line and exit status 2, as the launcher does
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
  for game, stats in manifest["per_game"].items():
    for policy, s in stats.items():
      print(f"{game:15s} {policy:12s} {s['episodes']:5d} episodes  return mean "
            f"{s['mean_return']}  max {s['max_return']}")
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
