"""MGDT's player: a rolling window per environment, return sampling and action sampling.

Each move writes the new frame into the window (sliding it once full), reads the return logits
of that step, chooses its return bin (κ-tilted or best-of-N samples, a fixed target, or bin 0 for
behaviour cloning), then reads the action logits given that bin and samples an action. With
`mode.cache` (the default) the window is run once per move and only the chosen return token
is computed after it (`jaxml/models/decision_transformer_cache.py`); without, the full model
runs twice, as the reference the cached player equals (same actions under the same keys).
`jaxml/algos/mgdt.py` builds the modes and plays; this file holds the jitted agent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.envs import minatar
from jaxml.models import decision_transformer as dt
from jaxml.models import decision_transformer_cache as dt_cache


def sample_return(key, logits, bins: dt.ReturnBins, *, kappa: float = 0.0, best_of: int = 0,
                  low=None, high=None):
  """Return bins [...] drawn from softmax(logits) · exp(κ · normalised R), or the best of
  `best_of` draws from softmax(logits) when best_of > 0. R is normalised as
  (R - low) / (high - low) with the bins' range by default; `low`/`high` broadcast against
  logits[..., :1] (e.g. one range per game)."""
  if best_of > 0:
    draws = jax.random.categorical(key, logits, shape=(best_of,) + logits.shape[:-1])
    return jnp.max(draws, axis=0)  # bins are ordered by return
  low = bins.low if low is None else low
  high = bins.high if high is None else high
  normalised = (bins.decode(jnp.arange(bins.num_bins)) - low) / (high - low)
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


def window_agent(mode, table: np.ndarray, state, knob_values) -> minatar.Agent:
  """A rolling window of the last `context` steps per env, read by the model at every move.
  `mode` is `mgdt.PlayMode`; `table` bool [games, actions] the actions each game has."""
  bins, k = mode.bins, mode.context
  range_arrays = {}
  if mode.return_ranges:  # [G, 1, 1]: against return logits [G, E, bins]
    low, high = np.asarray(mode.return_ranges, np.float32).T
    range_arrays = {"low": low[:, None, None], "high": high[:, None, None]}

  def init(num_games, envs):
    shape = (num_games, envs, k)
    return {"frame": jnp.zeros(shape + mode.frame_shape), "return": jnp.zeros(shape, jnp.int32),
            "action": jnp.zeros(shape, jnp.int32), "reward": jnp.zeros(shape, jnp.int32),
            "t": jnp.zeros((num_games, envs), jnp.int32)}

  flat = lambda x: x.reshape((-1,) + x.shape[2:])  # [G, E, ...] -> [G·E, ...]

  def model_logits(window):
    logits = state.model()(*(flat(window[n]) for n in ("frame", "return", "action", "reward")))
    return jax.tree.map(lambda x: x.reshape(window["return"].shape + x.shape[-1:]), logits)

  def read_return(window, slot):
    """(return logits [G, E, bins] of step `slot`, action logits as a function of its bin)."""
    pick = lambda x: jnp.take_along_axis(x, slot[:, :, None, None], axis=2)[:, :, 0]
    if not mode.cache:
      def action_logits(target):
        with_target = jnp.where(jax.nn.one_hot(slot, k, dtype=bool), target[..., None],
                                window["return"])
        return pick(model_logits({**window, "return": with_target})["action"])
      return pick(model_logits(window)["return"]), action_logits
    model = state.model()
    return_logits, cache = dt_cache.prefill(model, *(flat(window[n]) for n in (
        "frame", "return", "action", "reward")), flat(slot))
    unflat = lambda x: x.reshape(slot.shape + x.shape[1:])
    return unflat(return_logits), lambda target: unflat(dt_cache.extend(model, cache,
                                                                        flat(target)))

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
    return_logits, action_logits = read_return(window, slot)
    if mode.returns == "none":
      target = jnp.zeros_like(carry["t"])
    elif mode.returns == "fixed":
      target = jnp.broadcast_to(bins.encode(knob_values["target_return"]), carry["t"].shape)
    else:
      target = sample_return(return_key, return_logits, bins, kappa=knob_values["kappa"],
                             best_of=mode.best_of if mode.returns == "best_of" else 0,
                             **range_arrays)
    window["return"] = jnp.where(at, target[..., None], window["return"])
    valid = valid & jnp.asarray(table)[:, None, :]  # ALE allows all 18 actions; the model not
    action = sample_action(action_key, action_logits(target), valid,
                           temperature=knob_values["temperature"],
                           top_percentile=knob_values["top_percentile"])
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
