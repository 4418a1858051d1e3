"""Real Atari 2600 games (ale-py) for evaluating agents trained on RL Unplugged Atari data.

Frames follow the DQN / Dopamine preprocessing that produced the DQN Replay data behind
RL Unplugged Atari: 4 emulator frames per agent step, max-pooled over the last two (Atari
sprites flicker between frames), ALE's own grayscale, resized to 84x84 with area interpolation
(gymnasium's `AtariPreprocessing`, the same calls as Dopamine's), and the last 4 frames stacked
on the channel axis, newest last, zero-padded at an episode's start (Dopamine's agent starts
from a zero state). Sticky actions (p = 0.25, Machado et al. 2018) are on by default, as in the
data; every game uses the full 18-action set so one model plays them all.

ALE cannot be jitted, so `evaluate` steps the environments in a Python loop and jits only the
agent; it speaks the same `Agent` contract and result dict as `minatar.rollout`.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.envs.minatar import Agent
from jaxml.errors import ConfigError

try:
  import ale_py
  import cv2  # noqa: F401  (AtariPreprocessing resizes with it)
  import gymnasium as gym
  from gymnasium import wrappers
except ImportError:  # an optional extra; say how to get it when a game is asked for
  ale_py = None

NUM_ACTIONS = 18  # ALE's full action set
STACK = 4
FRAME_SHAPE = (84, 84, STACK)
FRAME_SKIP = 4
MAX_EPISODE_STEPS = 27_000  # 108,000 emulator frames = 30 minutes of play (Machado et al.)

# (random, human) scores: the Atari-57 table (professional human tester; random agent; 30
# no-op starts; episodes capped at 108k frames) used by DQN Zoo (deepmind/dqn_zoo,
# dqn_zoo/atari_data.py), Agent57 and the Multi-Game DT. The Nature DQN paper (Mnih et al.
# 2015) reported different human numbers for some games; this is the later standard table.
_REFERENCE_SCORES = {
    "alien": (227.8, 7127.7), "amidar": (5.8, 1719.5), "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3), "asteroids": (719.1, 47388.7), "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1), "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5), "berzerk": (123.7, 2630.4), "bowling": (23.1, 160.7),
    "boxing": (0.1, 12.1), "breakout": (1.7, 30.5), "centipede": (2090.9, 12017.0),
    "chopper_command": (811.0, 7387.8), "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9), "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4), "enduro": (0.0, 860.5), "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6), "frostbite": (65.2, 4334.7), "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4), "hero": (1027.0, 30826.4), "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8), "kangaroo": (52.0, 3035.0), "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3), "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6), "name_this_game": (2292.3, 8049.0),
    "phoenix": (761.4, 7242.6), "pitfall": (-229.4, 6463.7), "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3), "qbert": (163.9, 13455.0), "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0), "robotank": (2.2, 11.9), "seaquest": (68.4, 42054.7),
    "skiing": (-17098.1, -4336.9), "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7), "star_gunner": (664.0, 10250.0),
    "surround": (-10.0, 6.5), "tennis": (-23.8, -8.3), "time_pilot": (3568.0, 5229.2),
    "tutankham": (11.4, 167.6), "up_n_down": (533.4, 11693.2), "venture": (0.0, 1187.5),
    "video_pinball": (16256.9, 17667.9), "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9), "zaxxon": (32.5, 9173.3),
}


def rom_id(game: str) -> str:
  """ALE's ROM id of a game named either way: 'SpaceInvaders' (RL Unplugged), 'space_invaders'."""
  return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()


@functools.cache
def _env_ids() -> dict[str, str]:
  """ROM id -> registered gymnasium id ('pong' -> 'ALE/Pong-v5')."""
  if ale_py is None:
    raise ConfigError("Atari games need ale-py and opencv: pip install 'jaxml[rl]'")
  gym.register_envs(ale_py)
  return {spec.kwargs["game"]: spec.id for spec in gym.registry.values()
          if spec.id.startswith("ALE/") and spec.id.endswith("-v5")}


def _check_game(game: str) -> str:
  rom = rom_id(game)
  if rom not in _env_ids():
    raise ConfigError(f"unknown Atari game {game!r}; ale-py has: {', '.join(sorted(_env_ids()))}")
  return rom


def make_env(game: str, *, seed: int, sticky_actions: float = 0.25,
             full_action_space: bool = True, max_episode_steps: int = MAX_EPISODE_STEPS,
             noop_max: int = 0):
  """A gymnasium env with uint8 [84, 84, 4] observations, already seeded with `seed`.

  Episodes truncate after `max_episode_steps` agent steps. `noop_max` > 0 starts each episode
  with 1..noop_max no-ops (the older DQN protocol); off by default because sticky actions
  already randomise starts (Machado et al. 2018).
  """
  rom = _check_game(game)
  # frameskip=1 on the base env: the wrapper skips, so it can max-pool the last two frames.
  # No frame cap there: the step limit below counts agent steps, as Dopamine does.
  env = gym.make(_env_ids()[rom], frameskip=1, repeat_action_probability=sticky_actions,
                 full_action_space=full_action_space, max_num_frames_per_episode=None)
  # Seed ALE (sticky actions) and the no-op sampler now, so a plain reset() is reproducible.
  env.unwrapped.seed_game(int(seed))
  env.unwrapped.load_game()
  env = wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=FRAME_SKIP,
                                    screen_size=84, grayscale_obs=True, scale_obs=False)
  env = wrappers.FrameStackObservation(env, STACK, padding_type="zero")
  env = wrappers.TransformObservation(
      env, lambda obs: np.ascontiguousarray(np.moveaxis(obs, 0, -1)),  # stack -> channels
      gym.spaces.Box(0, 255, FRAME_SHAPE, np.uint8))
  return wrappers.TimeLimit(env, max_episode_steps)


@functools.cache
def minimal_action_set(game: str) -> np.ndarray:
  """int [n]: the full-set action (0..17) of each of the game's minimal actions, in order.

  RL Unplugged Atari (Dopamine's DQN Replay runs) records actions as indices into the game's
  minimal action set; index this table to replay them in the full set that `make_env` uses.
  """
  rom = _check_game(game)
  ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # as gymnasium's envs do
  ale = ale_py.ALEInterface()
  ale.loadROM(ale_py.roms.get_rom_path(rom))
  table = np.array([action.value for action in ale.getMinimalActionSet()])
  table.flags.writeable = False  # cached and shared by every caller
  return table


def human_normalised(game: str, score):
  """(score - random) / (human - random): 0 plays like a random agent, 1 like a human tester."""
  rom = rom_id(game)
  if rom not in _REFERENCE_SCORES:
    raise ConfigError(f"no reference scores for Atari game {game!r}")
  random, human = _REFERENCE_SCORES[rom]
  return (np.asarray(score, np.float64) - random) / (human - random)


# Module-level jits keyed on the agent's functions: one compile per agent and shape, reused by
# every later `evaluate` call with the same agent.
@functools.partial(jax.jit, static_argnums=0)
def _act(act, carry, frames, valid, key, t):
  # uint8 crosses to the device (4x less than float32); the scaling happens there.
  return act(carry, frames.astype(jnp.float32) / 255.0, valid, jax.random.fold_in(key, t))


@functools.partial(jax.jit, static_argnums=0)
def _observe(observe, carry, actions, rewards, dones):
  return observe(carry, actions, rewards, dones)


def env_seed(seed: int, game: str, index: int) -> int:
  """A game's envs depend on (seed, game, index) only, not on which other games are played."""
  words = [seed, zlib.crc32(rom_id(game).encode()), index]
  return int(np.random.SeedSequence(words).generate_state(1)[0])


def evaluate(agent: Agent, games: Sequence[str], *, envs_per_game: int, max_steps: int, key,
             seed: int, stop_when_done: bool = True, sticky_actions: float = 0.25,
             max_episode_steps: int = MAX_EPISODE_STEPS, noop_max: int = 0) -> dict:
  """Plays `envs_per_game` envs of every game for up to `max_steps` agent steps.

  The agent sees frames [G, E, 84, 84, 4] float32 in [0, 1] and an all-true `valid`
  [G, E, 18]. An episode ends when it terminates or is truncated; that env resets at once and
  its next frame starts the new episode, as in `minatar.rollout` (so `observe` gets done=True
  and the agent clears its history). With `stop_when_done` the loop ends as soon as every env
  has finished its first episode, which is all the result reports.

  Returns numpy {"first_return", "first_length" [G, E] (NaN where the first episode did not
  finish), "episodes" [G, E] (episodes finished), "steps" (agent steps played)}.
  """
  if not games or len(set(map(rom_id, games))) != len(games):
    raise ConfigError(f"games={list(games)} must be distinct Atari game names")
  for game in games:
    _check_game(game)
  shape = (len(games), envs_per_game)
  envs = [[make_env(game, seed=env_seed(seed, game, j), sticky_actions=sticky_actions,
                    max_episode_steps=max_episode_steps, noop_max=noop_max)
           for j in range(envs_per_game)] for game in games]
  try:
    frames = np.stack([[env.reset()[0] for env in row] for row in envs])
    carry = agent.init(*shape)
    valid = jnp.ones(shape + (NUM_ACTIONS,), bool)
    running = np.zeros(shape)
    first_return = np.full(shape, np.nan)
    first_length = np.full(shape, np.nan)
    episodes = np.zeros(shape, np.int32)
    length = np.zeros(shape, np.int32)
    steps = 0
    while steps < max_steps and not (stop_when_done and (episodes > 0).all()):
      actions, carry = _act(agent.act, carry, frames, valid, key, np.int32(steps))
      actions = np.asarray(actions)  # the one device -> host transfer per step
      # Fresh arrays each step: on CPU the device may share a numpy buffer, and the agent's
      # dispatch is asynchronous, so the frames it was given must not be written over.
      frames = np.empty(shape + FRAME_SHAPE, np.uint8)
      rewards = np.zeros(shape, np.float32)
      dones = np.zeros(shape, bool)
      for i, row in enumerate(envs):
        for j, env in enumerate(row):
          frames[i, j], rewards[i, j], terminated, truncated, _ = env.step(int(actions[i, j]))
          dones[i, j] = terminated or truncated
          if dones[i, j]:
            frames[i, j] = env.reset()[0]
      carry = _observe(agent.observe, carry, actions, rewards, dones)
      steps += 1
      running += rewards
      length += 1
      first = dones & (episodes == 0)
      first_return[first] = running[first]
      first_length[first] = length[first]
      episodes += dones
      running[dones] = 0.0
      length[dones] = 0
  finally:
    for env in (env for row in envs for env in row):
      env.close()
  return {"first_return": first_return, "first_length": first_length, "episodes": episodes,
          "steps": steps}
