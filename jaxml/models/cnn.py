"""Small convolutional net for tiny images, from sklearn digits (8x8x1) to CIFAR (32x32x3).

Config fields (all optional): `channels`, conv widths, one stage each (default (32, 64));
`dense`, width of the feature layer (default 128); `pool`, "max" or "avg" (default "max");
`activation`, a spec of jaxml/models/activations.py (default "relu"); `readout`, an early
readout (jaxml/models/readout.py) after trunk layer k: the stages are layers 1..len(channels),
the dense layer is layer len(channels) + 1.

Each stage is conv3x3 -> activation -> 2x2 pool stride 2. The pool never shrinks a dimension that is
already 1 and pads odd sizes (ceil, not floor), so any number of stages works on 8x8 inputs
instead of failing on a zero-sized map after the third stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from flax import nnx
import jax
import ml_collections

from jaxml.errors import ConfigError
from jaxml.models import activations, readout

POOLS = ("max", "avg")


def pool_window(height: int, width: int) -> tuple[int, int]:
  """The 2x2 pool window, narrowed to 1 along any dimension that is already size 1."""
  return (2 if height > 1 else 1, 2 if width > 1 else 1)


def pooled_size(size: int, window: int) -> int:
  return math.ceil(size / window)


class CNN(readout.Trunk, nnx.Module):
  """[conv3x3 -> act -> pool] * len(channels) -> flatten -> dense -> act -> head."""

  def __init__(
      self,
      input_shape: tuple[int, int, int],
      channels: Sequence[int],
      dense: int,
      num_classes: int,
      *,
      pool: str = "max",
      activation: activations.Activation = activations.RELU,
      early_readout=None,
      rngs: nnx.Rngs,
  ):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    height, width, in_channels = input_shape
    widths = [in_channels, *channels]
    self.convs = nnx.List(
        [nnx.Conv(c_in, c_out, (3, 3), rngs=rngs) for c_in, c_out in zip(widths[:-1], widths[1:])]
    )
    # Windows are fixed from the input shape at build time so the forward pass has no
    # shape-dependent Python branches and the flatten size below is known exactly.
    windows = []
    for _ in channels:
      window = pool_window(height, width)
      windows.append(window)
      height, width = pooled_size(height, window[0]), pooled_size(width, window[1])
    self.windows = tuple(windows)
    self.pool = pool
    self.dense = nnx.Linear(height * width * widths[-1], dense, rngs=rngs)
    self.feature_dim = dense
    self.head = nnx.Linear(dense, num_classes, rngs=rngs)
    self.trunk_depth = len(channels) + 1
    self.trunk_widths = (*channels, dense)
    readout.attach(self, early_readout, num_classes, rngs)

  def _pool(self, x: jax.Array, window: tuple[int, int]) -> jax.Array:
    if window == (1, 1):
      return x
    if self.pool == "max":
      return nnx.max_pool(x, window, strides=window, padding="SAME")
    # Padded cells are left out of the mean so border pixels are not shrunk toward zero.
    return nnx.avg_pool(x, window, strides=window, padding="SAME", count_include_pad=False)

  # The trunk, for readout.Trunk's forward passes. No layer behaves differently in training.
  def _stem(self, x: jax.Array, train: bool) -> jax.Array:
    return x

  def _layer(self, index: int, x: jax.Array, train: bool) -> jax.Array:
    if index < len(self.convs):
      return self._pool(self.activation(self.convs[index](x)), self.windows[index])
    return self.activation(self.dense(x.reshape(x.shape[0], -1)))

  def _finish(self, x: jax.Array) -> jax.Array:
    return x

  def _below_prefixes(self, depth: int) -> tuple[tuple, ...]:
    stages = tuple(("convs", i) for i in range(min(depth, len(self.convs))))
    return stages + ((("dense",),) if depth > len(self.convs) else ())


def create(
    model_config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    rngs: nnx.Rngs,
) -> CNN:
  if len(input_shape) != 3:
    raise ConfigError(f"cnn needs images shaped (height, width, channels), got {input_shape}")
  channels = tuple(int(c) for c in model_config.get("channels", (32, 64)))
  dense = int(model_config.get("dense", 128))
  pool = model_config.get("pool", "max")
  if pool not in POOLS:
    raise ConfigError(f"cnn pool must be one of {POOLS}, got {pool!r}")
  if any(c <= 0 for c in channels) or dense <= 0:
    raise ConfigError(f"cnn widths must be positive, got channels={channels} dense={dense}")
  return CNN(input_shape, channels, dense, num_classes, pool=pool,
             activation=activations.from_config(model_config),
             early_readout=model_config.get("readout", None), rngs=rngs)
