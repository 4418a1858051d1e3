"""Multi-Game Decision Transformer (Lee et al. 2022): offline training on mixed-quality
episodes of several games, then jitted play in the games with expert-return sampling.

Training: windows of `data.context` steps (`episodes:` source) from every game, mixed in each
batch; the loss is the mean of three cross-entropies over valid steps: the return-to-go bin
(read at the frame's last patch), the action (at the return token) and the reward class (at
the action token). `config.objective = "bc"` trains behaviour cloning instead: the same model
with every return token replaced by bin 0 and no return or reward loss.

Play (`final_metrics`, after training): `play.envs` environments of every game at once in one
jitted rollout. At each step the agent asks for an expert return, sampled from
p(R | history) · exp(κ · (R - low) / (high - low)) (`play.kappa`; κ = 0 is the model's own
distribution) or as the best of `play.best_of` samples, or fixed (`play.fixed_return`: the bin
of `play.target_return`). Then it samples the action at temperature `play.temperature` among
the valid actions whose probability lies in the top `play.top_percentile` percent. Both reads
share one pass over the window per move: the action pass computes only the chosen return
token against the window's cached keys and values (`jaxml/algos/_mgdt_agent.py`,
`jaxml/models/decision_transformer_cache.py`; `PlayMode.cache=False` runs the full model
twice, with the same actions under the same keys). Scores per game: mean return of each
environment's first episode, normalised so 0 is the dataset's random policy and 1 its best
episode, and the inter-quartile mean (IQM) of those scores across games.

Two suites. MinAtar (`episodes:` data from `jaxml.envs.collect`): 10x10x10 frames, 6 actions,
played inside one jitted rollout, scores normalised by the dataset's manifest. Atari
(`rlu_atari` data): 84x84x4 frames, ALE's 18 actions, played in ale-py around the jitted
agent (`jaxml.envs.atari.evaluate`), scores human-normalised. In both, a game's actions are
masked to those it has, in training and in play. `play` takes the numeric settings (κ,
temperature, top percentile, target return) as traced values: one compilation serves a sweep.

Fine-tuning to a new game is `config.init_from` (the runner's warm start) on a config whose
`data.games` is that game, e.g. with few episodes (`data.max_episodes`).

The algorithm contract is `jaxml/algos/base.py`; `play`, `scores` and `action_attention` also
serve the studies over trained runs (`jaxml/studies/`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxml.algos import _mgdt_agent
from jaxml.algos._mgdt_agent import sample_action, sample_return  # noqa: F401 (the API)
from jaxml.algos.base import Algorithm
from jaxml.core import checks, rng
from jaxml.core.optim import check_optimizer, make_optimizer
from jaxml.core.state import TrainState
from jaxml.envs import atari, collect, minatar
from jaxml.errors import ConfigError
from jaxml.losses.classification import masked_cross_entropy
from jaxml.models import activations
from jaxml.models import decision_transformer as dt

OBJECTIVES = ("dt", "bc")


def return_bins(config) -> dt.ReturnBins:
  return dt.ReturnBins(float(config.returns.low), float(config.returns.high),
                       int(config.returns.num_bins))


def games_of(config) -> list[str]:
  return list(config.data.games)


def suite(config) -> str:
  """Where the games come from: "atari" (RL Unplugged data, ale-py play) or "minatar"."""
  return "atari" if config.data.source.split(":")[0] == "rlu_atari" else "minatar"


def frame_shape(config) -> tuple[int, ...]:
  if suite(config) == "atari":
    return atari.FRAME_SHAPE[:2] + (int(config.data.get("frame_stack", atari.STACK)),)
  return minatar.FRAME_SHAPE


def num_actions(config) -> int:
  return atari.NUM_ACTIONS if suite(config) == "atari" else minatar.NUM_ACTIONS


@functools.lru_cache(maxsize=8)
def _valid_table(kind: str, games: tuple[str, ...]) -> np.ndarray:
  """bool [games, actions]: the actions each game has (the model is trained masked to them,
  so play samples only among them too)."""
  if kind == "atari":
    from jaxml.data.sources import rlu_atari  # pylint: disable=import-outside-toplevel
    return rlu_atari.valid_actions(games)
  return minatar.valid_action_table(minatar.make_games(games))


def valid_table(config) -> np.ndarray:
  return _valid_table(suite(config), tuple(games_of(config)))


def build(config, dataset) -> Algorithm:
  validate(config, dataset)
  table = valid_table(config)  # built before tracing: see `_tokens`
  return Algorithm(
      init=lambda key: init_state(config, key), train_step=make_train_step(config, table),
      eval_step=make_eval_step(config, table),
      final_metrics=lambda state: final_metrics(config, state),
      headline=("eval/loss", "eval/action_accuracy", "play/iqm_normalised"))


RULES = {
    "objective": checks.one_of(*OBJECTIVES),
    "data.context": checks.count(1), "data.max_episodes": checks.count(0),
    "data.test_fraction": checks.in_range(0, 1, open_low=True, open_high=True),
    "data.frame_stack": checks.count(1), "data.run": checks.count(1),
    # The dataset builder's settings (jaxml.envs.collect), checked before it runs for minutes.
    "data.build.enabled": checks.flag, "data.build.games": checks.each(
        checks.one_of(*minatar.GAMES)), "data.build.envs": checks.count(1),
    "data.build.steps": checks.count(1), "data.build.seed": checks.count(0),
    "data.build.ppo_steps": checks.count(0),
    "model.patch_size": checks.count(1), "model.width": checks.count(1),
    "model.depth": checks.count(1), "model.num_heads": checks.count(1),
    "model.context": checks.count(1), "model.single_return_token": checks.flag,
    "model.activation": activations.rule,
    "returns.low": checks.in_range(), "returns.high": checks.in_range(),
    "returns.num_bins": checks.count(2),
    "play.envs": checks.count(0), "play.steps": checks.count(1), "play.kappa": checks.in_range(),
    "play.kappa_scale": checks.one_of("global", "game"), "play.best_of": checks.count(0),
    "play.fixed_return": checks.flag, "play.target_return": checks.in_range(),
    "play.temperature": checks.positive,
    "play.top_percentile": checks.in_range(0, 100, open_low=True)}


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`): ranges, then relations."""
  checks.check_values(config, RULES)
  games = config.data.games
  if not games or not all(isinstance(g, str) for g in games):
    raise ConfigError(f"data.games={games!r} must be a non-empty tuple of game names")
  if suite(config) == "minatar":
    checks.check_values(config, {"data.games": checks.each(checks.one_of(*minatar.GAMES))})
  m = config.model
  if m.width % m.num_heads:
    raise ConfigError(f"model.num_heads={m.num_heads} must divide model.width={m.width}")
  if config.data.context > m.context:
    raise ConfigError(f"data.context={config.data.context} exceeds model.context={m.context}")
  if config.returns.high <= config.returns.low:
    raise ConfigError(f"returns.high={config.returns.high} must be > returns.low="
                      f"{config.returns.low}")
  try:
    dt.num_patches(frame_shape(config), m.patch_size)
  except ConfigError as err:
    raise ConfigError(f"model.patch_size={m.patch_size}: {err}") from None
  if config.play.get("kappa_scale") == "game" and suite(config) != "minatar":
    raise ConfigError("play.kappa_scale='game' is MinAtar's (each game's dataset return "
                      "range); use 'global'")
  check_optimizer(config.optimizer)


def validate(config, dataset) -> None:
  check_config(config)
  frames = tuple(dataset.fields["frame"].shape[1:])  # [context, *frame] per example
  if frames != frame_shape(config):
    raise ConfigError(f"the data's frames are {frames}, the model's "
                      f"{frame_shape(config)}")
  if suite(config) == "atari" and config.play.envs > 0 and frame_shape(config) != \
      atari.FRAME_SHAPE:
    raise ConfigError(f"playing Atari needs data.frame_stack={atari.STACK} (the evaluator's "
                      "frames); set play.envs=0 to train without playing")


def make_model(config, rngs) -> dt.DecisionTransformer:
  m = config.model
  return dt.DecisionTransformer(
      image_shape=frame_shape(config), patch_size=m.patch_size, num_actions=num_actions(config),
      num_return_bins=config.returns.num_bins, context=m.context, width=m.width, depth=m.depth,
      num_heads=m.num_heads, single_return_token=m.get("single_return_token", False),
      activation=activations.from_config(m, default=dt.DEFAULT_ACTIVATION), rngs=rngs)


def init_state(config, key) -> TrainState:
  model = make_model(config, nnx.Rngs(params=key))
  return TrainState.create(model, make_optimizer(config.optimizer, config.num_steps))


def _tokens(config, table, batch):
  """(return bins, reward classes, valid-action mask [B, A]) of a batch of windows;
  `table` is `_valid_table` of the config's games (built before tracing: gymnax makes
  device constants, which the train loop's transfer guard would refuse)."""
  bins = return_bins(config).encode(batch["return_to_go"])
  if config.objective == "bc":
    bins = jnp.zeros_like(bins)
  rewards = dt.encode_reward(batch["reward"], batch["done"])
  return bins, rewards, jnp.asarray(table)[batch["game"]]


def _losses(config, table, model, batch):
  """(the three loss means, action-correct sum, valid steps) of a batch of windows."""
  bins, rewards, allowed = _tokens(config, table, batch)
  logits = model(batch["frame"], bins, batch["action"], rewards, action_mask=allowed)
  weight = batch["step_mask"] * batch.get("mask", jnp.ones(bins.shape[:1]))[:, None]
  action = masked_cross_entropy(logits["action"], batch["action"], weight)
  parts = {"return_loss": masked_cross_entropy(logits["return"], bins, weight).mean,
           "action_loss": action.mean,
           "reward_loss": masked_cross_entropy(logits["reward"], rewards, weight).mean}
  return parts, action.correct, action.count


def _objective(config, parts):
  if config.objective == "bc":
    return parts["action_loss"]
  return (parts["return_loss"] + parts["action_loss"] + parts["reward_loss"]) / 3


def make_train_step(config, table: np.ndarray):
  tx = make_optimizer(config.optimizer, config.num_steps)

  def train_step(state: TrainState, batch, key):
    del key  # no augmentation or dropout

    def loss_fn(params):
      model = nnx.merge(state.graphdef, params, state.model_state)
      parts, correct, count = _losses(config, table, model, batch)
      return _objective(config, parts), (parts, correct / jnp.maximum(count, 1.0))

    (loss, (parts, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(tx, grads), {
        "loss": loss, **parts, "action_accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}

  return train_step


def make_eval_step(config, table: np.ndarray):

  def eval_step(state: TrainState, batch):
    parts, correct, count = _losses(config, table, state.model(), batch)
    return {"loss": _objective(config, parts) * count, "action_accuracy": correct,
            "count": count}

  return eval_step


# ---------------------------------------------------------------------------------------
# Play.


KNOBS = ("kappa", "temperature", "top_percentile", "target_return")


@dataclasses.dataclass(frozen=True)
class PlayMode:
  """What fixes the shape of play's computation (a change recompiles); the numeric settings
  in `KNOBS` are traced, so sweeping κ or temperature reuses one compiled rollout."""
  suite: str  # "minatar" or "atari"
  games: tuple[str, ...]
  frame_shape: tuple[int, ...]
  bins: dt.ReturnBins
  context: int
  returns: str  # "sample" (κ), "best_of", "fixed" or "none" (behaviour cloning)
  best_of: int = 0
  # (low, high) per game that κ normalises returns by; () = the return bins' range.
  return_ranges: tuple[tuple[float, float], ...] = ()
  # True: one pass over the window per move, then only the new return token
  # (`decision_transformer_cache`); False: the full model twice (the reference it equals).
  cache: bool = True

  @classmethod
  def of(cls, config) -> PlayMode:
    play = config.play
    if config.objective == "bc":
      returns = "none"
    elif play.fixed_return:
      returns = "fixed"
    else:
      returns = "best_of" if play.best_of > 0 else "sample"
    return cls(suite(config), tuple(games_of(config)), frame_shape(config), return_bins(config),
               int(config.data.context), returns, int(play.best_of), return_ranges(config))


def return_ranges(config) -> tuple[tuple[float, float], ...]:
  """Per game, the range of episode returns in the MinAtar dataset (`play.kappa_scale` =
  "game"), or () for the return bins' one range ("global"). Games' scores differ by 10x
  (Breakout's best episode returns 36, Space Invaders' 161), so with one range κ would barely
  tilt the low-scoring games' returns."""
  if config.play.get("kappa_scale", "global") == "global":
    return ()
  stats = collect.read_manifest(config.data.source.partition(":")[2])["per_game"]
  ranges = []
  for game in games_of(config):
    lows = [s["min_return"] for s in stats[game].values() if s["min_return"] is not None]
    highs = [s["max_return"] for s in stats[game].values() if s["max_return"] is not None]
    low, high = min(lows, default=0.0), max(highs, default=1.0)
    ranges.append((float(low), float(max(high, low + 1.0))))
  return tuple(ranges)


def knobs(config, **overrides) -> dict[str, jax.Array]:
  """The traced play settings: config.play's values, with `overrides`."""
  values = {name: overrides.pop(name, config.play[name]) for name in KNOBS}
  if overrides:
    raise ConfigError(f"unknown play settings {sorted(overrides)}; known: {', '.join(KNOBS)}")
  return {name: jnp.asarray(v, jnp.float32) for name, v in values.items()}


def dt_agent(config, state: TrainState, knob_values=None) -> minatar.Agent:
  """The trained model as an `Agent` playing with config.play's settings (or `knob_values`)."""
  return agent(PlayMode.of(config), state, knobs(config) if knob_values is None else knob_values)


def agent(mode: PlayMode, state: TrainState, knob_values) -> minatar.Agent:
  """A rolling window of the last `context` steps per env, fed to the model at every move
  (`_mgdt_agent.window_agent`: one pass over the window per move unless mode.cache=False)."""
  return _mgdt_agent.window_agent(mode, _valid_table(mode.suite, mode.games), state, knob_values)


def normalised_scores(returns: dict[str, float], manifest: dict) -> dict[str, float]:
  """(return - random mean) / (best dataset episode - random mean), per game."""
  scores = {}
  for game, value in returns.items():
    stats = manifest["per_game"][game]
    low = stats.get("random", {}).get("mean_return") or 0.0
    high = max((s["max_return"] for s in stats.values() if s["max_return"] is not None),
               default=low)
    scores[game] = (value - low) / max(high - low, 1e-9)
  return scores


def iqm(values) -> float:
  """Mean of the middle 50% (inclusive of partial ranks by trimming 25% each side)."""
  values = np.sort(np.asarray(list(values), np.float64))
  if not len(values):
    return float("nan")
  cut = int(np.floor(0.25 * len(values)))
  middle = values[cut:len(values) - cut] if len(values) > 2 * cut else values
  return float(np.mean(middle))


@functools.lru_cache(maxsize=16)
def player(mode: PlayMode, envs: int, steps: int, record: bool = False):
  """Jitted (state, key, knobs) -> rollout result of `envs` envs per game for `steps` steps;
  one compilation per (mode, sizes), whatever the knobs and weights."""
  games = minatar.make_games(mode.games)
  return jax.jit(lambda state, key, knob_values: minatar.rollout(
      games, agent(mode, state, knob_values), key, envs_per_game=envs, num_steps=steps,
      record=record))


def play(config, state: TrainState, key, *, envs: int, steps: int, record: bool = False,
         **overrides) -> dict[str, np.ndarray]:
  """First-episode returns [G, E] of the trained agent in every game, with config.play's
  settings or `overrides` of the `KNOBS` (e.g. kappa=10): MinAtar in one jitted rollout,
  Atari in ale-py's Python loop around the jitted agent."""
  mode = PlayMode.of(config)
  if mode.suite == "atari":
    if record:
      raise ConfigError("recording trajectories is MinAtar-only")
    return atari.evaluate(agent(mode, state, knobs(config, **overrides)), mode.games,
                          envs_per_game=envs, max_steps=steps, key=key, seed=config.seed)
  run = player(mode, envs, steps, record)
  return jax.device_get(run(state, key, knobs(config, **overrides)))


def scores(config, result) -> dict[str, float]:
  """Per-game mean first-episode return and normalised score, and their IQM, of `play`'s
  result (see the module docstring)."""
  first = result["first_return"]
  returns = {g: float(np.nanmean(first[i])) if np.isfinite(first[i]).any() else float("nan")
             for i, g in enumerate(games_of(config))}
  if suite(config) == "atari":  # human-normalised, as in the MGDT paper
    normalised = {g: float(atari.human_normalised(g, v)) for g, v in returns.items()}
  else:  # between the dataset's random policy and its best episode
    normalised = normalised_scores(returns, collect.read_manifest(
        config.data.source.partition(":")[2]))
  out = {f"play/{g}/return": v for g, v in returns.items()}
  out.update({f"play/{g}/normalised": v for g, v in normalised.items()})
  out["play/finished_fraction"] = float(np.isfinite(first).mean())
  out["play/iqm_normalised"] = iqm(v for v in normalised.values() if np.isfinite(v))
  return out


def action_attention(config, state: TrainState, window) -> np.ndarray:
  """[depth, heads, rows, cols]: how much the token that reads the action of a window's last
  step (its return token) attends to each patch of that step's frame. `window` holds one
  window's frame [K, H, W, C], return bins, action and reward classes [K]."""
  model = state.model()
  steps = window["action"].shape[0]
  weights = model.attention_weights(*(jnp.asarray(window[k])[None] for k in
                                      ("frame", "return", "action", "reward")))
  per_step = model.patches + 3
  query = (steps - 1) * per_step + dt.token_indices(model.patches)["return"]
  keys = slice((steps - 1) * per_step, (steps - 1) * per_step + model.patches)
  rows = window["frame"].shape[1] // model.patch_size
  maps = weights[:, 0, :, query, keys]
  return np.asarray(maps.reshape(maps.shape[:2] + (rows, -1)))


def final_metrics(config, state: TrainState) -> dict[str, float]:
  """Scores in the games after training (see the module docstring)."""
  if config.play.envs <= 0:
    return {}
  return scores(config, play(config, state, rng.stream(jax.random.key(config.seed), "play"),
                             envs=config.play.envs, steps=config.play.steps))
