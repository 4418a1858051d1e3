"""The train state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
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

  def apply_gradients(self, tx: optax.GradientTransformation, grads, **changes) -> TrainState:
    """The tail of every train step: one `tx` update of the params, the step counter + 1,
    and any other fields replaced (`model_state=` BatchNorm statistics, `extra=` EMA)."""
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state, **changes)


def split_model(model: nnx.Module):
  """(graphdef, params, model_state): the functional view of an NNX module."""
  return nnx.split(model, nnx.Param, ...)

