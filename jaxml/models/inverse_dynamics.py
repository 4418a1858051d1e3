"""Small conv nets that turn frames into BabyAI actions, for UniPi and its baseline.

  InverseDynamics(frame_t [B, H, W, C], frame_next [B, H, W, C]) -> logits [B, num_actions]
      UniPi's action decoder: which action moved the world from frame_t to frame_next.
  BCPolicy(frame [B, H, W, C], text_pooled [B, D]) -> logits [B, num_actions]
      the text-conditioned behaviour-cloning baseline (no video planning).

Both are a tower of 3x3 convs (the last two with stride 2, so 24x24 frames end at 6x6),
flattened rather than pooled: in a small grid world the action shows up as *where* the agent
moved or turned, which global pooling would blur. Neither holds RNG state or dropout. Their
nonlinearity is `activation` (a jaxml/models/activations.py spec; default swish:1.0, SiLU).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxml.models import activations

# (width multiplier, stride) of each conv in the tower.
TOWER = ((1, 1), (2, 2), (2, 2))


def _tower_output(frame_shape, width: int) -> int:
  """Flattened size of the tower's output for frames of `frame_shape` (SAME padding: ceil)."""
  height, wide = frame_shape[:2]
  for _, stride in TOWER:
    height, wide = math.ceil(height / stride), math.ceil(wide / stride)
  return height * wide * TOWER[-1][0] * width


def _convs(in_channels: int, width: int, rngs: nnx.Rngs) -> nnx.List:
  layers, ch = [], in_channels
  for mult, stride in TOWER:
    layers.append(nnx.Conv(ch, mult * width, (3, 3), strides=(stride, stride), rngs=rngs))
    ch = mult * width
  return nnx.List(layers)


class InverseDynamics(nnx.Module):
  """p(a_t | o_t, o_{t+1}): conv tower over [o_t, o_{t+1}, o_{t+1} - o_t], then an MLP."""

  def __init__(self, frame_shape=(24, 24, 3), num_actions: int = 7, width: int = 32,
               hidden: int = 128, *, activation: activations.Activation = activations.SILU,
               rngs: nnx.Rngs):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    channels = frame_shape[-1]
    # The explicit difference channel makes "what changed" linear in the input, which a
    # first-layer conv would otherwise have to learn from the two frames.
    self.convs = _convs(3 * channels, width, rngs)
    self.dense = nnx.Linear(_tower_output(frame_shape, width), hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_actions, rngs=rngs)

  def __call__(self, frame_t, frame_next, *, train: bool = False) -> jax.Array:
    del train  # No layer behaves differently in training.
    x = jnp.concatenate([frame_t, frame_next, frame_next - frame_t], axis=-1)
    for conv in self.convs:
      x = self.activation(conv(x))
    x = self.activation(self.dense(x.reshape(x.shape[0], -1)))
    return self.head(x)


class BCPolicy(nnx.Module):
  """p(a | o, text): conv tower with FiLM from the pooled text after every conv, then an MLP."""

  def __init__(self, frame_shape=(24, 24, 3), num_actions: int = 7, text_width: int = 64,
               width: int = 32, hidden: int = 128, *,
               activation: activations.Activation = activations.SILU,
               rngs: nnx.Rngs):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    self.convs = _convs(frame_shape[-1], width, rngs)
    self.films = nnx.List([nnx.Linear(text_width, 2 * mult * width, rngs=rngs)
                           for mult, _ in TOWER])
    self.dense = nnx.Linear(_tower_output(frame_shape, width), hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_actions, rngs=rngs)

  def __call__(self, frame, text_pooled, *, train: bool = False) -> jax.Array:
    del train
    x = frame
    for conv, film in zip(self.convs, self.films):
      scale, shift = jnp.split(film(text_pooled)[:, None, None, :], 2, axis=-1)
      # (1 + scale) so a zero text embedding leaves the visual features as they are.
      x = self.activation(conv(x) * (1.0 + scale) + shift)
    x = self.activation(self.dense(x.reshape(x.shape[0], -1)))
    return self.head(x)
