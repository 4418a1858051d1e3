"""Precision-recall and ROC points against scikit-learn's `precision_recall_curve` and
`roc_curve` (every point and threshold, with and without dropped intermediate points) on scores
with many ties, against its documentation's worked example, and against the areas in
`ranking`; bad inputs are named."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from sklearn import metrics

from jaxml.errors import ConfigError
from jaxml.evaluators import curves, ranking


def test_the_sklearn_documentation_example():
  scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
  precision, recall, thresholds = curves.precision_recall_curve(scores, labels)
  np.testing.assert_allclose(precision, [0.5, 2 / 3, 0.5, 1, 1])
  np.testing.assert_allclose(recall, [1, 1, 0.5, 0.5, 0])
  np.testing.assert_allclose(thresholds, [0.1, 0.35, 0.4, 0.8])
  fpr, tpr, thresholds = curves.roc_curve(scores, labels)
  np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
  np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
  np.testing.assert_allclose(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])


@settings(max_examples=80, deadline=None)
@given(data=st.integers(2, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 6), min_size=n, max_size=n),  # few values: many ties
    st.lists(st.booleans(), min_size=n, max_size=n))),
    drop=st.booleans())
def test_curves_equal_sklearn(data, drop):
  scores, labels = np.array(data[0]) / 6.0, np.array(data[1], int)
  if labels.any():
    mine = curves.precision_recall_curve(scores, labels, drop_intermediate=drop)
    theirs = metrics.precision_recall_curve(labels, scores, drop_intermediate=drop)
    for a, b in zip(mine, theirs):
      np.testing.assert_allclose(a, b, rtol=1e-14)
    precision, recall, _ = mine
    if not drop:  # the step area of the full curve is the average precision
      assert -np.sum(np.diff(recall) * precision[:-1]) == pytest.approx(
          ranking.average_precision(scores, labels), abs=1e-12)
  if labels.any() and not labels.all():
    mine = curves.roc_curve(scores, labels, drop_intermediate=drop)
    theirs = metrics.roc_curve(labels, scores, drop_intermediate=drop)
    for a, b in zip(mine, theirs):
      np.testing.assert_allclose(a, b, rtol=1e-14)
    fpr, tpr, _ = mine
    assert np.trapezoid(tpr, fpr) == pytest.approx(ranking.auroc(scores, labels), abs=1e-12)


def test_large_curves_equal_sklearn():
  rng = np.random.default_rng(0)
  labels = (rng.random(5000) < 0.1).astype(int)
  scores = np.round(labels + rng.normal(size=5000), 2)
  for drop in (False, True):
    for a, b in zip(curves.precision_recall_curve(scores, labels, drop_intermediate=drop),
                    metrics.precision_recall_curve(labels, scores, drop_intermediate=drop)):
      np.testing.assert_allclose(a, b, rtol=1e-14)
    for a, b in zip(curves.roc_curve(scores, labels, drop_intermediate=drop),
                    metrics.roc_curve(labels, scores, drop_intermediate=drop)):
      np.testing.assert_allclose(a, b, rtol=1e-14)


@pytest.mark.parametrize("call, message", [
    (lambda: curves.precision_recall_curve([0.1, 0.2], [0, 0]), "at least one positive"),
    (lambda: curves.roc_curve([0.1, 0.2], [1, 1]), "both positive and negative"),
    (lambda: curves.roc_curve([0.1, np.nan], [0, 1]), "finite"),
    (lambda: curves.precision_recall_curve([0.1, 0.2], [0, 1, 1]), "one shape"),
    (lambda: curves.precision_recall_curve([0.1, 0.2], [0, 3]), "0/1"),
])
def test_bad_inputs_are_named(call, message):
  with pytest.raises(ConfigError, match=message):
    call()
