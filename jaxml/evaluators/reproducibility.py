"""Prediction-difference (PD) metrics: how much replicas of one model disagree.

Two copies of a model trained on the same data under the same conditions can still predict
differently (irreproducibility; Shamir, Lin & Coviello, "Real World Large Scale
Recommendation Systems Reproducibility and Smooth Activations"). These functions measure
that disagreement between two replicas' predictions on the same evaluation examples:

  relative_pd        binary probabilities [N]: mean_i |p1 - p2| / ((p1 + p2) / 2)
  l1_pd              class distributions [N, C]: mean_i sum_c |q1 - q2|   (NOT halved)
  top1_disagreement  [N, C]: share of examples whose argmax differs
  topk_swap_rate     scores [L] or [Q, L]: share of one top-k not in the other's top-k

and `over_replicas` lifts any of them to R replicas (mean and sample std over all unordered
pairs). Every metric is symmetric in its two arguments and 0 for identical inputs.

All are pure jnp functions: jit-able, vmap-able, and they accept sharded global arrays (the
mean is a global reduction, which XLA all-reduces). Each takes an optional `mask` over the
examples (or queries), as eval batches are padded: the mean is over valid rows (mask != 0)
only, and padded rows are zeroed before use so NaN garbage in them cannot leak through
`0 * nan`. With no valid row at all the mean is 0/0 = NaN, deliberately: "no data" is not
"perfectly reproducible".

Shapes are checked when tracing (they are static), because a [N, 1] against [N] mix would
otherwise broadcast silently into an [N, N] comparison.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxml.errors import ConfigError


class PairStats(NamedTuple):
  """A metric over all unordered replica pairs.

  `std` is the sample standard deviation (ddof=1) over the pairs: it describes their spread,
  not a standard error (pairs sharing a replica are not independent). With R = 2 there is one
  pair and `std` is NaN; report it only when `num_pairs > 1`.
  """

  mean: jax.Array
  std: jax.Array
  num_pairs: int


def relative_pd(p1: jax.Array, p2: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Relative prediction difference of two binary-probability predictions, as in the paper.

  mean over valid i of |p1_i - p2_i| / ((p1_i + p2_i) / 2), with p in [0, 1]. An example
  where both predict exactly 0 contributes 0 (the models agree; the ratio's 0/0 is not a
  disagreement). Each term lies in [0, 2].

  Args:
    p1: [N] probabilities of the positive class from one replica.
    p2: [N] the same from another replica.
    mask: optional [N]; rows with mask == 0 are padding and ignored.

  Returns:
    A float scalar.
  """
  p1, p2 = _same_shape("relative_pd", p1, p2, ndim=1)
  mid = (p1 + p2) / 2
  # Double `where`: the unselected branch's 0/0 would otherwise still poison gradients.
  both_zero = mid == 0
  per_example = jnp.where(both_zero, 0.0, jnp.abs(p1 - p2) / jnp.where(both_zero, 1.0, mid))
  return _masked_mean(per_example, mask)


def l1_pd(q1: jax.Array, q2: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """L1 prediction difference between two class distributions, mean over examples.

  mean over valid i of sum_c |q1_ic - q2_ic|, in [0, 2] for distributions. It is not halved:
  the total-variation distance is `l1_pd / 2`.

  Args:
    q1: [N, C] class probabilities from one replica.
    q2: [N, C] the same from another replica.
    mask: optional [N]; rows with mask == 0 are padding and ignored.

  Returns:
    A float scalar.
  """
  q1, q2 = _same_shape("l1_pd", q1, q2, ndim=2)
  return _masked_mean(jnp.sum(jnp.abs(q1 - q2), axis=-1), mask)


def top1_disagreement(q1: jax.Array, q2: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Share of valid examples whose predicted class (argmax over classes) differs.

  Works on probabilities or logits alike (softmax keeps the argmax). Ties go to the lowest
  class index, as `jnp.argmax` breaks them.

  Args:
    q1: [N, C] class scores from one replica.
    q2: [N, C] the same from another replica.
    mask: optional [N]; rows with mask == 0 are padding and ignored.

  Returns:
    A float scalar in [0, 1].
  """
  q1, q2 = _same_shape("top1_disagreement", q1, q2, ndim=2)
  differs = jnp.argmax(q1, axis=-1) != jnp.argmax(q2, axis=-1)
  return _masked_mean(differs.astype(q1.dtype), mask)


def topk_swap_rate(s1: jax.Array, s2: jax.Array, k: int,
                   mask: jax.Array | None = None) -> jax.Array:
  """Top-k swap rate of two rankings of the same items, mean over queries.

  For each query, T1 and T2 are the index sets of the k highest scores of s1 and s2 (ties go
  to the lower item index, as `jax.lax.top_k` breaks them). The query's swap rate is
  |T1 \\ T2| / k: the share of one model's top k that the other model does not rank in its
  top k. Since |T1| = |T2| = k, |T1 \\ T2| = |T2 \\ T1|, so the rate is symmetric; it is 0
  when the two top-k sets agree (their order inside the top k is ignored) and 1 when they are
  disjoint. Items that are padding should get the score -inf from the caller.

  Args:
    s1: [L] or [Q, L] item scores (L items per query) from one replica.
    s2: the same shape, from another replica.
    k: static number of top items, 1 <= k <= L.
    mask: optional [Q] (only for [Q, L] scores); queries with mask == 0 are ignored.

  Returns:
    A float scalar in [0, 1].
  """
  s1, s2 = _same_shape("topk_swap_rate", s1, s2, ndim=(1, 2))
  num_items = s1.shape[-1]
  if not isinstance(k, int) or not 1 <= k <= num_items:
    raise ConfigError(f"topk_swap_rate: k must be an int in [1, {num_items}] (the number of "
                      f"items per query), got {k!r}")
  if s1.ndim == 1 and mask is not None:
    raise ConfigError("topk_swap_rate: a mask is over queries; it needs [Q, L] scores, "
                      f"got one query of shape {s1.shape}")
  _, top1 = jax.lax.top_k(s1, k)
  _, top2 = jax.lax.top_k(s2, k)
  # k x k comparisons per query: cheaper than a one-hot over L items when k << L.
  kept = jnp.any(top1[..., :, None] == top2[..., None, :], axis=-1)
  per_query = 1.0 - jnp.mean(kept.astype(s1.dtype), axis=-1)
  return _masked_mean(jnp.atleast_1d(per_query), mask)


def over_replicas(metric: Callable[[jax.Array, jax.Array], jax.Array],
                  predictions: jax.Array) -> PairStats:
  """A pairwise metric over all R(R-1)/2 unordered pairs of R replicas.

  Bind a metric's other arguments first, e.g.
  `over_replicas(functools.partial(topk_swap_rate, k=10, mask=mask), scores)`.
  The pairs are gathered into one [R(R-1)/2, ...] batch and the metric is vmapped over it:
  one compiled program, at the cost of that many copies of the predictions in memory.

  Args:
    metric: a symmetric function of two replicas' predictions returning a scalar.
    predictions: [R, ...] the R replicas' predictions stacked on the leading axis.

  Returns:
    PairStats(mean, std over pairs (ddof=1; NaN for R = 2), num_pairs).

  Raises:
    ConfigError: if R < 2, as there is no pair to compare.
  """
  predictions = jnp.asarray(predictions)
  num_replicas = predictions.shape[0] if predictions.ndim else 0
  if num_replicas < 2:
    raise ConfigError(f"over_replicas needs at least 2 replicas, got {num_replicas}")
  firsts, seconds = zip(*itertools.combinations(range(num_replicas), 2))
  values = jax.vmap(metric)(predictions[jnp.array(firsts)], predictions[jnp.array(seconds)])
  if values.shape != (len(firsts),):
    raise ConfigError(f"over_replicas: the metric must return a scalar per pair, got shape "
                      f"{values.shape[1:]}")
  std = jnp.std(values, ddof=1) if len(firsts) > 1 else jnp.full((), jnp.nan, values.dtype)
  return PairStats(mean=jnp.mean(values), std=std, num_pairs=len(firsts))


def _same_shape(name: str, a, b, ndim: int | tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Both predictions as float arrays (at least float32, so bf16 sums keep their precision)."""
  a, b = jnp.asarray(a), jnp.asarray(b)
  allowed = (ndim,) if isinstance(ndim, int) else ndim
  if a.shape != b.shape or a.ndim not in allowed:
    raise ConfigError(f"{name}: the two predictions must have the same shape with "
                      f"{' or '.join(map(str, allowed))} dims, got {a.shape} and {b.shape}")
  dtype = jnp.promote_types(jnp.result_type(a, b), jnp.float32)
  return a.astype(dtype), b.astype(dtype)


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean of `values` [N] over rows with mask != 0; NaN when no row is valid."""
  if mask is None:
    return jnp.mean(values)
  mask = jnp.asarray(mask)
  if mask.shape != values.shape:
    raise ConfigError(f"mask must have shape {values.shape} (one entry per example or query), "
                      f"got {mask.shape}")
  valid = mask != 0
  total = jnp.sum(jnp.where(valid, values, 0.0))
  return total / jnp.sum(valid, dtype=values.dtype)
