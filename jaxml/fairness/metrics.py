"""Group-conditional metrics of decisions, and bootstrap confidence intervals for them.

Decisions may be 0/1 or acceptance probabilities (a randomised rule's expected decisions, as
`DerivedPredictor.acceptance_probability` gives): the rates are then expectations over the
rule's coins, which removes that noise from a comparison. Everything is jit-able JAX; the
bootstrap resamples examples with replacement (as multinomial counts, so every resample is a
weighted pass over the same arrays) in chunks that bound memory.

  tpr, fpr         weighted share of positives / negatives decided positive, per group
  selection_rate   weighted share decided positive, per group
  group_accuracy   per group
  accuracy         over everyone
  *_gap            largest minus smallest group value (groups where it is defined)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

PER_GROUP = ("tpr", "fpr", "selection_rate", "group_accuracy")
GAPS = {"tpr_gap": "tpr", "fpr_gap": "fpr", "selection_rate_gap": "selection_rate",
        "accuracy_gap": "group_accuracy"}


def group_metrics(decisions, labels, groups, num_groups: int, weights=None) -> dict:
  """{name: value}: the PER_GROUP rates as [num_groups] arrays (NaN where a group has no
  examples of the kind), "accuracy" and the GAPS as scalars. `groups` are codes in
  [0, num_groups)."""
  decisions = jnp.asarray(decisions, jnp.float32)
  labels = jnp.asarray(labels, jnp.float32)
  weights = jnp.ones_like(decisions) if weights is None else jnp.asarray(weights, jnp.float32)
  total = functools.partial(jax.ops.segment_sum, segment_ids=jnp.asarray(groups),
                            num_segments=num_groups)
  positives, negatives = total(weights * labels), total(weights * (1 - labels))
  true_pos = total(weights * labels * decisions)
  false_pos = total(weights * (1 - labels) * decisions)
  ratio = lambda a, b: jnp.where(b > 0, a / jnp.where(b > 0, b, 1), jnp.nan)
  out = {"tpr": ratio(true_pos, positives), "fpr": ratio(false_pos, negatives),
         "selection_rate": ratio(true_pos + false_pos, positives + negatives),
         "group_accuracy": ratio(true_pos + negatives - false_pos, positives + negatives),
         "accuracy": ratio(true_pos.sum() + negatives.sum() - false_pos.sum(),
                           positives.sum() + negatives.sum())}
  for gap, rate in GAPS.items():
    out[gap] = jnp.nanmax(out[rate]) - jnp.nanmin(out[rate])
  return out


def bootstrap(decisions, labels, groups, num_groups: int, key, *, samples: int = 1000,
              level: float = 0.95, weights=None, chunk: int = 50) -> dict:
  """{name: (estimate, low, high)}: every `group_metrics` value on the data, and the
  percentile interval at `level` of its `samples` bootstrap resamples (NumPy; per-group
  entries are [num_groups] arrays)."""
  decisions = jnp.asarray(decisions, jnp.float32)
  base = jnp.ones(decisions.shape[0]) if weights is None else jnp.asarray(weights, jnp.float32)
  labels, groups = jnp.asarray(labels), jnp.asarray(groups)
  estimate, draws = _estimate_and_draws(decisions, labels, groups, base,
                                        jax.random.split(key, samples),
                                        num_groups=num_groups, chunk=chunk)
  tail = 100 * (1 - level) / 2
  return {name: (np.asarray(estimate[name]),
                 np.nanpercentile(np.asarray(draws[name]), tail, axis=0),
                 np.nanpercentile(np.asarray(draws[name]), 100 - tail, axis=0))
          for name in estimate}


# Jitted once at module level, so a study calling `bootstrap` for many rules of one data set
# compiles it once per shape rather than once per call.
@functools.partial(jax.jit, static_argnames=("num_groups", "chunk"))
def _estimate_and_draws(decisions, labels, groups, base, keys, *, num_groups, chunk):
  count = decisions.shape[0]
  metrics = functools.partial(group_metrics, labels=labels, groups=groups,
                              num_groups=num_groups)

  def resample(sample_key):
    picks = jax.random.randint(sample_key, (count,), 0, count)
    counts = jax.ops.segment_sum(jnp.ones(count), picks, num_segments=count)
    return metrics(decisions, weights=base * counts)

  return metrics(decisions, weights=base), jax.lax.map(resample, keys, batch_size=chunk)
