"""Sigmoid cross-entropy for multi-label targets, with per-label class weights.

Multi-label data sets are imbalanced label by label (an odour descriptor may have 31
positives among 4,983 molecules, another 1,902), so the loss can weight each label's
positives and negatives apart. `balanced_weights` is scikit-learn's "balanced" scheme applied
per label: each class of a label gets total weight N/2, so every label contributes equally
and, within a label, its positives as much as its negatives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxml.errors import ConfigError

WEIGHTINGS = ("none", "balanced")


def label_weights(labels: np.ndarray, weighting: str) -> tuple[np.ndarray, np.ndarray]:
  """(positive [L], negative [L]) weights of each label's classes from the training labels
  [N, L] (0/1). "none": ones. "balanced": N / (2 count(class)) for each class of each label;
  a class absent from the training labels gets weight 0 there (there is nothing to weight),
  which leaves its label's loss to the class present."""
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ConfigError(f"label_weights needs labels [N, L], got shape {labels.shape}")
  if weighting not in WEIGHTINGS:
    raise ConfigError(f"label weighting {weighting!r}: choose one of {', '.join(WEIGHTINGS)}")
  ones = np.ones(labels.shape[1], np.float32)
  if weighting == "none":
    return ones, ones
  n = labels.shape[0]
  positives = labels.sum(axis=0).astype(np.float64)
  negatives = n - positives
  scale = lambda count: np.where(count > 0, n / (2.0 * np.maximum(count, 1)), 0.0)
  return scale(positives).astype(np.float32), scale(negatives).astype(np.float32)


def sigmoid_cross_entropy(logits: jax.Array, labels: jax.Array, positive: jax.Array,
                          negative: jax.Array) -> jax.Array:
  """Per-example loss [B]: the mean over labels of the class-weighted sigmoid cross-entropy
  of logits [B, L] against 0/1 labels [B, L]."""
  labels = labels.astype(jnp.float32)
  losses = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
  weights = labels * positive + (1.0 - labels) * negative
  return jnp.mean(weights * losses, axis=-1)
