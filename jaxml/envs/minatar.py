"""MinAtar games (gymnax) behind one frame shape and one action space, for multi-game agents.

Every game's observation is a 10x10 grid of C binary channels (C = 4..10); frames are padded
with zero channels to `CHANNELS` = 10, so one model reads every game. Actions live in MinAtar's
full set of `NUM_ACTIONS` = 6 (no-op, left, up, right, down, fire); each game has a subset
(`Game.valid_actions`), and an action a game lacks is played as its no-op. Games step with
gymnax's automatic reset (an episode's last step returns the next episode's first frame).

`rollout` plays many environments of several games at once inside one jitted `lax.scan`:
the games are unrolled statically (their states differ in structure), each game's
environments are vmapped, and an `Agent` picks actions for all of them together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The stored episodes' frame shape and action space are the environment's.
from jaxml.data.formats.minatar_episodes import FRAME_SHAPE, NUM_ACTIONS
from jaxml.errors import ConfigError

try:
  import gymnax
except ImportError:  # an optional extra; say how to get it when a game is asked for
  gymnax = None

GAMES = {"breakout": "Breakout-MinAtar", "asterix": "Asterix-MinAtar",
         "freeway": "Freeway-MinAtar", "space_invaders": "SpaceInvaders-MinAtar",
         "seaquest": "Seaquest-MinAtar"}
ACTION_NAMES = ("noop", "left", "up", "right", "down", "fire")
CHANNELS = FRAME_SHAPE[-1]


@dataclasses.dataclass(frozen=True)
class Game:
  """One MinAtar game in the shared frame shape and action space."""
  name: str
  env: Any
  params: Any
  action_set: np.ndarray  # the game's action index -> full action

  @property
  def valid_actions(self) -> np.ndarray:
    """bool [NUM_ACTIONS]: which full actions this game has."""
    mask = np.zeros(NUM_ACTIONS, bool)
    mask[self.action_set] = True
    return mask

  @property
  def game_action(self) -> np.ndarray:
    """int [NUM_ACTIONS]: the game's action index for each full action (invalid: no-op)."""
    table = np.full(NUM_ACTIONS, int(np.flatnonzero(self.action_set == 0)[0]))
    table[self.action_set] = np.arange(len(self.action_set))
    return table

  @property
  def channels(self) -> int:
    """The game's own number of observation channels (before padding)."""
    return int(self.env.observation_space(self.params).shape[-1])

  def pad(self, obs: jax.Array) -> jax.Array:
    pad = CHANNELS - obs.shape[-1]
    return jnp.pad(obs.astype(jnp.float32), [(0, 0)] * (obs.ndim - 1) + [(0, pad)])

  def reset(self, key):
    obs, state = self.env.reset(key, self.params)
    return self.pad(obs), state

  def step(self, key, state, action):
    """(frame, state, reward, done) after the full action `action` (auto-resets on done)."""
    obs, state, reward, terminated, truncated, _ = self.env.step(
        key, state, jnp.asarray(self.game_action)[action], self.params)
    return self.pad(obs), state, reward.astype(jnp.float32), jnp.logical_or(terminated,
                                                                            truncated)


def make_game(name: str) -> Game:
  if name not in GAMES:
    raise ConfigError(f"unknown MinAtar game {name!r}; available: {', '.join(GAMES)}")
  if gymnax is None:
    raise ConfigError("MinAtar games need gymnax: pip install 'jaxml[rl]'")
  with jax.ensure_compile_time_eval():  # gymnax builds jnp constants; keep them concrete
    env, params = gymnax.make(GAMES[name])
    return Game(name, env, params, np.asarray(env.action_set))


def make_games(names: Sequence[str]) -> tuple[Game, ...]:
  if not names or len(set(names)) != len(names):
    raise ConfigError(f"games={list(names)} must be distinct MinAtar game names")
  return tuple(make_game(n) for n in names)


def valid_action_table(games: Sequence[Game]) -> np.ndarray:
  """bool [num_games, NUM_ACTIONS]."""
  return np.stack([g.valid_actions for g in games])


class Agent(NamedTuple):
  """How `rollout` asks for actions. All arrays are [G, E, ...] (games, envs per game).

  init(G, E) -> carry;  act(carry, frames, valid [G, E, A], key) -> (actions [G, E], carry);
  observe(carry, actions, rewards, dones) -> carry (after the step; history, returns-to-go).
  """
  init: Callable
  act: Callable
  observe: Callable


def random_agent() -> Agent:
  """Uniform over each game's valid actions."""

  def act(carry, frames, valid, key):
    del frames
    logits = jnp.where(valid, 0.0, -jnp.inf)
    return jax.random.categorical(key, logits), carry

  return Agent(init=lambda g, e: (), act=act, observe=lambda carry, a, r, d: carry)


def step_keys(key, t, num_games: int, envs_per_game: int):
  """(agent key, env keys [G, E]) for step t: a pure function of (key, t)."""
  agent_key, env_key = jax.random.split(jax.random.fold_in(key, t))
  keys = jax.random.split(env_key, num_games * envs_per_game)
  return agent_key, keys.reshape(num_games, envs_per_game)


def reset_keys(key, num_games: int, envs_per_game: int):
  keys = jax.random.split(jax.random.fold_in(key, -1 % 2**31), num_games * envs_per_game)
  return keys.reshape(num_games, envs_per_game)


def rollout(games: Sequence[Game], agent: Agent, key, *, envs_per_game: int, num_steps: int,
            record: bool = False):
  """Plays `num_steps` steps of `envs_per_game` environments of every game (auto-reset).

  Returns {"first_return" [G, E] (return of each env's first episode; NaN if unfinished),
  "first_length" [G, E], "episodes" [G, E] (episodes finished)} and, with `record`, the
  trajectories {"frame" [T, G, E, 10, 10, 10] bool, "action", "reward", "done" [T, G, E]}
  (frame t is what the agent saw when it chose action t). Jit it with games/agent/sizes static.
  """
  num_games = len(games)
  valid = jnp.broadcast_to(jnp.asarray(valid_action_table(games))[:, None],
                           (num_games, envs_per_game, NUM_ACTIONS))
  starts = reset_keys(key, num_games, envs_per_game)
  frames, states = zip(*[jax.vmap(g.reset)(starts[i]) for i, g in enumerate(games)])
  frames = jnp.stack(frames)
  zeros = jnp.zeros((num_games, envs_per_game))
  init = (frames, tuple(states), agent.init(num_games, envs_per_game), zeros,
          jnp.full((num_games, envs_per_game), jnp.nan), zeros, zeros)

  def step(carry, t):
    frames, states, agent_carry, running, first_return, first_length, episodes = carry
    agent_key, env_keys = step_keys(key, t, num_games, envs_per_game)
    actions, agent_carry = agent.act(agent_carry, frames, valid, agent_key)
    outs = [jax.vmap(g.step)(env_keys[i], states[i], actions[i]) for i, g in enumerate(games)]
    new_frames = jnp.stack([o[0] for o in outs])
    rewards = jnp.stack([o[2] for o in outs])
    dones = jnp.stack([o[3] for o in outs])
    agent_carry = agent.observe(agent_carry, actions, rewards, dones)
    running = running + rewards
    first_done = dones & (episodes == 0)
    first_return = jnp.where(first_done, running, first_return)
    first_length = jnp.where(episodes == 0, first_length + 1, first_length)
    episodes = episodes + dones
    running = jnp.where(dones, 0.0, running)
    out = ({"frame": frames > 0, "action": actions, "reward": rewards, "done": dones}
           if record else None)
    return (new_frames, tuple(o[1] for o in outs), agent_carry, running, first_return,
            first_length, episodes), out

  carry, trajectory = jax.lax.scan(step, init, jnp.arange(num_steps))
  result = {"first_return": carry[4], "first_length": carry[5], "episodes": carry[6]}
  if record:
    result["trajectory"] = trajectory
  return result
