"""The Gaussian mechanism on a summed clipped gradient.

Guarantee: if `clipped.grads` has L2 sensitivity `clipped.sensitivity` to adding or removing
one example (what `clipped_grad` reports), then `noisy_sum` is a Gaussian-mechanism release
with noise multiplier `noise_multiplier` (std = noise_multiplier * sensitivity per
coordinate). Its privacy cost is accounted on the host (`jaxml.privacy.accounting`), never here.

The key must be replicated across devices: inside a jitted step over a mesh the noise is one
logical (replicated) array, so every device adds exactly the same noise and the data-parallel
replicas of the parameters stay identical.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gaussian_noise_like(key: jax.Array, tree, std: float):
  """Independent N(0, std²) noise shaped like every leaf of `tree` (one sub-key per leaf)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [
      std * jax.random.normal(k, x.shape, jnp.result_type(x, jnp.float32)).astype(x.dtype)
      for k, x in zip(keys, leaves)])


def noisy_sum(key: jax.Array, clipped, noise_multiplier: float):
  """clipped.grads + N(0, (noise_multiplier * clipped.sensitivity)²) per coordinate."""
  noise = gaussian_noise_like(key, clipped.grads, noise_multiplier * clipped.sensitivity)
  return jax.tree.map(jnp.add, clipped.grads, noise)


def noisy_mean(key: jax.Array, clipped, noise_multiplier: float, expected_batch_size: float):
  """The DP-SGD gradient: the noisy sum divided by the *expected* batch size.

  Dividing by the expected rather than the realised size keeps the release a function of the
  noisy sum alone (the realised size of a Poisson batch is itself private).
  """
  return jax.tree.map(lambda g: g / expected_batch_size,
                      noisy_sum(key, clipped, noise_multiplier))
