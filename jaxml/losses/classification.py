"""Softmax cross-entropy against integer labels, per example and masked: the one form every
algorithm uses (classes, actions, return bins, reward classes)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-position cross-entropy [...] of logits [..., K] against integer labels [...],
  optionally against labels smoothed towards uniform by `label_smoothing`.

  Always through one-hot targets (the form smoothing needs), so a run with and without
  smoothing takes the same arithmetic, and the classifier's recorded results reproduce bit
  for bit (optax's integer-label form rounds differently)."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


class MaskedCrossEntropy(NamedTuple):
  """Sums over the positions whose weight is non-zero (padding has weight 0)."""

  total: jax.Array  # sum of weight · cross-entropy
  correct: jax.Array  # sum of weight · [argmax == label]
  count: jax.Array  # sum of weight

  @property
  def mean(self) -> jax.Array:
    """The weighted mean cross-entropy (0 when nothing is valid, not NaN)."""
    return self.total / jnp.maximum(self.count, 1.0)

  @property
  def accuracy(self) -> jax.Array:
    return self.correct / jnp.maximum(self.count, 1.0)


def masked_cross_entropy(logits, labels, weight=None, label_smoothing: float = 0.0):
  """`MaskedCrossEntropy` of logits [..., K] against labels [...] with weights [...] (all
  ones when None): means over a batch's valid rows, or sums for a split's evaluation."""
  if weight is None:
    weight = jnp.ones(labels.shape, jnp.float32)
  weight = weight.astype(jnp.float32)
  per_position = cross_entropy(logits, labels, label_smoothing)
  return MaskedCrossEntropy(jnp.sum(per_position * weight),
                            jnp.sum((jnp.argmax(logits, -1) == labels) * weight),
                            jnp.sum(weight))
