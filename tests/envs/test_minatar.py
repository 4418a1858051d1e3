"""MinAtar behind one frame shape and action space; the jitted rollout equals a Python loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.envs import minatar
from jaxml.errors import ConfigError


def test_shared_action_space_and_frames():
  games = minatar.make_games(["breakout", "freeway", "space_invaders"])
  table = minatar.valid_action_table(games)
  # Breakout: no-op, left, right; Freeway: no-op, up, down; Space Invaders: + fire.
  np.testing.assert_array_equal(table[0], [1, 1, 0, 1, 0, 0])
  np.testing.assert_array_equal(table[1], [1, 0, 1, 0, 1, 0])
  np.testing.assert_array_equal(table[2], [1, 1, 0, 1, 0, 1])
  np.testing.assert_array_equal(games[0].game_action, [0, 1, 0, 2, 0, 0])  # invalid -> no-op
  frame, _ = games[1].reset(jax.random.key(0))
  assert frame.shape == minatar.FRAME_SHAPE
  assert not np.asarray(frame[..., 7:]).any()  # Freeway has 7 channels; the rest is padding
  with pytest.raises(ConfigError, match="unknown MinAtar game"):
    minatar.make_game("pong")


def _python_rollout(games, agent, key, envs, steps):
  """The same episode bookkeeping, one environment and one step at a time."""
  num_games = len(games)
  valid = np.broadcast_to(minatar.valid_action_table(games)[:, None],
                          (num_games, envs, minatar.NUM_ACTIONS))
  starts = minatar.reset_keys(key, num_games, envs)
  states = [[None] * envs for _ in games]
  frames = np.zeros((num_games, envs) + minatar.FRAME_SHAPE, np.float32)
  for i, game in enumerate(games):
    for j in range(envs):
      frames[i, j], states[i][j] = game.reset(starts[i, j])
  running = np.zeros((num_games, envs))
  first = np.full((num_games, envs), np.nan)
  episodes = np.zeros((num_games, envs))
  actions_seen = []
  for t in range(steps):
    agent_key, env_keys = minatar.step_keys(key, t, num_games, envs)
    actions, _ = agent.act((), jnp.asarray(frames), jnp.asarray(valid), agent_key)
    actions_seen.append(np.asarray(actions))
    for i, game in enumerate(games):
      for j in range(envs):
        frame, states[i][j], reward, done = game.step(env_keys[i, j], states[i][j],
                                                      actions[i, j])
        frames[i, j] = frame
        running[i, j] += float(reward)
        if done:
          if episodes[i, j] == 0:
            first[i, j] = running[i, j]
          episodes[i, j] += 1
          running[i, j] = 0.0
  return first, episodes, np.stack(actions_seen)


def test_jitted_rollout_equals_python_loop():
  games = minatar.make_games(["breakout", "space_invaders"])
  agent = minatar.random_agent()
  key = jax.random.key(3)
  got = jax.jit(lambda k: minatar.rollout(games, agent, k, envs_per_game=3, num_steps=40,
                                          record=True))(key)
  first, episodes, actions = _python_rollout(games, agent, key, 3, 40)
  np.testing.assert_array_equal(got["episodes"], episodes)
  np.testing.assert_array_equal(np.isnan(got["first_return"]), np.isnan(first))
  np.testing.assert_allclose(np.nan_to_num(got["first_return"]), np.nan_to_num(first))
  np.testing.assert_array_equal(got["trajectory"]["action"], actions)
  assert episodes.sum() > 0  # Breakout's random play ends episodes within 40 steps
  valid = minatar.valid_action_table(games)
  assert all(valid[i][actions[:, i]].all() for i in range(2))  # only valid actions sampled
