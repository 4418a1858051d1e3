"""Multi-layer perceptron on flattened inputs.

Config fields (all optional): `hidden`, a tuple of hidden widths (default (256, 256));
`activation`, a spec of jaxml/models/activations.py (default "relu").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from flax import nnx
import jax
import ml_collections

from jaxml.errors import ConfigError
from jaxml.models import activations


class MLP(nnx.Module):
  """Flatten -> [Linear -> activation] * len(hidden) -> head."""

  def __init__(
      self,
      in_features: int,
      hidden: Sequence[int],
      num_classes: int,
      *,
      activation: activations.Activation = activations.RELU,
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

  def features(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # No layer behaves differently in training.
    x = x.reshape(x.shape[0], -1)
    for layer in self.layers:
      x = self.activation(layer(x))
    return x

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    return self.head(self.features(x, train=train))


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
             activation=activations.from_config(model_config), rngs=rngs)
