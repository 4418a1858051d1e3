"""The one cross-entropy: per example against NumPy, and masked sums that ignore padding."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.losses.classification import cross_entropy, masked_cross_entropy


def _numpy_ce(logits, labels, classes, smoothing):
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  target = np.eye(classes)[labels] * (1 - smoothing) + smoothing / classes
  return -(target * logp).sum(-1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_numpy(smoothing):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(16, 7)).astype(np.float32) * 3
  labels = rng.integers(0, 7, 16)
  got = cross_entropy(jnp.asarray(logits), jnp.asarray(labels), smoothing)
  np.testing.assert_allclose(got, _numpy_ce(logits.astype(np.float64), labels, 7, smoothing),
                             rtol=1e-5, atol=1e-6)


def test_masked_cross_entropy_equals_the_valid_rows_alone():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 5, 4)).astype(np.float32)
  labels = rng.integers(0, 4, (3, 5))
  weight = (rng.random((3, 5)) > 0.4).astype(np.float32)
  got = masked_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weight))
  keep = weight > 0
  ce = _numpy_ce(logits[keep].astype(np.float64), labels[keep], 4, 0.0)
  np.testing.assert_allclose(got.total, ce.sum(), rtol=1e-5)
  np.testing.assert_allclose(got.mean, ce.mean(), rtol=1e-5)
  assert float(got.count) == keep.sum()
  assert float(got.correct) == np.sum(logits[keep].argmax(-1) == labels[keep])
  # Padding rows with garbage change nothing; nothing valid gives 0, not NaN.
  garbage = np.where(keep[..., None], logits, 1e6).astype(np.float32)
  again = masked_cross_entropy(jnp.asarray(garbage), jnp.asarray(labels), jnp.asarray(weight))
  np.testing.assert_allclose(again.total, got.total, rtol=1e-6)
  empty = masked_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.zeros((3, 5)))
  assert float(empty.mean) == 0.0 and float(empty.accuracy) == 0.0
