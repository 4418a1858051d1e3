"""PPO for one gymnax MinAtar game, the whole training run compiled as one program.

PureJaxRL-style: environments are vmapped gymnax envs stepped inside `lax.scan`, and the
update loop is itself a `lax.scan`, so `train` is a single `jax.jit` call with no host round
trips between updates. Each update collects `rollout_length` steps from `num_envs`
environments, computes GAE advantages, and takes `epochs` passes of `minibatches` Adam steps
on the clipped surrogate objective plus a value loss and an entropy bonus.

Episode ends use gymnax's automatic reset: the observation returned on an episode's last step
is already the next episode's first frame, and `info["final_observation"]` holds the frame the
episode actually ended on. Bootstrapping from the value of that final frame (zeroed only when
the game really terminated) keeps time-limit truncations from being learned as deaths.

  policy, metrics = train("Breakout-MinAtar", PpoConfig(), seed=0)
  returns = evaluate("Breakout-MinAtar", policy, jax.random.key(1))
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from flax import nnx
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxml.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class PpoConfig:
  """Defaults measured on 2 CPU cores: Breakout-MinAtar ~5 after 100k steps (~10 s), ~25-28
  after the default 1M (~1 min; random ~0.5). learning_rate is 4x PureJaxRL's 5e-4: at 5e-4
  Breakout stalled near 6, at 1e-3 near 12-13, at 2e-3 and 3e-3 it reached 25-28."""
  num_envs: int = 64
  rollout_length: int = 128
  total_steps: int = 1_000_000
  epochs: int = 4
  minibatches: int = 8
  learning_rate: float = 2e-3
  anneal_lr: bool = True
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  entropy_coef: float = 0.01
  value_coef: float = 0.5
  max_grad_norm: float = 0.5
  conv_channels: int = 16
  hidden: int = 128

  def __post_init__(self):
    if self.batch_size % self.minibatches:
      raise ConfigError(f"num_envs * rollout_length = {self.batch_size} is not divisible by "
                        f"minibatches = {self.minibatches}")
    if self.num_updates < 1:
      raise ConfigError(f"total_steps = {self.total_steps} is less than one rollout "
                        f"({self.batch_size} steps)")

  @property
  def batch_size(self) -> int:
    return self.num_envs * self.rollout_length

  @property
  def num_updates(self) -> int:
    return self.total_steps // self.batch_size


def patches3x3(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H-2, W-2, 9C]: each pixel's valid 3x3 neighbourhood, (row, col, C).

  A dense layer on these is a 3x3 valid conv. It is written this way because XLA:CPU runs the
  kernel gradient of `lax.conv` inside a `lax.scan` (the minibatch loop) ~20x slower than
  outside one, which made a conv net's PPO update 5x slower than the whole rollout; slices
  and a matmul have no such cliff.
  """
  height, width = x.shape[1] - 2, x.shape[2] - 2
  return jnp.concatenate(
      [x[:, i:i + height, j:j + width, :] for i in range(3) for j in range(3)], axis=-1)


class ActorCritic(nnx.Module):
  """conv3x3 (valid) -> relu -> dense -> relu, then a policy head and a value head.

  The torso is shared: on CPU the network's cost dominates training, and a shared torso
  halves it. Orthogonal init with a 0.01-scaled policy head starts the policy near uniform,
  so early rollouts explore every action.
  """

  def __init__(self, obs_shape: tuple[int, int, int], num_actions: int, *, channels: int,
               hidden: int, rngs: nnx.Rngs):
    height, width, in_channels = obs_shape
    relu_init = nnx.initializers.orthogonal(np.sqrt(2))
    self.conv = nnx.Linear(9 * in_channels, channels, kernel_init=relu_init, rngs=rngs)
    self.dense = nnx.Linear((height - 2) * (width - 2) * channels, hidden,
                            kernel_init=relu_init, rngs=rngs)
    self.policy_head = nnx.Linear(hidden, num_actions,
                                  kernel_init=nnx.initializers.orthogonal(0.01), rngs=rngs)
    self.value_head = nnx.Linear(hidden, 1, kernel_init=nnx.initializers.orthogonal(1.0),
                                 rngs=rngs)

  def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = jax.nn.relu(self.conv(patches3x3(obs.astype(jnp.float32))))
    x = jax.nn.relu(self.dense(x.reshape(x.shape[0], -1)))
    return self.policy_head(x), self.value_head(x)[:, 0]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["params"],
                   meta_fields=["graphdef"])
@dataclasses.dataclass(frozen=True)
class Policy:
  """A trained actor-critic as a pytree (the graphdef is static), usable inside jit."""
  graphdef: nnx.GraphDef
  params: nnx.State

  def network(self) -> ActorCritic:
    return nnx.merge(self.graphdef, self.params)

  def logits(self, obs: jax.Array) -> jax.Array:
    """obs [B, 10, 10, C] -> logits over the game's own actions [B, num_actions]."""
    return self.network()(jnp.asarray(obs))[0]

  def value(self, obs: jax.Array) -> jax.Array:
    return self.network()(jnp.asarray(obs))[1]

  def act(self, key: jax.Array, obs: jax.Array, greedy: bool = False) -> jax.Array:
    """Game action indices [B] (what the gymnax env's `step` takes, 0..num_actions-1)."""
    logits = self.logits(obs)
    if greedy:
      return jnp.argmax(logits, axis=-1)
    return jax.random.categorical(key, logits, axis=-1)


@functools.cache
def make_env(env_name: str) -> tuple[Any, Any]:
  """gymnax env and params, cached so jitted functions keyed on the env are not retraced."""
  return gymnax.make(env_name)


def init_policy(env_name: str, config: PpoConfig, key: jax.Array) -> Policy:
  env, env_params = make_env(env_name)
  obs_shape = tuple(env.observation_space(env_params).shape)
  network = ActorCritic(obs_shape, env.num_actions, channels=config.conv_channels,
                        hidden=config.hidden, rngs=nnx.Rngs(params=key))
  return Policy(*nnx.split(network))


def uniform_policy(env_name: str, config: PpoConfig = PpoConfig()) -> Policy:
  """All-zero weights give all-zero logits: the uniformly random baseline, as a `Policy`, so
  it is evaluated by exactly the same code as a trained one."""
  policy = init_policy(env_name, config, jax.random.key(0))
  return dataclasses.replace(policy, params=jax.tree.map(jnp.zeros_like, policy.params))


def gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array, terminated: jax.Array,
        episode_end: jax.Array, gamma: float, gae_lambda: float) -> tuple[jax.Array, jax.Array]:
  """Generalised advantage estimates and value targets, all arrays time-major [T, N].

  `next_values[t]` is the value of the frame step t actually reached (the episode's final
  frame when it ended there, not the auto-reset frame); `terminated` zeroes that bootstrap,
  while `episode_end` (terminated or truncated) stops advantages flowing across the reset.
  """
  terminated = terminated.astype(values.dtype)
  episode_end = episode_end.astype(values.dtype)
  deltas = rewards + gamma * (1.0 - terminated) * next_values - values

  def backward(next_advantage, step):
    delta, end = step
    advantage = delta + gamma * gae_lambda * (1.0 - end) * next_advantage
    return advantage, advantage

  _, advantages = jax.lax.scan(backward, jnp.zeros_like(values[0]), (deltas, episode_end),
                               reverse=True)
  return advantages, advantages + values


def ppo_loss(logits: jax.Array, values: jax.Array, actions: jax.Array,
             old_log_probs: jax.Array, advantages: jax.Array, returns: jax.Array, *,
             clip_eps: float, value_coef: float,
             entropy_coef: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clipped surrogate + value_coef * value MSE/2 - entropy_coef * entropy, over a minibatch.

  Advantages are normalised per minibatch. The value loss is not clipped: value clipping
  is at best neutral in large PPO ablations (Andrychowicz et al. 2021) and is one more knob.
  """
  all_log_probs = jax.nn.log_softmax(logits, axis=-1)
  log_probs = jnp.take_along_axis(all_log_probs, actions[:, None], axis=-1)[:, 0]
  log_ratio = log_probs - old_log_probs
  ratio = jnp.exp(log_ratio)
  advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
  surrogate = jnp.minimum(ratio * advantages,
                          jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages)
  policy_loss = -surrogate.mean()
  value_loss = 0.5 * jnp.mean((values - returns) ** 2)
  entropy = -jnp.mean(jnp.sum(jnp.exp(all_log_probs) * all_log_probs, axis=-1))
  loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
  return loss, {
      "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
      "approx_kl": jnp.mean(ratio - 1.0 - log_ratio),  # k3 estimator: unbiased, >= 0
      "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > clip_eps),
  }


def _optimizer(config: PpoConfig) -> optax.GradientTransformation:
  learning_rate = config.learning_rate
  if config.anneal_lr:
    total = config.num_updates * config.epochs * config.minibatches
    learning_rate = optax.linear_schedule(config.learning_rate, 0.0, total)
  return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                     optax.adam(learning_rate, eps=1e-5))


def _rollout(env, env_params, policy: Policy, env_state, obs, episode_return, key, length):
  """`length` steps of every env; returns the carry and time-major transitions [T, N, ...]."""
  num_envs = obs.shape[0]
  step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

  def step(carry, step_key):
    env_state, obs, episode_return = carry
    action_key, env_key = jax.random.split(step_key)
    logits, value = policy.network()(obs)
    action = jax.random.categorical(action_key, logits, axis=-1)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], -1)[:, 0]
    next_obs, env_state, reward, terminated, truncated, info = step_envs(
        jax.random.split(env_key, num_envs), env_state, action, env_params)
    ended = jnp.logical_or(terminated, truncated)
    episode_return = episode_return + reward
    transition = {
        "obs": obs, "action": action, "log_prob": log_prob, "value": value,
        "reward": reward, "terminated": terminated, "ended": ended,
        "final_obs": info["final_observation"],
        "completed_return": jnp.where(ended, episode_return, 0.0),
    }
    return (env_state, next_obs, jnp.where(ended, 0.0, episode_return)), transition

  return jax.lax.scan(step, (env_state, obs, episode_return), jax.random.split(key, length))


def _train_loop(env, env_params, graphdef, config: PpoConfig, params, key):
  """The whole run as one pure function of (initial params, key); jitted by `train`."""
  optimizer = _optimizer(config)
  reset_key, key = jax.random.split(key)
  obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
      jax.random.split(reset_key, config.num_envs), env_params)
  minibatch_size = config.batch_size // config.minibatches

  def minibatch_step(carry, minibatch):
    params, opt_state = carry

    def loss_fn(params):
      logits, values = nnx.merge(graphdef, params)(minibatch["obs"])
      return ppo_loss(logits, values, minibatch["action"], minibatch["log_prob"],
                      minibatch["advantage"], minibatch["return"], clip_eps=config.clip_eps,
                      value_coef=config.value_coef, entropy_coef=config.entropy_coef)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), {"loss": loss, **aux}

  def epoch(carry, shuffle_key, batch):
    order = jax.random.permutation(shuffle_key, config.batch_size)
    minibatches = jax.tree.map(
        lambda x: x[order].reshape(config.minibatches, minibatch_size, *x.shape[1:]), batch)
    return jax.lax.scan(minibatch_step, carry, minibatches)

  def update(carry, _):
    params, opt_state, env_state, obs, episode_return, key = carry
    key, rollout_key, shuffle_key = jax.random.split(key, 3)
    policy = Policy(graphdef, params)
    (env_state, obs, episode_return), traj = _rollout(
        env, env_params, policy, env_state, obs, episode_return, rollout_key,
        config.rollout_length)
    # One batched pass over every final frame: it gives both the next step's value and the
    # bootstrap at truncations, at the cost of one extra forward pass per step.
    flat = lambda x: x.reshape(config.batch_size, *x.shape[2:])
    next_values = policy.value(flat(traj["final_obs"])).reshape(traj["value"].shape)
    advantages, returns = gae(traj["reward"], traj["value"], next_values, traj["terminated"],
                              traj["ended"], config.gamma, config.gae_lambda)
    batch = {"obs": flat(traj["obs"]), "action": flat(traj["action"]),
             "log_prob": flat(traj["log_prob"]), "advantage": flat(advantages),
             "return": flat(returns)}
    (params, opt_state), losses = jax.lax.scan(
        functools.partial(epoch, batch=batch), (params, opt_state),
        jax.random.split(shuffle_key, config.epochs))
    episodes = traj["ended"].sum()
    metrics = {
        # NaN when no episode ended in this rollout (e.g. Freeway's 2500-step episodes).
        "episode_returns": jnp.where(episodes > 0,
                                     traj["completed_return"].sum() / jnp.maximum(episodes, 1),
                                     jnp.nan),
        "episodes": episodes,
        **jax.tree.map(jnp.mean, losses),
    }
    return (params, opt_state, env_state, obs, episode_return, key), metrics

  carry = (params, optimizer.init(params), env_state, obs, jnp.zeros(config.num_envs), key)
  (params, *_), metrics = jax.lax.scan(update, carry, None, length=config.num_updates)
  return params, metrics


def train(env_name: str, config: PpoConfig = PpoConfig(),
          seed: int = 0) -> tuple[Policy, dict[str, np.ndarray]]:
  """Trains on `env_name` for `config.total_steps` env steps (rounded down to whole updates).

  Returns the policy and per-update metrics as NumPy arrays: 'episode_returns' (mean return
  of the episodes completed in that update's rollout, NaN if none), 'steps' (env steps so
  far), 'episodes', and the mean losses ('loss', 'policy_loss', 'value_loss', 'entropy',
  'approx_kl', 'clip_fraction').
  """
  env, env_params = make_env(env_name)
  init_key, run_key = jax.random.split(jax.random.key(seed))
  policy = init_policy(env_name, config, init_key)
  run = jax.jit(functools.partial(_train_loop, env, env_params, policy.graphdef, config))
  params, metrics = run(policy.params, run_key)
  metrics = {name: np.asarray(value) for name, value in jax.device_get(metrics).items()}
  metrics["steps"] = np.arange(1, config.num_updates + 1) * config.batch_size
  return dataclasses.replace(policy, params=params), metrics


@functools.partial(jax.jit, static_argnames=("env", "num_envs", "max_steps", "greedy"))
def _evaluate(env, env_params, policy: Policy, key, num_envs: int, max_steps: int,
              greedy: bool):
  reset_key, key = jax.random.split(key)
  obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
      jax.random.split(reset_key, num_envs), env_params)
  step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

  def step(carry, step_key):
    env_state, obs, running, first_return, finished = carry
    action_key, env_key = jax.random.split(step_key)
    action = policy.act(action_key, obs, greedy=greedy)
    obs, env_state, reward, terminated, truncated, _ = step_envs(
        jax.random.split(env_key, num_envs), env_state, action, env_params)
    running = running + reward
    ended = jnp.logical_and(jnp.logical_or(terminated, truncated), ~finished)
    first_return = jnp.where(ended, running, first_return)
    return (env_state, obs, running, first_return, finished | ended), None

  zeros = jnp.zeros(num_envs)
  carry = (env_state, obs, zeros, zeros, jnp.zeros(num_envs, bool))
  (_, _, _, first_return, finished), _ = jax.lax.scan(
      step, carry, jax.random.split(key, max_steps))
  return first_return, finished


def evaluate(env_name: str, policy: Policy, key: jax.Array, num_envs: int = 64,
             max_steps: int | None = None, greedy: bool = False) -> np.ndarray:
  """Returns of the first episode of each of `num_envs` envs, for those that ended within
  `max_steps` (default: the game's time limit, so every env finishes one).

  Only first episodes count, so the estimate is not biased toward short episodes, as it is
  when every episode completed in a fixed number of steps counts.
  """
  env, env_params = make_env(env_name)
  max_steps = int(max_steps or env_params.max_steps_in_episode)
  returns, finished = _evaluate(env, env_params, policy, key, num_envs, max_steps, greedy)
  return np.asarray(returns)[np.asarray(finished)]
