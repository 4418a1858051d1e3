"""AUROC and average precision against scikit-learn, against brute-force definitions (every
positive-negative pair; every threshold), and against small cases worked by hand; labels
missing a class are NaN, skipped by the macro means and counted; bad inputs are named."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from sklearn import metrics

from jaxml.errors import ConfigError
from jaxml.evaluators import ranking


def pairwise_auroc(scores, labels):
  """The share of (positive, negative) pairs ranked right, ties counting one half."""
  pos = [s for s, y in zip(scores, labels) if y]
  neg = [s for s, y in zip(scores, labels) if not y]
  wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
  return wins / (len(pos) * len(neg))


def threshold_average_precision(scores, labels):
  """Sum over distinct thresholds, highest first, of the recall gained there times the
  precision there."""
  total, recall_before, positives = 0.0, 0.0, sum(labels)
  for threshold in sorted(set(scores), reverse=True):
    chosen = [y for s, y in zip(scores, labels) if s >= threshold]
    recall = sum(chosen) / positives
    total += (recall - recall_before) * sum(chosen) / len(chosen)
    recall_before = recall
  return total


@pytest.mark.parametrize("scores, labels, auroc, auprc", [
    # scikit-learn's documentation example: 3 of 4 pairs right; AP = (1 + 2/3) / 2.
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75, 5 / 6),
    # A positive tied with both negatives: pairs 1/2 + 1/2 + 1 + 1 of 4; AP = 1/2 * 1 + 1/2 * 2/4.
    ([0.5, 0.5, 0.5, 0.9], [1, 0, 0, 1], 0.75, 0.75),
    ([0.9, 0.1], [0, 1], 0.0, 0.5),            # wrong order: the positive comes in at 1/2
    ([0.3, 0.3, 0.3, 0.3], [1, 0, 0, 0], 0.5, 0.25),  # all tied: chance and the prevalence
    ([3, 2, 1], [1, 1, 0], 1.0, 1.0),
])
def test_small_cases_worked_by_hand(scores, labels, auroc, auprc):
  assert ranking.auroc(scores, labels) == pytest.approx(auroc, abs=1e-12)
  assert ranking.average_precision(scores, labels) == pytest.approx(auprc, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(data=st.integers(2, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 5), min_size=n, max_size=n),  # few values: many ties
    st.lists(st.booleans(), min_size=n, max_size=n))))
def test_single_label_equals_sklearn_and_the_definitions(data):
  scores, labels = np.array(data[0]) / 5.0, np.array(data[1], int)
  auprc = ranking.average_precision(scores, labels)
  if labels.sum() == 0:
    assert np.isnan(auprc) and np.isnan(ranking.auroc(scores, labels))
    return
  assert auprc == pytest.approx(metrics.average_precision_score(labels, scores), abs=1e-12)
  assert auprc == pytest.approx(threshold_average_precision(scores, labels), abs=1e-12)
  if labels.all():
    assert np.isnan(ranking.auroc(scores, labels))
    return
  auroc = ranking.auroc(scores, labels)
  assert auroc == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
  assert auroc == pytest.approx(pairwise_auroc(scores, labels), abs=1e-12)
  assert ranking.auroc(-scores, labels) == pytest.approx(1 - auroc, abs=1e-12)


def multilabel_data(seed=0, n=300, num_labels=10):
  """Rounded scores (ties) related to labels of varied prevalence; label 3 has no positive,
  label 7 only positives."""
  rng = np.random.default_rng(seed)
  labels = (rng.random((n, num_labels)) < np.linspace(0.02, 0.5, num_labels)).astype(int)
  labels[:, 3], labels[:, 7] = 0, 1
  scores = np.round(labels * 0.3 + rng.random((n, num_labels)), 1)
  return scores, labels


def test_multilabel_summary_equals_sklearn_and_skips_one_class_labels():
  scores, labels = multilabel_data()
  both = [j for j in range(labels.shape[1]) if j not in (3, 7)]
  summary = ranking.multilabel_summary(scores, labels)

  assert summary["labels_scored"] == len(both) == 8
  assert summary["auroc/macro"] == pytest.approx(metrics.roc_auc_score(
      labels[:, both], scores[:, both], average="macro"), abs=1e-12)
  assert summary["auprc/macro"] == pytest.approx(metrics.average_precision_score(
      labels[:, both], scores[:, both], average="macro"), abs=1e-12)
  assert summary["auroc/micro"] == pytest.approx(metrics.roc_auc_score(
      labels, scores, average="micro"), abs=1e-12)
  assert summary["auprc/micro"] == pytest.approx(metrics.average_precision_score(
      labels, scores, average="micro"), abs=1e-12)


def test_per_label_rows_equal_sklearn_with_nan_where_undefined():
  scores, labels = multilabel_data(seed=1)
  names = [f"odour{j}" for j in range(labels.shape[1])]
  rows = ranking.per_label(scores, labels, names)

  assert [row["name"] for row in rows] == names
  assert [row["positives"] for row in rows] == labels.sum(axis=0).tolist()
  for j, row in enumerate(rows):
    if j in (3, 7):
      assert np.isnan(row["auroc"])
    else:
      assert row["auroc"] == pytest.approx(
          metrics.roc_auc_score(labels[:, j], scores[:, j]), abs=1e-12)
    if j == 3:
      assert np.isnan(row["auprc"])
    else:  # all positives: every threshold has precision 1
      assert row["auprc"] == pytest.approx(
          metrics.average_precision_score(labels[:, j], scores[:, j]), abs=1e-12)
  assert rows[7]["auprc"] == 1.0
  assert [row["name"] for row in ranking.per_label(scores[:, :2], labels[:, :2])] == ["0", "1"]


def test_a_split_with_no_label_of_both_classes_has_nan_macro_means():
  summary = ranking.multilabel_summary([[0.1, 0.2], [0.3, 0.4]], [[0, 1], [0, 1]])
  assert summary["labels_scored"] == 0
  assert np.isnan(summary["auroc/macro"]) and np.isnan(summary["auprc/macro"])
  assert summary["auroc/micro"] == pytest.approx(pairwise_auroc([0.1, 0.2, 0.3, 0.4],
                                                                [0, 1, 0, 1]))


@pytest.mark.parametrize("call, message", [
    (lambda: ranking.auroc([0.1, 0.2], [0, 1, 1]), "one shape"),
    (lambda: ranking.auroc([0.1, 0.2], [0, 2]), "0/1"),
    (lambda: ranking.average_precision([0.1, np.nan], [0, 1]), "finite"),
    (lambda: ranking.auroc([0.1, np.inf], [0, 1]), "finite"),
    (lambda: ranking.auroc([], []), "empty"),
    (lambda: ranking.auroc([[0.1]], [[1]]), "1-D"),
    (lambda: ranking.multilabel_summary([0.1, 0.2], [0, 1]), "2-D"),
    (lambda: ranking.per_label([[0.1, 0.2]], [[0, 1]], ["only one"]), "1 label names for 2"),
    (lambda: ranking.auroc(["a", "b"], [0, 1]), "numbers"),
])
def test_bad_inputs_are_named(call, message):
  with pytest.raises(ConfigError, match=message):
    call()
