"""Sparse unit probes: which few units (feature dimensions) of a frozen network carry a label.

Units are ranked by the weight a dense probe gives them: the few-shot module's closed-form
ridge (+-1 targets, centred) fitted on all train rows with every unit standardised, each unit
scored by the L2 norm over classes of its weight row. Standardising first makes the weights
comparable across units whatever their scale. Unlike a per-unit separability score (an F
statistic), this ranking is multivariate: a unit that helps only together with others is
still found, and of two copies of one signal neither is double counted as a separate find.

`unit_curve` then refits the same ridge on only the top-m units for each m and scores it on
the test set. A probe on a subset of units is the dense ridge on features whose other units
are set to 0 (a constant unit is centred to exactly 0 and gets weight 0), so every m shares
one compilation, and with m = all units the inputs and program are the dense probe's own:
the result is bit-identical to it.

The L1 route: `group_lasso` fits the same centred, standardised least squares with a group
penalty alpha * sum_d ||W_d|| (a unit's weights over all classes form one group, so units, not
single weights, are selected), solved by FISTA in one jitted while_loop; `l1_path` runs it down
a grid of alphas (one compilation), and the units that enter first are the ones carrying the
label. It equals sklearn's MultiTaskLasso on the same standardised features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.errors import ConfigError
from jaxml.evaluators import few_shot, linear_probe
from jaxml.evaluators.linear_probe import LinearHead

WHO = "sparse probe"


class UnitPoint(NamedTuple):
  """One point of the curve: the probe on the top-`num_units` units and its test accuracy."""

  num_units: int
  accuracy: float
  units: tuple[int, ...]  # the selected units, ascending


def _check(train_features, train_labels, test_features, test_labels, num_classes, l2):
  few_shot.check_inputs(train_features, train_labels, test_features, test_labels, num_classes,
                        shots=(1,), l2=l2)


def _unit_mask(units, dim: int) -> np.ndarray:
  """[dim] float32 mask, 1 on `units`; ConfigError for units outside [0, dim) or repeats."""
  units = np.asarray(units, dtype=np.int64).reshape(-1)
  if units.size == 0 or (units < 0).any() or (units >= dim).any() \
      or np.unique(units).size != units.size:
    raise ConfigError(f"{WHO}: units must be distinct ints in [0, {dim}), at least one, got "
                      f"{units.tolist()}")
  mask = np.zeros(dim, np.float32)
  mask[units] = 1
  return mask


def _fit_masked(features, labels, mask: np.ndarray, num_classes: int, l2) -> LinearHead:
  # Masked outside the jitted fit: with every unit selected, the fit's input is the features
  # bit for bit, hence its output is the dense probe's.
  features = jnp.asarray(features)
  if not mask.all():
    features = features * mask
  return few_shot.fit(features, jnp.asarray(labels), num_classes, l2, whiten=True)


def fit_units(features, labels, units: Sequence[int], num_classes: int, *,
              l2: float = few_shot.DEFAULT_L2) -> LinearHead:
  """The standardised ridge on only `units`: the other units are zeroed, so they get weight 0.

  Its head applies to full-width features (`linear_probe.predict(head, features)`).
  """
  linear_probe.check_inputs(features, labels, num_classes, who=WHO)
  few_shot.check_l2(l2, who=WHO)
  return _fit_masked(features, labels, _unit_mask(units, np.shape(features)[1]), num_classes,
                     l2)


def dense_probe(features, labels, num_classes: int, *, l2: float = few_shot.DEFAULT_L2
                ) -> LinearHead:
  """The ridge on every unit, standardised: what units are ranked by and compared against."""
  linear_probe.check_inputs(features, labels, num_classes, who=WHO)
  few_shot.check_l2(l2, who=WHO)
  return _fit_masked(features, labels, np.ones(np.shape(features)[1], np.float32), num_classes,
                     l2)


def _ranking(head: LinearHead) -> tuple[np.ndarray, np.ndarray]:
  scores = np.linalg.norm(np.asarray(head.w, np.float64), axis=1)
  return np.argsort(-scores, kind="stable"), scores


def rank_units(features, labels, num_classes: int, *, l2: float = few_shot.DEFAULT_L2
               ) -> tuple[np.ndarray, np.ndarray]:
  """(units [D] best first, scores [D]): score = L2 norm of a unit's dense-probe weight row.

  Ties keep the lower unit first (a stable sort), so the ranking is deterministic.
  """
  return _ranking(dense_probe(features, labels, num_classes, l2=l2))


def _masked_accuracy(train_features, train_labels, test_features, test_labels, mask,
                     num_classes: int, l2) -> float:
  head = _fit_masked(train_features, train_labels, mask, num_classes, l2)
  return float(linear_probe.accuracy(head, jnp.asarray(test_features),
                                     jnp.asarray(test_labels)))


def unit_accuracy(train_features, train_labels, test_features, test_labels, units,
                  num_classes: int, *, l2: float = few_shot.DEFAULT_L2) -> float:
  """Test accuracy of the ridge fitted on only `units` of the train features."""
  _check(train_features, train_labels, test_features, test_labels, num_classes, l2)
  mask = _unit_mask(units, np.shape(train_features)[1])
  return _masked_accuracy(train_features, train_labels, test_features, test_labels, mask,
                          num_classes, l2)


def default_units(dim: int) -> tuple[int, ...]:
  """1, 2, 4, ... below `dim`, then `dim` itself."""
  return tuple(2**i for i in range(int(np.log2(dim)) + 1) if 2**i < dim) + (dim,)


def unit_curve(train_features, train_labels, test_features, test_labels, num_classes: int,
               units: Sequence[int] | None = None, *, l2: float = few_shot.DEFAULT_L2
               ) -> list[UnitPoint]:
  """For each m in `units` (default `default_units(D)`), the top-m units by `rank_units` (on
  the train rows) and the test accuracy of the ridge refitted on only them.

  Returns one UnitPoint per m, in the order given.
  """
  _check(train_features, train_labels, test_features, test_labels, num_classes, l2)
  dim = np.shape(train_features)[1]
  units = default_units(dim) if units is None else tuple(units)
  bad = [m for m in units
         if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= dim]
  if not units or bad:
    raise ConfigError(f"{WHO}: units must be a non-empty sequence of ints in [1, {dim}], got "
                      f"{list(units)!r}")
  order, _ = _ranking(dense_probe(train_features, train_labels, num_classes, l2=l2))
  curve = []
  for m in units:
    selected = tuple(sorted(int(u) for u in order[:m]))
    accuracy = _masked_accuracy(train_features, train_labels, test_features, test_labels,
                                _unit_mask(selected, dim), num_classes, l2)
    curve.append(UnitPoint(int(m), accuracy, selected))
  return curve


# ----------------------------------------------------------------------------------------
# The L1 path: a group lasso whose groups are units, solved by FISTA (accelerated ISTA).


class PathPoint(NamedTuple):
  """The group lasso at one alpha: its head and the units with a nonzero weight row."""

  alpha: float
  units: tuple[int, ...]  # ascending
  head: LinearHead


def _group_shrink(w: jax.Array, threshold) -> jax.Array:
  """The proximal map of threshold * sum_d ||w_d||: shrinks each unit's row towards 0."""
  norms = jnp.linalg.norm(w, axis=1, keepdims=True)
  return w * jnp.maximum(0, 1 - threshold / jnp.maximum(norms, jnp.finfo(w.dtype).tiny))


@jax.jit(static_argnames=("num_classes", "max_iters"))
def _group_lasso(features, labels, alpha, tol, *, num_classes: int, max_iters: int):
  problem = few_shot.centre(features, labels, num_classes, whiten=True)
  z, targets = problem.z, problem.targets
  n, dim = z.shape
  # 1 / Lipschitz constant of the loss's gradient, from the smaller of the two Gram matrices.
  gram = few_shot.dot(z, z.T) if n < dim else few_shot.dot(z.T, z)
  step = n / jnp.maximum(jnp.linalg.eigvalsh(gram)[-1], jnp.finfo(z.dtype).tiny)
  gradient = lambda w: few_shot.dot(z.T, few_shot.dot(z, w) - targets) / n

  def keep_going(state):
    return (state[3] < max_iters) & (state[4] > tol)

  def fista_step(state):
    w, y, t, i, _ = state
    w_next = _group_shrink(y - step * gradient(y), step * alpha)
    t_next = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
    y_next = w_next + (t - 1) / t_next * (w_next - w)
    change = jnp.max(jnp.abs(w_next - w)) / jnp.maximum(1, jnp.max(jnp.abs(w_next)))
    return w_next, y_next, t_next, i + 1, change

  w0 = jnp.zeros((dim, num_classes), z.dtype)
  state = (w0, w0, jnp.asarray(1, z.dtype), jnp.asarray(0), jnp.asarray(jnp.inf, z.dtype))
  w, *_ = jax.lax.while_loop(keep_going, fista_step, state)
  return few_shot.head(problem, w)


def group_lasso(features, labels, num_classes: int, alpha: float, *, max_iters: int = 20_000,
                tol: float = 1e-7) -> LinearHead:
  """min_W (1/2n) ||t - z W||^2 + alpha * sum_d ||W_d||, with z and t as in the ridge.

  z is the standardised features and t the centred +-1 targets, so this is sklearn's
  `MultiTaskLasso(alpha, fit_intercept=True)` on standardised features: a unit's weights over
  all classes enter or leave together. FISTA stops once no weight moves by more than `tol`
  (relative to the largest weight) in a step, or after `max_iters` steps.
  """
  linear_probe.check_inputs(features, labels, num_classes, who=WHO)
  if not (np.ndim(alpha) == 0 and float(alpha) >= 0):
    raise ConfigError(f"{WHO}: alpha must be a scalar >= 0, got {alpha!r}")
  return _group_lasso(jnp.asarray(features), jnp.asarray(labels), float(alpha), float(tol),
                      num_classes=int(num_classes), max_iters=int(max_iters))


def alpha_max(features, labels, num_classes: int) -> float:
  """The smallest alpha at which the group lasso keeps no unit: max_d ||z_d^T t|| / n."""
  linear_probe.check_inputs(features, labels, num_classes, who=WHO)
  problem = few_shot.centre(jnp.asarray(features), jnp.asarray(labels), num_classes,
                            whiten=True)
  correlations = few_shot.dot(problem.z.T, problem.targets) / problem.z.shape[0]
  return float(jnp.max(jnp.linalg.norm(correlations, axis=1)))


def l1_path(features, labels, num_classes: int, alphas: Sequence[float] | None = None,
            **solver) -> list[PathPoint]:
  """The group lasso at each alpha (default: 20 from alpha_max down to alpha_max / 1000); the
  order in which units enter as alpha falls is a ranking of them. One compilation for all."""
  linear_probe.check_inputs(features, labels, num_classes, who=WHO)
  if alphas is None:
    alphas = alpha_max(features, labels, num_classes) * np.geomspace(1, 1e-3, 20)
  path = []
  for alpha in alphas:
    fitted = group_lasso(features, labels, num_classes, alpha, **solver)
    units = np.flatnonzero(np.linalg.norm(np.asarray(fitted.w), axis=1) > 0)
    path.append(PathPoint(float(alpha), tuple(int(u) for u in units), fitted))
  return path
