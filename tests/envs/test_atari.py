"""Real Atari through ale-py: DQN-style frames, the batched evaluator, human-normalised scores."""

import pytest

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

import chex  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxml.envs import atari, minatar  # noqa: E402
from jaxml.errors import ConfigError  # noqa: E402


def test_frames_are_stacked_84x84_grayscale():
  env = atari.make_env("Pong", seed=0, max_episode_steps=10)
  previous, _ = env.reset()
  assert previous.shape == (84, 84, 4) and previous.dtype == np.uint8
  assert env.action_space.n == atari.NUM_ACTIONS
  assert not previous[..., :3].any() and previous[..., 3].any()  # zero-padded, newest last
  for step in range(1, 11):
    obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(obs[..., :3], previous[..., 1:])  # shifted one frame
    previous = obs
    # The limit counts agent steps: truncated at the 10th, not before (a check of the loop
    # index after the loop could not fail).
    assert truncated == (step == 10) and not terminated
  env.close()


def test_minimal_actions_map_into_the_full_set():
  # Pong's minimal set: NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE (ALE's full numbering).
  np.testing.assert_array_equal(atari.minimal_action_set("Pong"), [0, 1, 3, 4, 11, 12])
  assert len(atari.minimal_action_set("MsPacman")) == 9


def _checked_random_agent(seen):
  """The random agent, asserting the frames and mask it is given (at trace time)."""
  agent = minatar.random_agent()

  @chex.assert_max_traces(n=1)  # one compile across steps and across evaluations
  def act(carry, frames, valid, key):
    seen.append((frames.shape, frames.dtype, valid.shape, valid.dtype))
    return agent.act(carry, frames, valid, key)

  return agent._replace(act=act)


def test_evaluate_random_agent_on_pong_is_deterministic():
  seen = []
  agent = _checked_random_agent(seen)
  run = lambda seed: atari.evaluate(agent, ["Pong"], envs_per_game=2, max_steps=200,
                                    key=jax.random.key(0), seed=seed, max_episode_steps=100,
                                    stop_when_done=False)
  result = run(0)
  assert seen == [((1, 2, 84, 84, 4), np.float32, (1, 2, 18), np.bool_)]
  assert result["steps"] == 200
  for name in ("first_return", "first_length", "episodes"):
    assert result[name].shape == (1, 2)
  # Truncated at 100 steps and reset, so each env finished two episodes.
  np.testing.assert_array_equal(result["episodes"], 2)
  np.testing.assert_array_equal(result["first_length"], 100)
  # Pong scores whole points, at most 21 a side.
  returns = result["first_return"]
  assert np.all(returns == np.round(returns)) and np.all(np.abs(returns) <= 21)
  again = run(0)
  for name in ("first_return", "first_length", "episodes"):
    np.testing.assert_array_equal(again[name], result[name])


def test_evaluate_stops_when_every_first_episode_is_done():
  result = atari.evaluate(minatar.random_agent(), ["Pong"], envs_per_game=1, max_steps=50,
                          key=jax.random.key(1), seed=1, max_episode_steps=20)
  assert result["steps"] == 20 and result["first_length"][0, 0] == 20
  unfinished = atari.evaluate(minatar.random_agent(), ["Pong"], envs_per_game=1, max_steps=5,
                              key=jax.random.key(1), seed=1, max_episode_steps=20)
  assert np.isnan(unfinished["first_return"][0, 0]) and unfinished["episodes"][0, 0] == 0


def test_human_normalised_scores():
  random, human = atari._REFERENCE_SCORES["pong"]
  assert atari.human_normalised("Pong", random) == 0.0
  assert atari.human_normalised("Pong", human) == 1.0
  np.testing.assert_allclose(atari.human_normalised("SpaceInvaders", [148.0, 1668.7]), [0, 1])
  assert atari.human_normalised("space_invaders", 908.35) == pytest.approx(0.5)
  # Random and human scores as published (e.g. Agent57's table, Badia et al. 2020), written
  # out here: each game's name reaches its own row, so they normalise to exactly 0 and 1.
  published = {"Breakout": (1.7, 30.5), "Asterix": (210.0, 8503.3), "Freeway": (0.0, 29.6),
               "Seaquest": (68.4, 42054.7), "Qbert": (163.9, 13455.0),
               "MsPacman": (307.3, 6951.6), "Enduro": (0.0, 860.5)}
  for game, (random, human) in published.items():
    np.testing.assert_allclose(atari.human_normalised(game, [random, human, 2 * human - random]),
                               [0.0, 1.0, 2.0], atol=1e-12, err_msg=game)
  with pytest.raises(ConfigError, match="no reference scores"):
    atari.human_normalised("Adventure", 0.0)


def test_bad_games_and_missing_ale_are_config_errors(monkeypatch):
  with pytest.raises(ConfigError, match="unknown Atari game 'Pongg'"):
    atari.make_env("Pongg", seed=0)
  with pytest.raises(ConfigError, match="distinct"):
    atari.evaluate(minatar.random_agent(), ["Pong", "pong"], envs_per_game=1, max_steps=1,
                   key=jax.random.key(0), seed=0)
  atari._env_ids.cache_clear()
  monkeypatch.setattr(atari, "ale_py", None)
  try:
    with pytest.raises(ConfigError, match=r"pip install 'jaxml\[rl\]'"):
      atari.make_env("Pong", seed=0)
  finally:
    atari._env_ids.cache_clear()
