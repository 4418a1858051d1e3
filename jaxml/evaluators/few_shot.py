"""Few-shot linear evaluation of frozen features (big_vision style): closed-form ridge, no I/O.

For each k in `shots` and each of `draws` seeded draws, k train rows per class are chosen
(without replacement within a draw), a ridge regression to the labels is solved in closed form
on those C*k rows only, and its accuracy is measured on the whole test set. Each k reports the
mean and std (ddof=0) over its draws.

The ridge, for one draw of n = C*k rows x [n, D] with labels y [n]:

    z = (x - mean) / scale          mean over the n rows; scale = their per-unit std when
                                    `whiten` (diagonal whitening, i.e. standardisation), else 1
    t = 2 * one_hot(y) - 1          +-1 targets, as sklearn's RidgeClassifier uses
    W = argmin (1/n) ||z W - (t - mean(t))||^2 + l2 ||W||^2
    decision(x') = ((x' - mean) / scale) @ W + mean(t),  prediction = argmax

Centring both z and t is exactly how sklearn handles `fit_intercept=True`, so the decision
function equals `RidgeClassifier(alpha=l2 * n, fit_intercept=True)` fitted on z. `l2` sits next
to the *mean* squared error (as linear_probe's l2 sits next to the mean cross-entropy), so one
value means the same shrinkage for every k. The solve uses the dual n x n system
(z z^T + l2 n I) A = t, W = z^T A when n < D and the primal D x D one otherwise: the cost is
then min(n, D)^3 and both are symmetric positive definite for l2 > 0 (centring leaves z z^T
singular, which is why l2 must be > 0).

All draws of one k run in one jitted call (vmap over draws); the shapes depend only on k, so
each k compiles once and later calls with new feature values reuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.errors import ConfigError
from jaxml.evaluators import linear_probe
from jaxml.evaluators.linear_probe import LinearHead

DEFAULT_SHOTS = (1, 5, 10, 25)
# Light shrinkage: next to the mean squared error of +-1 targets, 1e-2 only steadies the solve
# (it is no substitute for choosing l2 on held-out rows when scores are compared across models).
DEFAULT_L2 = 1e-2
WHO = "few-shot"


class FewShotResult(NamedTuple):
  """The accuracies of one k over its draws; `std` is the population std (ddof=0)."""

  shots: int
  accuracies: np.ndarray  # [draws], test accuracy of each draw's ridge
  mean: float
  std: float


# ----------------------------------------------------------------------------------------
# Drawing the few-shot train rows (host side, NumPy).


def draw_shots(labels, num_classes: int, shots: int, draws: int, seed: int) -> np.ndarray:
  """[draws, num_classes * shots] int train-row indices: `shots` rows of each class per draw.

  Within a draw the rows are distinct and ordered class by class (class 0's k rows first).
  The same (labels, shots, draws, seed) always gives the same indices.
  """
  labels = np.asarray(labels)
  _check_count("shots", shots)
  _check_count("draws", draws)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ConfigError(f"{WHO}: labels must be a 1-D integer array, got shape {labels.shape} "
                      f"dtype {labels.dtype}")
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise ConfigError(f"{WHO}: labels must lie in [0, {num_classes}), found {labels[bad][0]} "
                      f"({int(bad.sum())} such rows)")
  rows_of = [np.flatnonzero(labels == c) for c in range(num_classes)]
  counts = np.array([rows.size for rows in rows_of])
  if (short := np.flatnonzero(counts < shots)).size:
    raise ConfigError(
        f"{WHO}: {shots}-shot needs {shots} train rows per class, but class {short[0]} has "
        f"{counts[short[0]]} ({short.size} classes short; per-class counts {counts.tolist()})")
  rng = np.random.default_rng(seed)
  return np.stack([
      np.concatenate([rng.choice(rows, shots, replace=False) for rows in rows_of])
      for _ in range(draws)
  ]).astype(np.int32)


# ----------------------------------------------------------------------------------------
# The ridge (pure, jittable).


def dot(a: jax.Array, b: jax.Array) -> jax.Array:
  """Full float32 matmul: TF32/bf16 passes on accelerators would cost the 1e-4 agreement."""
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


class Centred(NamedTuple):
  """A regression problem centred as sklearn's fit_intercept=True centres it."""

  z: jax.Array            # [n, D] (features - mean) / scale
  targets: jax.Array      # [n, C] +-1 one-hot targets minus their column means
  target_mean: jax.Array  # [C], the intercept in centred space
  mean: jax.Array         # [D]
  scale: jax.Array        # [D], the per-unit std when whitened, else 1


def centre(features: jax.Array, labels: jax.Array, num_classes: int,
           whiten: bool = False) -> Centred:
  """Centres (and with `whiten` standardises) `features` [n, D] with their own statistics,
  and turns int `labels` [n] into centred +-1 one-hot targets."""
  dtype = jnp.promote_types(features.dtype, jnp.float32)
  x = features.astype(dtype)
  mean, scale = linear_probe.feature_stats(x, jnp.ones((x.shape[0],), bool))
  if not whiten:
    scale = jnp.ones_like(scale)
  targets = 2 * jax.nn.one_hot(labels, num_classes, dtype=dtype) - 1
  target_mean = jnp.mean(targets, axis=0)
  return Centred((x - mean) / scale, targets - target_mean, target_mean, mean, scale)


def head(problem: Centred, w: jax.Array) -> LinearHead:
  """The head whose logits are problem's z @ w plus the targets' mean, on raw features."""
  return LinearHead(w=w, b=problem.target_mean, mean=problem.mean, scale=problem.scale)


def ridge(features: jax.Array, labels: jax.Array, num_classes: int, l2,
          whiten: bool = False) -> LinearHead:
  """The closed-form ridge classifier above on `features` [n, D], int `labels` [n].

  Returns a linear_probe.LinearHead (w in centred/whitened space, b = mean of the +-1 targets),
  so `linear_probe.logits` is its decision function and `linear_probe.predict` its prediction.
  """
  problem = centre(features, labels, num_classes, whiten)
  z, targets = problem.z, problem.targets
  n, dim = z.shape
  ridge_term = jnp.asarray(l2, z.dtype) * n
  if n < dim:  # dual: n x n
    gram = dot(z, z.T) + ridge_term * jnp.eye(n, dtype=z.dtype)
    w = dot(z.T, jax.scipy.linalg.solve(gram, targets, assume_a="pos"))
  else:  # primal: D x D
    gram = dot(z.T, z) + ridge_term * jnp.eye(dim, dtype=z.dtype)
    w = jax.scipy.linalg.solve(gram, dot(z.T, targets), assume_a="pos")
  return head(problem, w)


fit = jax.jit(ridge, static_argnames=("num_classes", "whiten"))
fit.__doc__ = "`ridge`, jitted (num_classes and whiten static): one fit on all given rows."


@jax.jit(static_argnames=("num_classes", "whiten"))
def fit_draws(train_features, train_labels, indices, l2, *, num_classes: int,
              whiten: bool = False) -> LinearHead:
  """One `ridge` per row of `indices` [draws, n]: a LinearHead whose leaves lead with draws."""
  one = lambda rows: ridge(train_features[rows], train_labels[rows], num_classes, l2, whiten)
  return jax.vmap(one)(indices)


@jax.jit(static_argnames=("num_classes", "whiten"))
def draw_accuracies(train_features, train_labels, indices, test_features, test_labels, l2, *,
                    num_classes: int, whiten: bool = False) -> jax.Array:
  """[draws] test accuracy of each draw's ridge (one compilation per shape of `indices`)."""
  heads = fit_draws(train_features, train_labels, indices, l2, num_classes=num_classes,
                    whiten=whiten)
  predictions = jax.vmap(linear_probe.predict, in_axes=(0, None))(heads, test_features)
  # Integer counts, so that all-correct is exactly 1.0.
  return jnp.sum(predictions == test_labels, axis=1) / test_labels.shape[0]


# ----------------------------------------------------------------------------------------
# Checks and the evaluator.


def _check_count(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ConfigError(f"{WHO}: {name} must be an int >= 1, got {value!r}")


def check_l2(l2, *, who: str = WHO) -> None:
  if not (np.ndim(l2) == 0 and float(l2) > 0):
    raise ConfigError(f"{who}: l2 must be a scalar > 0 (centred features make the unregularised "
                      f"system singular), got {l2!r}")


def check_inputs(train_features, train_labels, test_features, test_labels, num_classes,
                 *, shots: Sequence[int] = DEFAULT_SHOTS, draws: int = 1,
                 l2: float = DEFAULT_L2) -> None:
  """Raises one ConfigError naming the first problem: shapes, dtypes, label range, NaN/Inf,
  shots, draws or l2. (Too few rows of a class for some k is `draw_shots`'s error.)"""
  linear_probe.check_inputs(train_features, train_labels, num_classes, name="train", who=WHO)
  linear_probe.check_inputs(test_features, test_labels, num_classes, name="test", who=WHO)
  if np.shape(test_features)[1] != np.shape(train_features)[1]:
    raise ConfigError(f"{WHO}: train features have dim {np.shape(train_features)[1]} but "
                      f"test features {np.shape(test_features)[1]}")
  if isinstance(shots, (int, np.integer)) or not len(shots):
    raise ConfigError(f"{WHO}: shots must be a non-empty sequence of ints, got {shots!r}")
  for k in shots:
    _check_count("each of shots", k)
  _check_count("draws", draws)
  check_l2(l2)


def evaluate(train_features, train_labels, test_features, test_labels, num_classes: int, *,
             shots: Sequence[int] = DEFAULT_SHOTS, draws: int = 5, l2: float = DEFAULT_L2,
             seed: int = 0, whiten: bool = False) -> dict[int, FewShotResult]:
  """Few-shot ridge accuracy on the test set for each k in `shots`, over `draws` draws.

  Args:
    train_features, train_labels: [N, D] float features and [N] ints the shots are drawn from.
    test_features, test_labels: [T, D] and [T], every row scored.
    num_classes: C; every class needs at least max(shots) train rows.
    shots: the k values. draws: draws per k. seed: draws are `draw_shots(..., seed)`.
    l2: ridge weight next to the mean squared error (sklearn's alpha = l2 * C * k).
    whiten: standardise each unit with the draw's own train rows before the ridge.

  Returns:
    {k: FewShotResult}, in the order of `shots`.
  """
  check_inputs(train_features, train_labels, test_features, test_labels, num_classes,
               shots=shots, draws=draws, l2=l2)
  train_labels = np.asarray(train_labels)
  indices = {int(k): draw_shots(train_labels, num_classes, int(k), draws, seed) for k in shots}
  arrays = [jnp.asarray(a) for a in (train_features, train_labels, test_features, test_labels)]
  results = {}
  for k, rows in indices.items():
    accuracies = np.asarray(draw_accuracies(
        arrays[0], arrays[1], jnp.asarray(rows), arrays[2], arrays[3], jnp.float32(l2),
        num_classes=int(num_classes), whiten=bool(whiten)))
    results[k] = FewShotResult(k, accuracies, float(accuracies.mean()), float(accuracies.std()))
  return results


def metrics(results: dict[int, FewShotResult], prefix: str) -> dict[str, float]:
  """{"<prefix>/<k>shot": mean accuracy, "<prefix>/<k>shot_std": its std over draws}; a run
  logs them under `fewshot/<task>` (jaxml/training/few_shot.py)."""
  out = {}
  for k, result in results.items():
    out[f"{prefix}/{k}shot"] = result.mean
    out[f"{prefix}/{k}shot_std"] = result.std
  return out
