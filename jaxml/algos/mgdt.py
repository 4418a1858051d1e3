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
distribution) or as the best of `play.best_of` samples, or a fixed `play.target_return`; then
samples (`play.fixed_return`: the bin of `play.target_return`). Then it samples the action at temperature `play.temperature` among the valid actions whose
probability lies in the top `play.top_percentile` percent. Scores per game: mean return of
each environment's first episode, normalised so 0 is the dataset's random policy and 1 its
best episode, and the inter-quartile mean (IQM) of those scores across games.

Algorithm contract: validate, init_state, make_train_step, make_eval_step, final_metrics.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxml.core import rng
from jaxml.core.optim import make_optimizer
from jaxml.core.state import TrainState
from jaxml.envs import collect, minatar
from jaxml.errors import ConfigError
from jaxml.models import decision_transformer as dt

OBJECTIVES = ("dt", "bc")


def return_bins(config) -> dt.ReturnBins:
  return dt.ReturnBins(float(config.returns.low), float(config.returns.high),
                       int(config.returns.num_bins))


def games_of(config) -> list[str]:
  return list(config.data.games)


@functools.lru_cache(maxsize=8)
def _valid_table(games: tuple[str, ...]) -> np.ndarray:
  return minatar.valid_action_table(minatar.make_games(games))


def validate(config, dataset) -> None:
  if config.objective not in OBJECTIVES:
    raise ConfigError(f"objective={config.objective!r}: choose one of {', '.join(OBJECTIVES)}")
  if config.data.context > config.model.context:
    raise ConfigError(f"data.context={config.data.context} exceeds model.context="
                      f"{config.model.context}")
  return_bins(config)
  dt.num_patches(dataset.input_shape, config.model.patch_size)
  if not 0 < config.play.top_percentile <= 100 or config.play.temperature <= 0:
    raise ConfigError("play.top_percentile must be in (0, 100] and play.temperature > 0")


def make_model(config, rngs) -> dt.DecisionTransformer:
  m = config.model
  return dt.DecisionTransformer(
      image_shape=minatar.FRAME_SHAPE, patch_size=m.patch_size, num_actions=minatar.NUM_ACTIONS,
      num_return_bins=config.returns.num_bins, context=m.context, width=m.width, depth=m.depth,
      num_heads=m.num_heads, rngs=rngs)


def init_state(config, dataset, key) -> TrainState:
  del dataset
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
  count = jnp.maximum(jnp.sum(weight), 1.0)

  def mean_ce(head, target):
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits[head], target)
                   * weight) / count

  parts = {"return_loss": mean_ce("return", bins), "action_loss": mean_ce("action",
                                                                          batch["action"]),
           "reward_loss": mean_ce("reward", rewards)}
  correct = jnp.sum((jnp.argmax(logits["action"], -1) == batch["action"]) * weight)
  return parts, correct, jnp.sum(weight)


def _objective(config, parts):
  if config.objective == "bc":
    return parts["action_loss"]
  return (parts["return_loss"] + parts["action_loss"] + parts["reward_loss"]) / 3


def make_train_step(config, dataset):
  del dataset
  tx = make_optimizer(config.optimizer, config.num_steps)
  table = _valid_table(tuple(games_of(config)))

  def train_step(state: TrainState, batch, key):
    del key  # no augmentation or dropout

    def loss_fn(params):
      model = nnx.merge(state.graphdef, params, state.model_state)
      parts, correct, count = _losses(config, table, model, batch)
      return _objective(config, parts), (parts, correct / jnp.maximum(count, 1.0))

    (loss, (parts, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {
        "loss": loss, **parts, "action_accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}

  return train_step


def make_eval_step(config, dataset):
  del dataset
  table = _valid_table(tuple(games_of(config)))

  def eval_step(state: TrainState, batch):
    parts, correct, count = _losses(config, table, state.model(), batch)
    return {"loss": _objective(config, parts) * count, "action_accuracy": correct,
            "count": count}

  return eval_step


# ---------------------------------------------------------------------------------------
# Play.


def sample_return(key, logits, bins: dt.ReturnBins, *, kappa: float = 0.0, best_of: int = 0):
  """Return bins [...] drawn from softmax(logits) · exp(κ · normalised R), or the best of
  `best_of` draws from softmax(logits) when best_of > 0."""
  if best_of > 0:
    draws = jax.random.categorical(key, logits, shape=(best_of,) + logits.shape[:-1])
    return jnp.max(draws, axis=0)  # bins are ordered by return
  normalised = (jnp.arange(bins.num_bins) + 0.5) / bins.num_bins
  return jax.random.categorical(key, logits + kappa * normalised)


def sample_action(key, logits, allowed, *, temperature: float = 1.0,
                  top_percentile: float = 100.0):
  """Actions among `allowed` whose probability is in the top `top_percentile` percent of the
  allowed actions' (at least the most likely one), sampled at `temperature`."""
  logits = jnp.where(allowed, logits / temperature, -jnp.inf)
  num_allowed = jnp.sum(allowed, -1, keepdims=True)
  keep = jnp.maximum(1, jnp.ceil(num_allowed * top_percentile / 100.0))
  rank = jnp.argsort(jnp.argsort(-logits, -1), -1)  # 0 = most likely
  return jax.random.categorical(key, jnp.where(rank < keep, logits, -jnp.inf))


def dt_agent(config, state: TrainState) -> minatar.Agent:
  """The trained model as an `Agent`: a rolling window of the last `context` steps per env."""
  bins = return_bins(config)
  k = config.data.context
  play = config.play

  def init(num_games, envs):
    shape = (num_games, envs, k)
    return {"frame": jnp.zeros(shape + minatar.FRAME_SHAPE), "return": jnp.zeros(shape, jnp.int32),
            "action": jnp.zeros(shape, jnp.int32), "reward": jnp.zeros(shape, jnp.int32),
            "t": jnp.zeros((num_games, envs), jnp.int32)}

  def model_logits(window):
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), window)
    logits = state.model()(flat["frame"], flat["return"], flat["action"], flat["reward"])
    return jax.tree.map(lambda x: x.reshape(window["return"].shape + x.shape[-1:]), logits)

  def act(carry, frames, valid, key):
    return_key, action_key = jax.random.split(key)
    # Write the current frame at slot min(t, k-1), shifting the window once it is full.
    full = carry["t"] >= k
    shift = lambda x: jnp.where(full.reshape(full.shape + (1,) * (x.ndim - 2)),
                                jnp.roll(x, -1, axis=2), x)
    window = {name: shift(carry[name]) for name in ("frame", "return", "action", "reward")}
    slot = jnp.minimum(carry["t"], k - 1)
    at = jax.nn.one_hot(slot, k, dtype=bool)  # [G, E, k]
    window["frame"] = jnp.where(at[..., None, None, None], frames[:, :, None], window["frame"])
    pick = lambda x: jnp.take_along_axis(x, slot[:, :, None, None], axis=2)[:, :, 0]
    if config.objective == "bc":
      target = jnp.zeros_like(carry["t"])
    elif play.fixed_return:
      target = jnp.broadcast_to(bins.encode(play.target_return), carry["t"].shape)
    else:
      target = sample_return(return_key, pick(model_logits(window)["return"]), bins,
                             kappa=play.kappa, best_of=play.best_of)
    window["return"] = jnp.where(at, target[..., None], window["return"])
    action = sample_action(action_key, pick(model_logits(window)["action"]), valid,
                           temperature=play.temperature, top_percentile=play.top_percentile)
    window["action"] = jnp.where(at, action[..., None], window["action"])
    return action, {**window, "t": carry["t"], "slot": slot}

  def observe(carry, actions, rewards, dones):
    del actions
    at = jax.nn.one_hot(carry["slot"], k, dtype=bool)
    reward_class = dt.encode_reward(rewards, dones)
    window = {name: carry[name] for name in ("frame", "return", "action")}
    window["reward"] = jnp.where(at, reward_class[..., None], carry["reward"])
    # A new episode starts with an empty window (t = 0).
    t = jnp.where(dones, 0, carry["t"] + 1)
    empty = dones[..., None]
    window = {name: jnp.where(empty.reshape(empty.shape + (1,) * (x.ndim - 3)), 0, x)
              for name, x in window.items()}
    return {**window, "t": t}

  return minatar.Agent(init=init, act=act, observe=observe)


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
  cut = int(np.floor(0.25 * len(values)))
  middle = values[cut:len(values) - cut] if len(values) > 2 * cut else values
  return float(np.mean(middle))


def play(config, state: TrainState, key, *, envs: int, steps: int) -> dict[str, np.ndarray]:
  """First-episode returns [G, E] of the trained agent in every game (jitted rollout)."""
  games = minatar.make_games(games_of(config))
  rollout = jax.jit(lambda state, key: minatar.rollout(
      games, dt_agent(config, state), key, envs_per_game=envs, num_steps=steps))
  return jax.device_get(rollout(state, key))


def final_metrics(config, dataset, state: TrainState) -> dict[str, float]:
  """Scores in the games after training (see the module docstring)."""
  del dataset
  if config.play.envs <= 0:
    return {}
  result = play(config, state, rng.stream(jax.random.key(config.seed), "play"),
                envs=config.play.envs, steps=config.play.steps)
  first = result["first_return"]
  returns = {g: float(np.nanmean(first[i])) if np.isfinite(first[i]).any() else float("nan")
             for i, g in enumerate(games_of(config))}
  manifest = collect.read_manifest(config.data.source.partition(":")[2])
  scores = normalised_scores(returns, manifest)
  out = {f"play/{g}/return": v for g, v in returns.items()}
  out.update({f"play/{g}/normalised": v for g, v in scores.items()})
  out["play/finished_fraction"] = float(np.isfinite(first).mean())
  out["play/iqm_normalised"] = iqm(v for v in scores.values() if np.isfinite(v))
  return out
