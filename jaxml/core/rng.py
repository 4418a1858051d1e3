"""Random streams: one base key, folded with the step, split into named streams.

Keys are plain replicated arrays, so every device draws the same numbers where that matters
(e.g. DP noise), and a resumed run draws exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import zlib

import jax


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """(init key, train key) of the run with `seed`: the train key is folded with each step."""
  init_key, train_key = jax.random.split(jax.random.key(seed))
  return init_key, train_key


def step_key(base_key: jax.Array, step) -> jax.Array:
  return jax.random.fold_in(base_key, step)


def stream(key: jax.Array, name: str) -> jax.Array:
  """A named sub-stream; the same name always gives the same key (stable across runs)."""
  return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
