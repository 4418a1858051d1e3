"""Group metrics against a plain NumPy loop, and absent groups."""

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from jaxml.evaluators import groups

NUM_CLASSES = 3


def reference(predicted, labels, group_ids, num_groups, mask):
  """Per-group accuracy by looping over the examples: {g: accuracy} for groups present."""
  right, seen = [0] * num_groups, [0] * num_groups
  for p, y, g, keep in zip(predicted, labels, group_ids, mask):
    if keep:
      seen[g] += 1
      right[g] += int(p == y)
  accuracy = {g: right[g] / seen[g] for g in range(num_groups) if seen[g]}
  overall = sum(right) / sum(seen)
  return accuracy, seen, overall


examples = st.integers(1, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, NUM_CLASSES - 1), min_size=n, max_size=n),
    st.lists(st.integers(0, NUM_CLASSES - 1), min_size=n, max_size=n),
    st.lists(st.integers(0, 5), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n)))


@settings(max_examples=60, deadline=None)
@given(data=examples, as_scores=st.booleans(), extra_groups=st.integers(0, 2))
def test_group_accuracy_equals_a_numpy_loop(data, as_scores, extra_groups):
  predicted, labels, group_ids, mask = (np.array(a) for a in data)
  mask[0] = True  # at least one example counts
  num_groups = int(group_ids.max()) + 1 + extra_groups  # some groups absent on purpose
  # Scores whose argmax is the prediction: one-hot plus noise below the gap.
  predictions = (np.eye(NUM_CLASSES)[predicted] + 0.1 * np.random.default_rng(0).random(
      (len(predicted), NUM_CLASSES))) if as_scores else predicted
  report = groups.group_accuracy(predictions, labels, group_ids, num_groups, mask=mask)
  accuracy, seen, overall = reference(predicted, labels, group_ids, num_groups, mask)

  np.testing.assert_array_equal(report.count, seen)
  np.testing.assert_array_equal(report.present, [g in accuracy for g in range(num_groups)])
  for g in range(num_groups):
    if g in accuracy:
      assert report.accuracy[g] == pytest.approx(accuracy[g])
    else:
      assert np.isnan(report.accuracy[g])
  assert report.worst == pytest.approx(min(accuracy.values()))
  assert report.mean_group == pytest.approx(sum(accuracy.values()) / len(accuracy))
  assert report.overall == pytest.approx(overall)

  flat = groups.summary(report)
  assert flat["groups_absent"] == num_groups - len(accuracy)
  assert {k for k in flat if k.endswith("/accuracy") and k[0].isdigit()} == {
      f"{g}/accuracy" for g in accuracy}
  assert [flat[f"{g}/count"] for g in range(num_groups)] == seen
  assert not any(np.isnan(v) for v in flat.values())


def test_an_absent_group_is_reported_as_absent_not_as_the_worst():
  report = groups.group_accuracy([0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 2, 2], num_groups=3)
  np.testing.assert_array_equal(report.present, [True, False, True])
  np.testing.assert_array_equal(report.count, [2, 0, 2])
  assert report.worst == 0.5 and report.mean_group == 0.75 and report.overall == 0.75
  flat = groups.summary(report, ("a", "b", "c"))
  assert "b/accuracy" not in flat and flat["b/count"] == 0 and flat["a/accuracy"] == 1.0
  assert flat["groups_absent"] == 1 and flat["worst_group/accuracy"] == 0.5
  assert set(groups.summary(report, per_group=False)) == {
      "worst_group/accuracy", "mean_group/accuracy", "groups_absent"}


@pytest.mark.parametrize("group_ids, num_groups, message", [
    ([0, 3], 3, r"group ids must lie in \[0, 3\)"), ([0, -1], None, "must lie in"),
    ([0.0, 1.0], None, "must be integers")])
def test_bad_group_ids(group_ids, num_groups, message):
  with pytest.raises(ValueError, match=message):
    groups.group_accuracy([0, 1], [0, 1], np.array(group_ids), num_groups)


def test_no_examples_at_all_is_an_error():
  with pytest.raises(ValueError, match="no group has an example"):
    groups.group_accuracy([0, 1], [0, 1], [0, 1], 2, mask=[0, 0])
