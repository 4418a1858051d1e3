import numpy as np
import pytest

from jaxml.errors import ConfigError
from jaxml.losses import multilabel


def test_balanced_weights_equalise_each_labels_classes():
  labels = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 1]])
  positive, negative = multilabel.label_weights(labels, "balanced")
  np.testing.assert_allclose(positive, [4 / 2, 4 / 2, 4 / 8])
  np.testing.assert_allclose(negative, [4 / 6, 4 / 6, 0.0])  # label 2 has no negatives
  # Each class present carries total weight N/2.
  np.testing.assert_allclose(positive * labels.sum(0), [2, 2, 2])
  np.testing.assert_allclose((negative * (4 - labels.sum(0)))[:2], [2, 2])


def test_none_weights_are_ones_and_bad_input_is_refused():
  positive, negative = multilabel.label_weights(np.zeros((3, 2)), "none")
  np.testing.assert_array_equal(positive, [1, 1])
  np.testing.assert_array_equal(negative, [1, 1])
  with pytest.raises(ConfigError, match="choose one of"):
    multilabel.label_weights(np.zeros((3, 2)), "inverse")
  with pytest.raises(ConfigError, match=r"labels \[N, L\]"):
    multilabel.label_weights(np.zeros(3), "none")


def test_sigmoid_cross_entropy_equals_the_formula():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 3)).astype(np.float32)
  labels = rng.integers(0, 2, size=(5, 3))
  positive, negative = np.array([2.0, 1.0, 0.5]), np.array([0.5, 1.0, 3.0])
  got = multilabel.sigmoid_cross_entropy(logits, labels, positive, negative)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  each = -(labels * positive * np.log(p) + (1 - labels) * negative * np.log(1 - p))
  np.testing.assert_allclose(np.asarray(got), each.mean(-1), rtol=1e-5)
