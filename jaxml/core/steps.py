"""Jitting an algorithm's pure functions onto the mesh, once, with explicit shardings."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

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


@dataclasses.dataclass
class Steps:
  """The algorithm's init/train/eval/feature functions, jitted for `mesh`.

  The train step takes the run's base key and folds in `state.step` inside the jitted
  function, so keys are a pure function of (seed, step) with no per-step host work.
  """

  abstract_state: Any
  init: Callable
  train: Callable
  eval: Callable
  features: Callable | None
  # Optional algorithm hooks: a batch sampler with its (padded) global batch size, and
  # host-side metrics (e.g. privacy spent) computed at log steps.
  sampler: Callable | None = None
  batch_size: int = 0
  host_metrics: Callable | None = None

  @classmethod
  def build(cls, algo, config, dataset, mesh) -> Steps:
    replicated = mesh_lib.replicated(mesh)
    data = mesh_lib.data_sharding(mesh)
    init_fn = lambda key: algo.init_state(config, dataset, key)
    shapes = jax.eval_shape(init_fn, jax.random.key(0))
    state_sharding = jax.tree.map(lambda _: replicated, shapes)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, state_sharding)

    train_step = algo.make_train_step(config, dataset)
    if config.get("nonfinite", "stop") == "skip":
      train_step = skip_nonfinite(train_step)

    def keyed_step(state, batch, base_key):
      return train_step(state, batch, rng.step_key(base_key, state.step))

    eval_step = algo.make_eval_step(config, dataset)
    feature_fn = getattr(algo, "make_feature_fn", None)
    sampler, batch_size = (algo.make_batch_sampler(config, dataset)
                           if hasattr(algo, "make_batch_sampler") else (None, config.batch_size))
    host_metrics = (algo.make_host_metrics(config, dataset)
                    if hasattr(algo, "make_host_metrics") else None)
    return cls(
        sampler=sampler, batch_size=batch_size, host_metrics=host_metrics,
        abstract_state=abstract,
        init=jax.jit(init_fn, out_shardings=state_sharding),
        train=jax.jit(keyed_step, in_shardings=(state_sharding, data, replicated),
                      out_shardings=(state_sharding, replicated), donate_argnums=0),
        eval=jax.jit(eval_step, in_shardings=(state_sharding, data), out_shardings=replicated),
        features=None if feature_fn is None else jax.jit(
            feature_fn(config, dataset), in_shardings=(state_sharding, data),
            out_shardings=data),
    )
