"""UniPi: conditioning plumbing, the closed-loop controller, and a smoke run through the runner."""

import json
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import unipi as unipi_config
import jaxml.trained
from jaxml import runner
from jaxml.algos import unipi
from jaxml.data import load_dataset
from jaxml.data.base import Field
from jaxml.training.data import prepare_data
from jaxml.data.sources import babyai as babyai_source
from jaxml.envs import babyai, closed_loop
from jaxml.models import diffusion
from tests.algos import smoke

# Its trained fixture is costly: one worker runs all of its tests (--dist loadgroup in
# pyproject.toml), and the fixture is session-scoped, so it is built once (a module-scoped one
# is torn down whenever the worker runs another module's test in between, and built again).
pytestmark = pytest.mark.xdist_group("unipi")

pytest.importorskip("minigrid")


def _oracle_net(prediction, channels):
  """A denoiser whose data is the first `channels` channels of its conditioning: DDIM with it
  lands exactly there, so a generated frame equals that conditioning frame only if the
  conditioning reached every denoising call."""

  def net(z, cond, t, *text, train=False):
    del text, train
    x0 = cond[..., :channels]
    alpha, sigma = diffusion.cosine_schedule(t)
    alpha, sigma = alpha[:, None, None, None, None], sigma[:, None, None, None, None]
    eps = (z - alpha * x0) / sigma
    if prediction == "x0":  # the algorithm adds the conditioning frames' mean itself
      return x0 - cond.reshape(cond.shape[:-1] + (-1, 3)).mean(-2)
    return eps if prediction == "eps" else alpha * eps - sigma * x0

  return net


def _fake_text(tokens, drop=None):
  pooled = jnp.ones((tokens.shape[0], 4)) if drop is None else jnp.zeros((tokens.shape[0], 4))
  return pooled[:, None, :].repeat(tokens.shape[1], 1), pooled, tokens > 0


@pytest.mark.parametrize("prediction", ["v", "eps", "x0"])
def test_the_first_frame_reaches_every_denoising_call(prediction):
  config = unipi_config.get_config("smoke")
  config.plan.update(prediction=prediction, sample_steps=5, guidance=3.0)
  model = types.SimpleNamespace(text=_fake_text, planner=_oracle_net(prediction, 3),
                                superres=_oracle_net(prediction, 3))
  first = jax.random.uniform(jax.random.key(0), (2, 24, 24, 3), minval=-1, maxval=1)
  tokens = jnp.asarray(babyai.tokenize(["go to the red ball", "go to a box"]))
  video = unipi.generate(config, model, first, tokens, jax.random.key(1), 3.0)
  assert video.shape == (2, config.data.horizon + 1, 24, 24, 3)
  # Keyframes from the planner and every frame from super-resolution equal the observed one.
  np.testing.assert_allclose(video, jnp.repeat(first[:, None], video.shape[1], 1), atol=2e-3)


def test_x0_denoisers_predict_the_change_to_their_conditioning_frames():
  config = unipi_config.get_config("smoke")
  pred = jnp.full((1, 2, 4, 4, 3), 0.25)
  first = jnp.full((1, 2, 4, 4, 3), -1.0)
  keys = jnp.concatenate([jnp.full((1, 2, 4, 4, 3), 0.2), jnp.full((1, 2, 4, 4, 3), 0.6)], -1)
  assert config.plan.prediction == "x0"
  np.testing.assert_allclose(unipi._with_base(config, pred, first), -0.75)
  np.testing.assert_allclose(unipi._with_base(config, pred, keys), 0.25 + 0.4, rtol=1e-6)
  np.testing.assert_array_equal(unipi._with_base(config, pred, None), pred)  # the ablation
  config.plan.prediction = "v"
  np.testing.assert_array_equal(unipi._with_base(config, pred, first), pred)


def test_superres_condition_brackets_each_frame_with_its_keyframes():
  keys = jnp.arange(4.0)[None, :, None, None, None] * jnp.ones((1, 4, 2, 2, 3))  # key k = k
  cond = unipi.superres_condition(keys, stride=2)  # 3 keyframes after the observed one
  assert cond.shape == (1, 6, 2, 2, 6)
  np.testing.assert_array_equal(cond[0, :, 0, 0, 0], [0, 0, 1, 1, 2, 2])  # before
  np.testing.assert_array_equal(cond[0, :, 0, 0, 3], [1, 1, 2, 2, 3, 3])  # after


def test_keyframes_are_every_stride_th_frame_or_all_without_hierarchy():
  config = unipi_config.get_config("smoke")
  np.testing.assert_array_equal(unipi.keyframe_indices(config), [2, 4, 6, 8])
  config = unipi_config.get_config("smoke,flat")
  np.testing.assert_array_equal(unipi.keyframe_indices(config), np.arange(1, 9))


def test_consistency_error_on_static_pixels():
  real = np.zeros((1, 3, 2, 2, 3), np.float32)
  real[0, 1:, 0, 0] = 1.0  # one pixel moves; the other three are static
  static = unipi.static_pixels(real)
  np.testing.assert_array_equal(static[0], [[False, True], [True, True]])
  plans = real.copy()
  assert unipi.consistency_error(plans, real, static) == 0.0
  plans[:, 1:, 1, 1] = 0.5  # a static pixel drifts by 0.5 in both generated frames
  assert unipi.consistency_error(plans, real, static) == pytest.approx(0.5 / 3)


def test_closed_loop_replays_the_bot_to_success():
  """The controller with a policy that plays the demonstrations' recorded actions (fed back
  `replan_every` at a time) succeeds on every episode in the recorded number of steps."""
  demos = babyai.demonstrations("goto", 3, seed=10_000, want="seen")
  envs = closed_loop.start_episodes("goto", 3, want="seen", seed=10_000, tile=4, max_steps=30)
  assert [e.mission for e in envs] == [d["mission"] for d in demos]
  calls = []

  def act(frames, tokens, key):
    del key
    t = len(calls) * 2
    calls.append(frames.copy())
    for i, demo in enumerate(demos):  # the controller shows what the env shows
      if t < len(demo["actions"]):
        np.testing.assert_array_equal(frames[i], demo["frames"][t])
    return np.stack([np.pad(d["actions"], (0, 64))[t:t + 2] for d in demos]), None

  result = closed_loop.run_episodes(act, "goto", episodes=3, want="seen", seed=10_000,
                                    max_steps=30, replan_every=2, key=jax.random.key(0),
                                    record=1)
  assert result.success.all()
  np.testing.assert_array_equal(result.steps, [len(d["actions"]) for d in demos])
  assert result.mean_steps == pytest.approx(np.mean([len(d["actions"]) for d in demos]))
  np.testing.assert_array_equal(result.recorded[0]["frames"], demos[0]["frames"])
  assert len(calls) == (max(len(d["actions"]) for d in demos) + 1) // 2


def test_control_runs_a_given_policy_on_the_trained_policys_episodes():
  """`act=random_act` (the study's chance row) acts in the same environments a trained
  policy would: same missions per level, one uniform action per call."""
  config = unipi_config.get_config("smoke")
  config.control.episodes = 3
  seen = unipi.control(config, None, jax.random.key(0), want="seen", act=unipi.random_act)
  for i, (level, result) in enumerate(seen.items()):
    envs = closed_loop.start_episodes(level, 3, want="seen", seed=config.control.seed + 1000 * i,
                                      tile=4, max_steps=config.control.max_steps)
    assert result.missions == tuple(e.mission for e in envs)
    assert ((result.steps > 0) & (result.steps <= config.control.max_steps)).all()
  actions, plans = unipi.random_act(np.zeros((500, 24, 24, 3)), None, jax.random.key(1))
  assert plans is None and actions.shape == (500, 1)
  assert set(np.unique(actions)) == set(range(len(babyai.ACTIONS)))


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  config = unipi_config.get_config("smoke")
  config.progress = False
  workdir = tmp_path_factory.mktemp("unipi")
  summary = smoke.run_compiling_once(config, workdir)
  return config, summary, workdir


def test_smoke_run_trains_and_controls_in_the_real_environment(trained):
  config, summary, workdir = trained
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl") if "train/loss" in l]
  assert rows[-1]["train/planner_loss"] < rows[0]["train/planner_loss"]
  assert rows[-1]["train/superres_loss"] < rows[0]["train/superres_loss"]
  assert rows[-1]["train/inverse_loss"] < rows[0]["train/inverse_loss"] - 0.2
  state = jaxml.trained.load(str(workdir)).state
  key = unipi.rng.stream(jax.random.key(config.seed), "control")
  # Closed loop: the reported rates are those of the run's episodes played again (at smoke
  # size no better than random_act's on the same episodes, so that is not asserted); an
  # episode that fails runs to the step limit.
  for want in ("seen", "heldout"):
    (result,) = unipi.control(config, state, jax.random.fold_in(key, want == "heldout"),
                              want=want).values()
    assert summary[f"control/{want}/goto/success"] == result.success_rate
    assert summary[f"control/{want}/success"] == result.success_rate  # the one level
    assert (result.steps[~result.success] == config.control.max_steps).all()
  # plan/consistency_error is replayed and compared in test_sampling_compiles_once...


def test_inverse_dynamics_beats_chance_on_heldout_frame_pairs(trained):
  config, _, workdir = trained
  state = jaxml.trained.load(str(workdir)).state
  split = babyai_source.heldout_split(config.data)
  batch = split.read(np.arange(len(split)))
  logits = unipi.inverse_logits(unipi.ema_model(state), unipi.to_signed(
      jnp.asarray(batch["video"])))
  real = batch["action_mask"] > 0
  accuracy = np.mean(np.asarray(jnp.argmax(logits, -1))[real] == batch["actions"][real])
  majority = np.max(np.bincount(batch["actions"][real])) / real.sum()
  assert accuracy > majority, (accuracy, majority)


def test_sampling_compiles_once_across_guidance_weights(trained, monkeypatch):
  config, summary, workdir = trained
  run = jaxml.trained.load(str(workdir))
  dataset, state = run.dataset, run.state
  make_plan = unipi.plan_actions
  monkeypatch.setattr(unipi, "plan_actions", chex.assert_max_traces(make_plan, n=1))
  policy = unipi.make_policy(config)
  key = jax.random.key(3)
  errors = [unipi.frame_consistency(config, state, dataset.test, key, count=4, guidance=w,
                                    policy=policy) for w in (0.0, 1.0, 3.0)]
  assert len(set(errors)) > 1  # the guidance weight changes the plans
  # The configured weight with the run's key reproduces the runner's measure.
  plans, video = unipi.window_plans(config, state, dataset.test, unipi.rng.stream(
      unipi.rng.stream(jax.random.key(config.seed), "control"), "consistency"),
                                    count=config.control.consistency_windows, policy=policy)
  static = unipi.static_pixels(video)
  again = unipi.consistency_error(plans, video, static)
  assert again == pytest.approx(summary["plan/consistency_error"], rel=1e-5)
  # Plans keep their own scene: the error against the windows they were planned from is well
  # below that of the same plans paired with other windows' scenes.
  assert again < 0.5 * unipi.consistency_error(np.roll(plans, 1, 0), video, static)


def _majority_rate(split) -> float:
  """Accuracy of always predicting the split's most frequent action, over real steps."""
  batch = split.read(np.arange(len(split)))
  actions = batch["actions"][batch["action_mask"] > 0]
  return np.bincount(actions).max() / len(actions)


def test_behaviour_cloning_baseline_trains_and_acts(tmp_path):
  config = unipi_config.get_config("smoke,bc")
  config.progress = False
  summary = runner.run(config, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl") if "train/loss" in l]
  assert rows[-1]["train/action_loss"] < rows[0]["train/action_loss"] - 0.1
  # At smoke size BC reaches, not beats, the majority action on the test windows.
  assert summary["eval/action_accuracy"] >= _majority_rate(load_dataset(config.data).test)
  assert {"control/seen/success", "control/heldout/success"} <= summary.keys()
  assert "plan/consistency_error" not in summary


def test_bad_plan_settings_are_config_errors():
  dataset = types.SimpleNamespace(fields={"video": Field((9, 24, 24, 3), "float32")})
  config = unipi_config.get_config("smoke")
  config.data.horizon = 7
  with pytest.raises(unipi.ConfigError, match="horizon"):
    unipi.validate(config, dataset)
  config = unipi_config.get_config("smoke")
  config.plan.prediction = "score"
  with pytest.raises(unipi.ConfigError, match="prediction"):
    unipi.validate(config, dataset)
  config = unipi_config.get_config("smoke")
  with pytest.raises(unipi.ConfigError, match="patches"):
    unipi.validate(config, types.SimpleNamespace(
        fields={"video": Field((9, 26, 26, 3), "float32")}))


def test_frozen_t5_embeddings_replace_the_learned_encoder(tmp_path):
  """A table of every mission (random vectors standing in for T5's) trains with only its
  null embedding as a parameter; a table missing a mission is refused by name."""
  config = unipi_config.get_config("smoke")
  prepare_data(config.data)
  dataset = load_dataset(config.data)
  missions = sorted(set(dataset.train.missions) | set(dataset.test.missions))
  rng = np.random.default_rng(0)
  path = tmp_path / "t5.npz"
  np.savez(path, missions=np.array(missions), embeddings=rng.normal(
      size=(len(missions), 5, 24)).astype(np.float32), mask=np.ones((len(missions), 5), bool))
  config.model.text.t5_embeddings = str(path)
  algorithm = unipi.build(config, dataset)
  state = algorithm.init(jax.random.key(0))
  assert set(state.params["text"]) == {"null"}
  batch = dataset.train.read(np.arange(4))
  new_state, metrics = jax.jit(algorithm.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(metrics["loss"])
  np.testing.assert_array_equal(new_state.model_state["text"]["embeddings"][...],
                                state.model_state["text"]["embeddings"][...])
  np.savez(path, missions=np.array(missions[1:]), embeddings=rng.normal(
      size=(len(missions) - 1, 5, 24)).astype(np.float32),
           mask=np.ones((len(missions) - 1, 5), bool))
  with pytest.raises(unipi.ConfigError, match="not in model.text.t5_embeddings"):
    unipi.build(config, dataset)
