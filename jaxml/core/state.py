"""The train state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct


@struct.dataclass
class TrainState:
  """`params` are the trainable nnx.Params, `model_state` the rest (BatchNorm statistics).

  `graphdef` is static (part of the tree structure), so a step can `nnx.merge` the model
  without it being passed separately. `extra` is for algorithm state such as EMA weights.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  extra: Any = None
  graphdef: Any = struct.field(pytree_node=False, default=None)

  @classmethod
  def create(cls, model: nnx.Module, tx) -> TrainState:
    """Step 0 state of `model` (split into its functional parts) with `tx`'s state."""
    graphdef, params, model_state = split_model(model)
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               model_state=model_state, graphdef=graphdef)

  def model(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.params, self.model_state)


def split_model(model: nnx.Module):
  """(graphdef, params, model_state): the functional view of an NNX module."""
  return nnx.split(model, nnx.Param, ...)


def image_features(state: TrainState, batch) -> jax.Array:
  """Pre-head features of `batch["image"]` in eval mode: what a linear probe is fitted on."""
  return state.model().features(batch["image"], train=False)
