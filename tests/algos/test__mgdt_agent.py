"""MGDT's player: cached play (one window pass per move) plays the full model's actions."""

import dataclasses

import jax
import numpy as np
import pytest

from experiments import mgdt as mgdt_config
from jaxml.algos import _mgdt_agent, mgdt
from jaxml.envs import minatar

ENVS, STEPS = 3, 14  # context 4: the window is full, and slides, from the 4th move on


def _config(**play):
  config = mgdt_config.get_config("smoke")
  config.model.depth = 2  # a layer before the last one, whose rows the cache keeps in full
  config.play.kappa_scale = "global"  # no dataset needed for the return range
  config.play.update(play)
  return config


@pytest.mark.parametrize("play", [{"kappa": 3.0}, {"best_of": 4}], ids=["kappa", "best_of"])
def test_cached_play_takes_the_uncached_players_actions_under_the_same_keys(play):
  config = _config(**play)
  state = mgdt.init_state(config, jax.random.key(0))
  games = minatar.make_games(list(config.data.games))
  mode = mgdt.PlayMode.of(config)
  assert mode.cache and mode.returns == ("best_of" if "best_of" in play else "sample")
  runs = {}
  for cache in (True, False):
    agent = mgdt.agent(dataclasses.replace(mode, cache=cache), state, mgdt.knobs(config))
    runs[cache] = jax.device_get(jax.jit(lambda s, k, agent=agent: minatar.rollout(
        games, agent, k, envs_per_game=ENVS, num_steps=STEPS, record=True))(
            state, jax.random.key(11)))
  cached, reference = (runs[c]["trajectory"]["action"] for c in (True, False))
  assert cached.shape == (STEPS, len(games), ENVS) and STEPS > config.data.context
  np.testing.assert_array_equal(cached, reference)
  np.testing.assert_array_equal(runs[True]["trajectory"]["frame"],
                                runs[False]["trajectory"]["frame"])
  assert len(np.unique(cached)) > 1  # sampled play, not one repeated action


def test_window_agent_samples_only_the_games_actions():
  config = _config()
  state = mgdt.init_state(config, jax.random.key(0))
  table = np.zeros((2, minatar.NUM_ACTIONS), bool)
  table[0, [1, 3]], table[1, 0] = True, True
  agent = _mgdt_agent.window_agent(mgdt.PlayMode.of(config), table, state, mgdt.knobs(config))
  carry = agent.init(2, 5)
  frames = np.zeros((2, 5) + minatar.FRAME_SHAPE, np.float32)
  valid = np.ones((2, 5, minatar.NUM_ACTIONS), bool)
  for t in range(6):
    actions, carry = jax.jit(agent.act)(carry, frames, valid, jax.random.key(t))
    assert all(table[g, a] for g in range(2) for a in np.asarray(actions[g]))
    carry = agent.observe(carry, actions, np.zeros((2, 5)), np.zeros((2, 5), bool))
  assert np.all(np.asarray(carry["t"]) == 6)
