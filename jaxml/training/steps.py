"""An algorithm's pure functions jitted onto the mesh, once, with explicit shardings."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxml.algos.base import Algorithm
from jaxml.core import mesh as mesh_lib
from jaxml.core import rng


def skip_nonfinite(train_step: Callable) -> Callable:
  """Wraps a step so an update with a non-finite metric or parameter is not applied.

  The step counter still advances (the data order and keys follow it) and the metric
  `skipped` is 1 for such steps.
  """

  def guarded(state, batch, key):
    new_state, metrics = train_step(state, batch, key)
    leaves = [x for x in jax.tree.leaves((metrics, new_state.params))
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
    kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
    return kept.replace(step=new_state.step), {**metrics, "skipped": 1.0 - ok}

  return guarded


@dataclasses.dataclass(frozen=True)
class Steps:
  """`algorithm`'s functions jitted for `mesh`: the state replicated, batches sharded on the
  data axis, the state donated to the train step.

  The train step takes the run's base key and folds in `state.step` inside the jitted
  function, so keys are a pure function of (seed, step) with no per-step host work.
  """

  algorithm: Algorithm
  abstract_state: Any
  init: Callable
  train: Callable
  eval: Callable
  features: Callable | None
  predict: Callable | None

  @classmethod
  def build(cls, algorithm: Algorithm, mesh) -> Steps:
    replicated = mesh_lib.replicated(mesh)
    data = mesh_lib.data_sharding(mesh)
    shapes = jax.eval_shape(algorithm.init, jax.random.key(0))
    state_sharding = jax.tree.map(lambda _: replicated, shapes)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, state_sharding)

    train_step = algorithm.train_step
    # Per-example outputs stay sharded like the batch they came from.
    per_example = lambda fn: None if fn is None else jax.jit(
        fn, in_shardings=(state_sharding, data), out_shardings=data)

    def keyed_step(state, batch, base_key):
      return train_step(state, batch, rng.step_key(base_key, state.step))

    return cls(
        algorithm=algorithm, abstract_state=abstract,
        init=jax.jit(algorithm.init, out_shardings=state_sharding),
        train=jax.jit(keyed_step, in_shardings=(state_sharding, data, replicated),
                      out_shardings=(state_sharding, replicated), donate_argnums=0),
        eval=jax.jit(algorithm.eval_step, in_shardings=(state_sharding, data),
                     out_shardings=replicated),
        features=per_example(algorithm.features),
        predict=per_example(algorithm.predict),
    )
