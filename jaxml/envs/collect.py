"""Build an offline dataset of MinAtar episodes from agents of mixed quality, once, on disk.

  python -m jaxml.envs.collect --out data/minatar --games breakout,freeway \
      --policies random,ppo_eps0.5,ppo_eps0.1,ppo --envs 64 --steps 2000 --seed 0

Policies: `random`, `ppo` (a PPO policy trained here per game, `--ppo_steps`), and
`ppo_eps<ε>` (that policy with a uniformly random valid action with probability ε), so the
returns span beginner to competent.

Each (game, policy) pair plays `--envs` environments for `--steps` steps inside one jitted
rollout; every finished episode is kept (the unfinished tail of each environment is dropped).
The layout of `--out` is `jaxml.data.formats.minatar_episodes`'s. The directory is built
under a temporary name and renamed into place when complete; a directory that already holds
a dataset is left as it is.

A config's `data.build` block with `command = "jaxml.envs.collect"` builds the same dataset
on first use (`build_dataset`; jaxml/training/data.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from jaxml import cli
from jaxml.core import files
# The command's output format, re-exported for its callers.
from jaxml.data.formats.minatar_episodes import (  # noqa: F401
    read_episodes, read_manifest, returns_to_go, write_episodes)
from jaxml.envs import minatar
from jaxml.errors import ConfigError

MANIFEST = files.MANIFEST


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


def collect(games: Sequence[minatar.Game], agent: minatar.Agent, key, *, envs: int,
            steps: int) -> list[list[dict[str, np.ndarray]]]:
  """Finished episodes of every game (a list per game) played by `agent`."""
  play = jax.jit(lambda k: minatar.rollout(games, agent, k, envs_per_game=envs,
                                           num_steps=steps, record=True))
  trajectory = jax.device_get(play(key)["trajectory"])
  return [split_episodes({k: v[:, i] for k, v in trajectory.items()})
          for i in range(len(games))]


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
  files.write_manifest(out, manifest)  # last: its presence means complete
  return manifest


def build_dataset(data_config, directory: str) -> dict:
  """Builds the dataset `data_config.build` describes into `directory` (the runner's
  build-on-first-use hook): `build.games` (default `data_config.games`, else every game),
  `build.policies`, `build.envs`, `build.steps`, `build.seed` (0), `build.ppo_steps` (1M)."""
  spec = data_config.build
  games = list(spec.get("games") or data_config.get("games") or minatar.GAMES)
  seed = int(spec.get("seed", 0))
  policies = make_policies(list(spec.get("policies") or ["random"]), games, seed=seed,
                           ppo_steps=int(spec.get("ppo_steps", 1_000_000)))
  return build(directory, games, policies, envs=int(spec.get("envs", 64)),
               steps=int(spec.get("steps", 2000)), seed=seed)


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


def _define_flags() -> None:
  # Only when run as the command: a module that defines flags on import collides with every
  # other one that defines the same names (babyai's --out) in one process.
  flags.DEFINE_string("out", None, "dataset directory to write")
  flags.DEFINE_list("games", list(minatar.GAMES), "MinAtar games")
  flags.DEFINE_list("policies", ["random"], "behaviour policies")
  flags.DEFINE_integer("envs", 64, "environments per game and policy")
  flags.DEFINE_integer("steps", 2000, "steps per environment")
  flags.DEFINE_integer("seed", 0, "collection seed")
  flags.DEFINE_integer("ppo_steps", 1_000_000, "PPO training steps per game")


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.out:
    raise ConfigError("--out is required")
  for name in f.policies:
    parse_policy(name)  # a typo fails now, not after the first policy's PPO training
  minatar.make_games(f.games)  # and so does an unknown game
  config = ml_collections.ConfigDict({"build": {
      "games": f.games, "policies": f.policies, "envs": f.envs, "steps": f.steps,
      "seed": f.seed, "ppo_steps": f.ppo_steps}})
  if not files.build_once(f.out, lambda directory: build_dataset(config, directory)):
    print(f"{f.out} already holds a dataset ({MANIFEST}); delete it to build again")
    return
  for game, stats in read_manifest(f.out)["per_game"].items():
    for policy, s in stats.items():
      print(f"{game:15s} {policy:12s} {s['episodes']:5d} episodes  return mean "
            f"{s['mean_return']}  max {s['max_return']}")
  print(f"wrote {f.out}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
