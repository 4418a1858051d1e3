"""MGDT: return and action sampling, the play agent's context window, training end to end."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import mgdt as mgdt_config
import jaxml.trained
from jaxml import runner
from tests.algos import smoke
from jaxml.algos import mgdt
from jaxml.envs import minatar
from jaxml.models import decision_transformer as dt

# Its trained fixture is costly: one worker runs all of its tests (--dist loadgroup in
# pyproject.toml), and the fixture is session-scoped, so it is built once (a module-scoped one
# is torn down whenever the worker runs another module's test in between, and built again).
pytestmark = pytest.mark.xdist_group("mgdt")

BINS = dt.ReturnBins(0.0, 10.0, 10)
LOGITS = jnp.log(jnp.array([0.3, 0.25, 0.2, 0.1, 0.05, 0.04, 0.03, 0.01, 0.01, 0.01]))


def _draws(n=20000, **kw):
  keys = jax.random.split(jax.random.key(0), n)
  return np.asarray(jax.vmap(lambda k: mgdt.sample_return(k, LOGITS, BINS, **kw))(keys))


def test_kappa_zero_follows_the_model_and_kappa_shifts_returns_up():
  freq = np.bincount(_draws(), minlength=10) / 20000
  probs = np.asarray(jax.nn.softmax(LOGITS))
  assert np.all(np.abs(freq - probs) < 4 * np.sqrt(probs * (1 - probs) / 20000) + 1e-3)
  means = [_draws(kappa=k).mean() for k in (0.0, 3.0, 10.0)]
  assert means[0] < means[1] < means[2]
  # κ reweights by exp(κ·normalised R): the exact tilted distribution.
  tilted = probs * np.exp(10.0 * (np.arange(10) + 0.5) / 10)
  tilted /= tilted.sum()
  assert means[2] == pytest.approx((tilted * np.arange(10)).sum(), abs=0.05)
  best = _draws(best_of=8)
  assert best.mean() > means[0] and np.all(best >= 0)


def test_action_sampling_respects_valid_actions_percentile_and_temperature():
  logits = jnp.array([0.0, 3.0, 2.0, 1.0, 5.0, -1.0])
  allowed = jnp.array([True, True, True, True, False, True])
  keys = jax.random.split(jax.random.key(1), 4000)
  draw = lambda **kw: np.asarray(jax.vmap(
      lambda k: mgdt.sample_action(k, logits, allowed, **kw))(keys))
  assert 4 not in draw()  # not a valid action, although the most likely
  top = draw(top_percentile=40.0)  # 2 of the 5 valid actions: the two most likely
  assert set(np.unique(top)) == {1, 2}
  assert set(np.unique(draw(temperature=1e-3))) == {1}


def test_normalised_scores_and_iqm():
  manifest = {"per_game": {"g": {"random": {"mean_return": 2.0, "max_return": 4.0},
                                 "expert": {"mean_return": 9.0, "max_return": 12.0}}}}
  assert mgdt.normalised_scores({"g": 7.0}, manifest) == {"g": pytest.approx(0.5)}
  assert mgdt.iqm([0, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(3.5)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  config = mgdt_config.get_config("smoke")
  config.progress = False
  workdir = tmp_path_factory.mktemp("mgdt")
  summary = smoke.run_compiling_once(config, workdir)
  return config, summary, workdir


def test_smoke_training_learns_and_plays(trained):
  config, summary, workdir = trained
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl") if "train/loss" in l]
  assert rows[-1]["train/loss"] < rows[0]["train/loss"]
  # The smoke data is a random policy's, so its actions cannot be predicted better than
  # chance; the rewards and returns-to-go can, and their losses fall.
  for head in ("reward_loss", "return_loss"):
    assert rows[-1][f"train/{head}"] < rows[0][f"train/{head}"] - 0.2, head
  # Play reports every game (its values are replayed in test_play_compiles_once...).
  games = config.data.games
  assert {k for k in summary if k.startswith("play/")} == {
      *(f"play/{g}/{v}" for g in games for v in ("return", "normalised")),
      "play/finished_fraction", "play/iqm_normalised"}


def test_agent_window_equals_the_model_on_the_explicit_history(trained):
  """Greedy play with a fixed return: every recorded action is the model's argmax on the
  last `context` steps of the current episode, rebuilt from the recorded trajectory."""
  config, _, workdir = trained
  config = config.copy_and_resolve_references()
  config.play.update(fixed_return=True, target_return=3.0, temperature=1e-4)
  state = jaxml.trained.load(str(workdir)).state
  games = minatar.make_games(list(config.data.games))
  out = jax.jit(lambda s, k: minatar.rollout(games, mgdt.dt_agent(config, s), k,
                                             envs_per_game=2, num_steps=12, record=True))(
                                                 state, jax.random.key(5))
  traj = jax.device_get(out["trajectory"])
  k = config.data.context
  model = state.model()
  target = int(mgdt.return_bins(config).encode(3.0))
  table = minatar.valid_action_table(games)
  for g in range(len(games)):
    for e in range(2):
      start = 0
      for t in range(12):
        lo = max(start, t - k + 1)
        frames = traj["frame"][lo:t + 1, g, e].astype(np.float32)
        actions = traj["action"][lo:t + 1, g, e]
        rewards = np.asarray(dt.encode_reward(traj["reward"][lo:t + 1, g, e],
                                              traj["done"][lo:t + 1, g, e]))
        n = t + 1 - lo
        logits = model(jnp.asarray(frames)[None], jnp.full((1, n), target),
                       jnp.asarray(actions)[None], jnp.asarray(rewards)[None])["action"]
        best = np.where(table[g], np.asarray(logits[0, -1]), -np.inf).argmax()
        assert actions[-1] == best, (g, e, t)
        if traj["done"][t, g, e]:
          start = t + 1


def test_play_compiles_once_across_knobs_and_matches_final_metrics(trained, monkeypatch):
  config, summary, workdir = trained
  state = jaxml.trained.load(str(workdir)).state
  make_agent = mgdt.agent
  monkeypatch.setattr(mgdt, "agent", lambda *a: make_agent(*a)._replace(
      act=chex.assert_max_traces(make_agent(*a).act, n=1)))
  mgdt.player.cache_clear()
  key = mgdt.rng.stream(jax.random.key(config.seed), "play")
  runs = {kappa: mgdt.play(config, state, key, envs=config.play.envs, steps=config.play.steps,
                           kappa=kappa) for kappa in (config.play.kappa, 0.0, 10.0)}
  mgdt.player.cache_clear()
  # The κ the run was configured with reproduces the scores the runner reported: each
  # game's mean first-episode return over the envs that finished one, and the fraction that did.
  first = runs[config.play.kappa]["first_return"]
  for g, game in enumerate(config.data.games):
    assert summary[f"play/{game}/return"] == pytest.approx(np.nanmean(first[g]))
  assert summary["play/finished_fraction"] == np.isfinite(first).mean()
  again = mgdt.scores(config, runs[config.play.kappa])
  assert again == pytest.approx({k: v for k, v in summary.items() if k.startswith("play/")})
  with pytest.raises(mgdt.ConfigError, match="unknown play settings"):
    mgdt.knobs(config, kapa=1.0)


def test_action_attention_map_covers_the_frame(trained):
  config, _, workdir = trained
  run = jaxml.trained.load(str(workdir))
  dataset, state = run.dataset, run.state
  window = {k: v[0] for k, v in dataset.test.read(np.arange(1)).items()}
  window["return"] = mgdt.return_bins(config).encode(window["return_to_go"])
  window["reward"] = dt.encode_reward(window["reward"], window["done"])
  maps = mgdt.action_attention(config, state, window)
  rows = minatar.FRAME_SHAPE[0] // config.model.patch_size
  assert maps.shape == (config.model.depth, config.model.num_heads, rows, rows)
  # Attention over the last frame's patches is part of a distribution over all tokens.
  assert np.all(maps >= 0) and np.all(maps.sum((-2, -1)) <= 1 + 1e-5)
  assert maps.sum() > 0


def test_fine_tuning_starts_from_the_multi_game_weights(trained, tmp_path):
  _, _, workdir = trained
  pretrained = jaxml.trained.load(str(workdir)).state
  config = mgdt_config.get_config("smoke,heldout=seaquest")
  config.progress = False
  config.play.envs = 0
  config.init_from = str(workdir)
  config.optimizer.learning_rate = 0.0  # nothing moves: the run ends where it started
  runner.run(config, str(tmp_path / "ft"))
  run = jaxml.trained.load(str(tmp_path / "ft"))
  dataset, tuned = run.dataset, run.state
  assert int(tuned.step) == config.num_steps
  chex.assert_trees_all_equal(tuned.params, pretrained.params)
  assert dataset.train.episodes and all(ep["game"] == 0 for ep in dataset.train.episodes)
  # A model of another shape is refused by name, before training.
  config.model.width = 48
  with pytest.raises(mgdt.ConfigError, match="init_from=.*does not match.*differ"):
    runner.run(config, str(tmp_path / "mismatch"))


@pytest.fixture(scope="session")
def rlu_data_dir(tmp_path_factory):
  from tests.data import test_rlu_atari  # pylint: disable=import-outside-toplevel
  return test_rlu_atari.prepare_fake(str(tmp_path_factory.mktemp("tfds")))


def test_atari_trains_on_rl_unplugged_and_plays_pong_in_ale(rlu_data_dir, tmp_path):
  pytest.importorskip("ale_py")
  config = mgdt_config.get_config("atari,smoke,games=Pong+Breakout")
  config.data.update(data_dir=rlu_data_dir, test_fraction=0.4)
  config.progress = False
  summary = runner.run(config, str(tmp_path))
  assert mgdt.frame_shape(config) == (84, 84, 4)
  # 20 agent steps (80 frames) cannot finish a game of Pong (21 points) or of Breakout (5
  # lives): a first episode that has not ended has no return, rather than a partial one.
  assert np.isnan(summary["play/Pong/return"]) and np.isnan(summary["play/Breakout/return"])
  assert summary["play/finished_fraction"] == 0.0
  # The agent never plays an action the game lacks (trained masked to the minimal set).
  state = jaxml.trained.load(str(tmp_path)).state
  table = mgdt.valid_table(config)
  mode = mgdt.PlayMode.of(config)
  agent = mgdt.agent(mode, state, mgdt.knobs(config))
  carry = agent.init(2, 3)
  frames = jnp.zeros((2, 3) + mgdt.frame_shape(config))
  actions, _ = jax.jit(agent.act)(carry, frames, jnp.ones((2, 3, 18), bool), jax.random.key(0))
  assert all(table[g, a] for g in range(2) for a in np.asarray(actions[g]))


def test_kappa_normalises_by_each_games_return_range():
  """With a game's range [0, 2] instead of the bins' [0, 10], κ tilts 5x as hard:
  exp(κ · R / 2) is exp(5κ · R / 10)."""
  keys = jax.random.split(jax.random.key(3), 20000)
  draw = lambda **kw: np.asarray(jax.vmap(
      lambda k: mgdt.sample_return(k, LOGITS, BINS, **kw))(keys))
  narrow = draw(kappa=2.0, low=0.0, high=2.0)
  wide = draw(kappa=10.0)
  assert abs(narrow.mean() - wide.mean()) < 0.1
  both = np.asarray(jax.vmap(lambda k: mgdt.sample_return(
      k, jnp.stack([LOGITS, LOGITS]), BINS, kappa=2.0,
      low=jnp.zeros((2, 1)), high=jnp.array([[2.0], [10.0]])))(keys))
  assert both[:, 0].mean() == pytest.approx(narrow.mean(), abs=0.1)
  assert both[:, 1].mean() < both[:, 0].mean() - 1.0
