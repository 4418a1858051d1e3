"""Multi-Game Decision Transformer (Lee et al. 2022): a causal transformer over frame patches.

Each timestep t of a trajectory becomes P + 3 tokens, in this order:

  [patch_1, ..., patch_P, R_t, a_t, r_t]      P = (H / patch) · (W / patch)

where R_t is the discretised return-to-go (`ReturnBins`), a_t the action in a shared action
space across games, and r_t the reward class (`encode_reward`). Attention is causal over the
flattened token sequence, except that the P patches of one frame also see each other (full
attention within a frame). Each prediction is read at the token just before its target, so
it never sees what it predicts:

  return logits of step t  at the last patch of frame t   (p(R_t | frames<=t, history))
  action logits of step t  at the R_t token               (p(a_t | R_t, ...))
  reward logits of step t  at the a_t token               (p(r_t | a_t, ...))

Action logits of actions a game does not have are masked out (`action_mask`, per example).

`single_return_token=True` conditions a window on its first return only, as the released
MGDT model does: the return tokens of later steps carry no embedding (only their positions)
and no token attends to them, so p(a_t | ·) depends on R_0 and the history but not on
R_1..R_t. Their token slots stay in the sequence, so the action and reward heads read at the same
places in both modes.
This file holds the model and its token layout; training, return sampling and rollouts
live in the algorithm.

Note: this is not a classification model. `jaxml.models.create` does not build it; an
algorithm constructs `DecisionTransformer` directly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxml.errors import ConfigError
from jaxml.models import activations

# Reward classes: the sign of the reward, with the episode's last step a class of its own.
REWARD_ZERO, REWARD_POSITIVE, REWARD_TERMINAL, REWARD_NEGATIVE = range(4)
NUM_REWARD_CLASSES = 4
# The MLP's activation unless `model.activation` names another (jaxml/models/activations.py).
DEFAULT_ACTIVATION = activations.GELU


def encode_reward(reward, done) -> jax.Array:
  """Reward class of each step: terminal if `done`, else zero / positive / negative."""
  reward = jnp.asarray(reward)
  sign = jnp.where(reward > 0, REWARD_POSITIVE, jnp.where(reward < 0, REWARD_NEGATIVE,
                                                          REWARD_ZERO))
  return jnp.where(jnp.asarray(done), REWARD_TERMINAL, sign).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class ReturnBins:
  """Uniform bins over [low, high]; returns outside are clipped into the end bins."""
  low: float
  high: float
  num_bins: int

  def __post_init__(self):
    if not self.high > self.low or self.num_bins < 2:
      raise ConfigError(f"return bins need high > low and >= 2 bins, got {self}")

  @property
  def width(self) -> float:
    return (self.high - self.low) / self.num_bins

  def encode(self, returns) -> jax.Array:
    index = jnp.floor((jnp.asarray(returns, jnp.float32) - self.low) / self.width)
    return jnp.clip(index, 0, self.num_bins - 1).astype(jnp.int32)

  def decode(self, bins) -> jax.Array:
    """The centre of each bin."""
    return self.low + (jnp.asarray(bins, jnp.float32) + 0.5) * self.width


def num_patches(image_shape, patch_size: int) -> int:
  height, width = image_shape[:2]
  if height % patch_size or width % patch_size:
    raise ConfigError(f"frames of {height}x{width} do not split into {patch_size}x{patch_size} "
                      "patches")
  return (height // patch_size) * (width // patch_size)


def token_indices(patches: int) -> dict[str, int]:
  """Offsets within one step's P + 3 tokens of the tokens each head reads."""
  return {"last_patch": patches - 1, "return": patches, "action": patches + 1,
          "reward": patches + 2}


def attention_mask(steps: int, patches: int, single_return_token: bool = False) -> np.ndarray:
  """[T, T] bool, T = steps · (P + 3): query i may attend to key j. Causal, plus full
  attention among the patches of the same frame. With `single_return_token`, the return
  tokens after the first step are hidden from every query but themselves."""
  per_step = patches + 3
  total = steps * per_step
  index = np.arange(total)
  step, offset = index // per_step, index % per_step
  is_patch = offset < patches
  causal = index[None, :] <= index[:, None]
  same_frame = (step[:, None] == step[None, :]) & is_patch[:, None] & is_patch[None, :]
  mask = causal | same_frame
  if single_return_token:
    hidden = (offset == patches) & (step > 0)
    mask &= ~hidden[None, :] | np.eye(total, dtype=bool)
  return mask


def patchify(frames: jax.Array, patch_size: int) -> jax.Array:
  """[..., H, W, C] -> [..., P, patch·patch·C], patches in row-major order."""
  *lead, height, width, channels = frames.shape
  rows, cols = height // patch_size, width // patch_size
  x = frames.reshape(*lead, rows, patch_size, cols, patch_size, channels)
  x = jnp.moveaxis(x, -4, -3)  # [..., rows, cols, patch, patch, C]
  return x.reshape(*lead, rows * cols, patch_size * patch_size * channels)


class Block(nnx.Module):
  """Pre-norm transformer block: masked self-attention, then an MLP (GELU by default)."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: int, *,
               activation: activations.Activation = DEFAULT_ACTIVATION, rngs: nnx.Rngs):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    self.norm1 = nnx.LayerNorm(width, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(num_heads, width, decode=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(width, rngs=rngs)
    self.mlp_in = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_ratio * width, width, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array, sow_weights: bool = False) -> jax.Array:
    x = x + self.attention(self.norm1(x), mask=mask, sow_weights=sow_weights)
    return self.residual_mlp(x)

  def residual_mlp(self, x: jax.Array) -> jax.Array:
    """The block's second half, x + MLP(norm2(x)) (also what cached play runs)."""
    return x + self.mlp_out(self.activation(self.mlp_in(self.norm2(x))))


class DecisionTransformer(nnx.Module):
  """Frames [B, L, H, W, C] (floats), return bins, actions and reward classes [B, L] (ints)
  -> {"return", "action", "reward"} logits, each [B, L, classes]."""

  def __init__(self, *, image_shape, patch_size: int, num_actions: int, num_return_bins: int,
               context: int, width: int, depth: int, num_heads: int, mlp_ratio: int = 4,
               single_return_token: bool = False,
               activation: activations.Activation = DEFAULT_ACTIVATION,
               rngs: nnx.Rngs):
    self.patch_size = patch_size
    self.single_return_token = single_return_token
    self.patches = num_patches(image_shape, patch_size)
    self.context = context
    patch_dim = patch_size * patch_size * image_shape[-1]
    init = nnx.initializers.normal(0.02)
    self.patch_embed = nnx.Linear(patch_dim, width, rngs=rngs)
    # Learned positions as embedding tables looked up per example (rows gathered by index), so
    # DP-SGD's ghost clipping handles them with its embedding rule.
    self.patch_position = nnx.Embed(self.patches, width, embedding_init=init, rngs=rngs)
    self.step_position = nnx.Embed(context, width, embedding_init=init, rngs=rngs)
    self.return_embed = nnx.Embed(num_return_bins, width, rngs=rngs)
    self.action_embed = nnx.Embed(num_actions, width, rngs=rngs)
    self.reward_embed = nnx.Embed(NUM_REWARD_CLASSES, width, rngs=rngs)
    self.blocks = nnx.List([Block(width, num_heads, mlp_ratio, activation=activation, rngs=rngs)
                            for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.return_head = nnx.Linear(width, num_return_bins, rngs=rngs)
    self.action_head = nnx.Linear(width, num_actions, rngs=rngs)
    self.reward_head = nnx.Linear(width, NUM_REWARD_CLASSES, rngs=rngs)

  def tokens(self, frames, returns, actions, rewards) -> jax.Array:
    """[B, L · (P + 3), width]: each step's patch, return, action and reward embeddings."""
    batch, steps = returns.shape
    if steps > self.context:
      raise ValueError(f"{steps} steps exceed the model's context of {self.context}")
    patch_index = jnp.broadcast_to(jnp.arange(self.patches), (batch, steps, self.patches))
    patches = (self.patch_embed(patchify(frames, self.patch_size))
               + self.patch_position(patch_index))
    return_tokens = self.return_embed(returns)
    if self.single_return_token:  # later return slots carry their position only
      return_tokens = return_tokens * (jnp.arange(steps) == 0)[None, :, None]
    singles = jnp.stack([return_tokens, self.action_embed(actions),
                         self.reward_embed(rewards)], axis=2)  # [B, L, 3, width]
    step_tokens = jnp.concatenate([patches, singles], axis=2)
    step_index = jnp.broadcast_to(jnp.arange(steps), (batch, steps))
    step_tokens = step_tokens + self.step_position(step_index)[:, :, None, :]
    return step_tokens.reshape(batch, steps * (self.patches + 3), -1)

  def _encode(self, frames, returns, actions, rewards, sow_weights=False) -> jax.Array:
    batch, steps = returns.shape
    x = self.tokens(frames, returns, actions, rewards)
    mask = jnp.asarray(attention_mask(steps, self.patches, self.single_return_token))[None, None]
    for block in self.blocks:
      x = block(x, mask, sow_weights)
    return self.norm(x).reshape(batch, steps, self.patches + 3, -1)

  def attention_weights(self, frames, returns, actions, rewards) -> jax.Array:
    """[depth, B, heads, T, T] attention probabilities of every layer (T tokens, in the
    order of `tokens`), e.g. to see which patches the action token reads."""
    self._encode(frames, returns, actions, rewards, sow_weights=True)
    sown = nnx.pop(self, nnx.Intermediate)
    return jnp.stack([sown["blocks"][i]["attention"]["attention_weights"].get_value()[0]
                      for i in range(len(self.blocks))])

  def __call__(self, frames, returns, actions, rewards, *, action_mask=None):
    x = self._encode(frames, returns, actions, rewards)
    at = token_indices(self.patches)
    action_logits = self.action_head(x[:, :, at["return"]])
    if action_mask is not None:  # [B, A]: the actions each example's game has
      action_logits = jnp.where(action_mask[:, None, :], action_logits, -1e9)
    return {"return": self.return_head(x[:, :, at["last_patch"]]),
            "action": action_logits,
            "reward": self.reward_head(x[:, :, at["action"]])}
