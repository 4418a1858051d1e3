"""The train state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import jax
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

  def model(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.params, self.model_state)


def split_model(model: nnx.Module):
  """(graphdef, params, model_state): the functional view of an NNX module."""
  return nnx.split(model, nnx.Param, ...)
