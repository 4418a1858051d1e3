"""Accuracy per group of examples, and the worst group's: the measure of spurious-feature
benchmarks (Waterbirds, CelebA, coloured digits), where a model can score well on average by
using a shortcut that fails on the small groups in which it does not hold.

Groups are integer ids in [0, num_groups), e.g. label x spurious attribute. A group with no
examples in a split has no accuracy: it is reported as absent, never as 0 (which would make it
the worst group) nor as a NaN that a mean or a min then silently propagates or skips:

  GroupAccuracy.accuracy   [G], NaN exactly where `present` is False (the one sentinel)
  GroupAccuracy.present    [G] bool, count > 0
  worst, mean_group        min / unweighted mean over the present groups only
  summary(report, names)   flat {name: float} for logging: worst, mean over groups, the
                           number absent, and per group its count and (if present) accuracy

The runner logs these for every group field of a run's data (`Task.groups`), from the
gathered predictions of the test split (`jaxml.training.evaluate.group_metrics`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class GroupAccuracy(NamedTuple):
  correct: np.ndarray   # [G] correct predictions per group
  count: np.ndarray     # [G] examples per group
  accuracy: np.ndarray  # [G] correct / count; NaN where the group is absent
  present: np.ndarray   # [G] bool: count > 0
  overall: float        # correct / count over every example

  @property
  def worst(self) -> float:
    return float(np.min(self.accuracy[self.present]))

  @property
  def mean_group(self) -> float:
    return float(np.mean(self.accuracy[self.present]))


def predicted_class(predictions) -> jax.Array:
  """Class ids [N] from class ids [N] or scores (probabilities, logits) [N, C]."""
  predictions = jnp.asarray(predictions)
  return jnp.argmax(predictions, axis=-1) if predictions.ndim == 2 else predictions


def correct_and_count(correct, groups, num_groups: int, mask=None):
  """(correct [G], count [G]) float32 sums per group; jit-able. `mask` (0 on padding rows)
  weights both. Ids outside [0, num_groups) are dropped, so check them outside jit."""
  weight = jnp.ones(jnp.shape(correct), jnp.float32) if mask is None else jnp.asarray(
      mask, jnp.float32)
  total = lambda values: jax.ops.segment_sum(values, jnp.asarray(groups),
                                             num_segments=num_groups)
  return total(jnp.asarray(correct, jnp.float32) * weight), total(weight)


def from_sums(correct, count) -> GroupAccuracy:
  """The report of per-group sums (host side); ValueError if no group has an example."""
  correct, count = np.asarray(correct, np.float64), np.asarray(count, np.float64)
  present = count > 0
  if not present.any():
    raise ValueError("no group has an example: nothing to measure accuracy on")
  accuracy = np.full(count.shape, np.nan)
  accuracy[present] = correct[present] / count[present]
  return GroupAccuracy(correct, count, accuracy, present, float(correct.sum() / count.sum()))


def group_accuracy(predictions, labels, groups, num_groups: int | None = None,
                   mask=None) -> GroupAccuracy:
  """Per-group accuracy of `predictions` (class ids [N] or scores [N, C]) against `labels`
  [N]; `groups` [N] ints in [0, num_groups) (default: max id + 1)."""
  groups = np.asarray(groups)
  if not np.issubdtype(groups.dtype, np.integer):
    raise ValueError(f"group ids must be integers, got {groups.dtype}")
  if num_groups is None:
    num_groups = int(groups.max()) + 1 if groups.size else 0
  if groups.size and (groups.min() < 0 or groups.max() >= num_groups):
    raise ValueError(f"group ids must lie in [0, {num_groups}), got {groups.min()}.."
                     f"{groups.max()}")
  correct = predicted_class(predictions) == jnp.asarray(labels)
  return from_sums(*correct_and_count(correct, groups, num_groups, mask))


def summary(report: GroupAccuracy, names=(), *, per_group: bool = True) -> dict[str, float]:
  """Flat metrics for a log or a table: `worst_group/accuracy`, `mean_group/accuracy`,
  `groups_absent` and, with `per_group`, `<name>/count` for every group (0: absent) and
  `<name>/accuracy` for the present ones; `names` are the groups' names (default: their
  ids), e.g. a field's categories."""
  label = lambda g: names[g] if len(names) else str(g)
  out = {"worst_group/accuracy": report.worst, "mean_group/accuracy": report.mean_group,
         "groups_absent": float(np.sum(~report.present))}
  if per_group:
    out.update({f"{label(g)}/count": float(n) for g, n in enumerate(report.count)})
    out.update({f"{label(g)}/accuracy": float(report.accuracy[g])
                for g in np.flatnonzero(report.present)})
  return out
