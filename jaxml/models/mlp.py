"""Multi-layer perceptron on flattened inputs.

Config fields (all optional): `hidden`, a tuple of hidden widths (default (256, 256));
`activation`, a spec of jaxml/models/activations.py (default "relu"); `readout`, an early
readout (jaxml/models/readout.py) after hidden layer k (1..len(hidden)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from flax import nnx
import jax
import ml_collections

from jaxml.errors import ConfigError
from jaxml.models import activations, readout


class MLP(readout.Trunk, nnx.Module):
  """Flatten -> [Linear -> activation] * len(hidden) -> head."""

  def __init__(
      self,
      in_features: int,
      hidden: Sequence[int],
      num_classes: int,
      *,
      activation: activations.Activation = activations.RELU,
      early_readout=None,
      rngs: nnx.Rngs,
  ):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    widths = [in_features, *hidden]
    self.layers = nnx.List(
        [nnx.Linear(w_in, w_out, rngs=rngs) for w_in, w_out in zip(widths[:-1], widths[1:])]
    )
    # With no hidden layers the features are the flattened input: a linear (logistic) model.
    self.feature_dim = widths[-1]
    self.head = nnx.Linear(self.feature_dim, num_classes, rngs=rngs)
    self.trunk_depth = len(hidden)
    self.trunk_widths = tuple(hidden)
    readout.attach(self, early_readout, num_classes, rngs)

  # The trunk, for readout.Trunk's forward passes. No layer behaves differently in training.
  def _stem(self, x: jax.Array, train: bool) -> jax.Array:
    return x.reshape(x.shape[0], -1)

  def _layer(self, index: int, x: jax.Array, train: bool) -> jax.Array:
    return self.activation(self.layers[index](x))

  def _finish(self, x: jax.Array) -> jax.Array:
    return x

  def _below_prefixes(self, depth: int) -> tuple[tuple, ...]:
    return tuple(("layers", i) for i in range(depth))


def create(
    model_config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    rngs: nnx.Rngs,
) -> MLP:
  hidden = tuple(int(w) for w in model_config.get("hidden", (256, 256)))
  if any(w <= 0 for w in hidden):
    raise ConfigError(f"mlp hidden widths must be positive, got {hidden}")
  return MLP(math.prod(input_shape), hidden, num_classes,
             activation=activations.from_config(model_config),
             early_readout=model_config.get("readout", None), rngs=rngs)
