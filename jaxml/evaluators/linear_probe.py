"""Linear probe: a softmax head fitted on frozen features, to high precision, with no I/O.

The probe solves, over the valid rows (mask != 0) of `features` [N, D] and `labels` [N],

    mean_i CE(softmax(z_i @ w + b), y_i) + (l2 / 2) * ||w||²      (bias not regularised)

where z = (features - mean) / scale is the standardised feature (mean 0, scale 1 when
`standardize=False`). The objective is smooth and, for l2 > 0, strongly convex in w, so a
full-batch L-BFGS run to a small gradient norm lands on *the* optimum: the probe's score then
measures the encoder, not the probe's optimiser, and is deterministic. The solver is
`optax.lbfgs` (zoom line search) inside one jitted `jax.lax.while_loop`.

`l2` acts on the weights in standardised space, so one grid of l2 values suits encoders
whose features have very different scales. Padding rows (mask 0), as produced by sharded
feature extraction, are ignored exactly: they are zeroed before use (so NaN garbage cannot
leak through `0 * nan`) and weigh 0 in every sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxml.errors import ConfigError

# float32 resolves ~7 significant digits: a feature whose spread is below 1e-6 of its
# magnitude is round-off around a constant, so its scale is floored there instead of being
# blown up to unit variance. Exactly constant features (and all-zero ones, e.g. dead ReLUs)
# get scale 1 and are centred on their value, so they are exactly 0 and carry zero weight.
RELATIVE_SCALE_FLOOR = 1e-6

DEFAULT_L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@flax.struct.dataclass
class LinearHead:
  """logits = ((features - mean) / scale) @ w + b."""

  w: jax.Array      # [D, C], in standardised space
  b: jax.Array      # [C], centred (softmax is invariant to a shift of b)
  mean: jax.Array   # [D]
  scale: jax.Array  # [D]


class FitInfo(NamedTuple):
  """How the solve ended: `converged` is grad_norm <= tol; if False, max_iters was hit (or
  the objective became non-finite, which input checks make unlikely)."""

  objective: jax.Array  # regularised training objective at the returned head
  grad_norm: jax.Array  # L2 norm of its gradient w.r.t. (w, b), in standardised space
  num_iters: jax.Array
  converged: jax.Array


# ----------------------------------------------------------------------------------------
# Prediction.


def logits(head: LinearHead, features: jax.Array) -> jax.Array:
  """[N, C] logits of the head on raw (unstandardised) features [N, D]."""
  z = (features - head.mean) / head.scale
  return z @ head.w + head.b


def predict(head: LinearHead, features: jax.Array) -> jax.Array:
  """[N] predicted class ids."""
  return jnp.argmax(logits(head, features), axis=-1)


def _valid_rows(num_rows: int, mask) -> jax.Array:
  if mask is None:
    return jnp.ones((num_rows,), bool)
  # `!=` against a Python 0 yields a weakly typed bool, which would split the jit cache.
  return (jnp.asarray(mask) != 0).astype(bool)


def _mean_weights(valid: jax.Array, dtype) -> jax.Array:
  """Per-row weights summing to 1 over valid rows (0 for padding, all 0 if none valid)."""
  return valid.astype(dtype) / jnp.maximum(jnp.sum(valid), 1).astype(dtype)


@jax.jit
def accuracy(head: LinearHead, features, labels, mask=None) -> jax.Array:
  """Fraction of valid rows whose predicted class equals the label."""
  valid = _valid_rows(labels.shape[0], mask)
  # Integer counts, so that all-correct is exactly 1.0 rather than a float32 sum of 1/N.
  correct = jnp.sum(valid & (predict(head, features) == labels))
  return correct / jnp.maximum(jnp.sum(valid), 1)


@jax.jit
def loss(head: LinearHead, features, labels, mask=None) -> jax.Array:
  """Mean softmax cross-entropy over valid rows (no l2 term): the probe's test loss."""
  valid = _valid_rows(labels.shape[0], mask)
  x = jnp.where(valid[:, None], features, 0)
  per_row = optax.softmax_cross_entropy_with_integer_labels(
      logits(head, x), jnp.where(valid, labels, 0))
  return jnp.sum(_mean_weights(valid, per_row.dtype) * per_row)


# ----------------------------------------------------------------------------------------
# Fitting.


def feature_stats(features: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean [D], scale [D]) of `features` [N, D] over the rows where `valid` [N] is True."""
  # Sums rather than `weights @ features`: a matmul contracting the row axis needs an explicit
  # out_sharding when rows are sharded on an Explicit mesh; a reduction does not.
  weights = _mean_weights(valid, features.dtype)[:, None]
  valid = valid[:, None]
  mean = jnp.sum(weights * features, axis=0)
  std = jnp.sqrt(jnp.sum(weights * jnp.square(features - mean), axis=0))
  high = jnp.max(jnp.where(valid, features, -jnp.inf), axis=0)
  low = jnp.min(jnp.where(valid, features, jnp.inf), axis=0)
  constant = high <= low
  magnitude = jnp.maximum(jnp.abs(high), jnp.abs(low))
  scale = jnp.where(constant, 1.0, jnp.maximum(std, RELATIVE_SCALE_FLOOR * magnitude))
  # The mean of n copies of c is not always exactly c in floating point; `low` is.
  mean = jnp.where(constant, low, mean)
  return mean, scale.astype(features.dtype)


def _objective(params, z, labels, weights, l2):
  """Weighted mean cross-entropy plus (l2/2)||w||²; padding rows have weight 0."""
  per_row = optax.softmax_cross_entropy_with_integer_labels(z @ params["w"] + params["b"],
                                                            labels)
  return jnp.sum(weights * per_row) + 0.5 * l2 * jnp.sum(jnp.square(params["w"]))


def _minimize_lbfgs(fun, init_params, max_iters: int, tol):
  """Full-batch L-BFGS on `fun` until ||grad|| <= tol or max_iters; returns (params, info).

  Keeps the best iterate by objective value: when the zoom line search fails it still takes
  a step, which may go uphill. Near float32's precision floor values differ by round-off
  only, so a new iterate counts as best unless it is worse by more than that round-off;
  there the latest iterate, with the smallest gradient, is the one to keep.
  """
  solver = optax.lbfgs()  # memory 10, zoom line search (20 steps, initial guess 1).
  value_and_grad = optax.value_and_grad_from_state(fun)
  round_off = 16 * jnp.finfo(jax.tree.leaves(init_params)[0].dtype).eps

  def keep_going(carry):
    _, _, step, value, grad_norm, _, _ = carry
    return (step < max_iters) & (grad_norm > tol) & jnp.isfinite(value)

  def lbfgs_step(carry):
    params, state, step, _, _, best, best_stats = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=fun)
    params = optax.apply_updates(params, updates)
    # The line search already evaluated value and gradient at the new params.
    value = optax.tree_utils.tree_get(state, "value")
    grad_norm = optax.tree_utils.tree_norm(optax.tree_utils.tree_get(state, "grad"))
    better = value <= best_stats[0] + round_off * jnp.abs(best_stats[0])
    best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best)
    best_stats = jax.tree.map(lambda new, old: jnp.where(better, new, old),
                              (value, grad_norm), best_stats)
    return params, state, step + 1, value, grad_norm, best, best_stats

  value, grad = jax.value_and_grad(fun)(init_params)
  grad_norm = optax.tree_utils.tree_norm(grad)
  carry = (init_params, solver.init(init_params), jnp.asarray(0), value, grad_norm,
           init_params, (value, grad_norm))
  _, _, steps, _, _, best, (best_value, best_grad_norm) = jax.lax.while_loop(
      keep_going, lbfgs_step, carry)
  return best, FitInfo(best_value, best_grad_norm, steps, best_grad_norm <= tol)


@jax.jit(static_argnames=("num_classes", "max_iters", "standardize"))
def _fit_jitted(features, labels, mask, l2, tol, *, num_classes, max_iters, standardize):
  dtype = jnp.promote_types(features.dtype, jnp.float32)
  valid = mask != 0
  weights = _mean_weights(valid, dtype)
  x = jnp.where(valid[:, None], features.astype(dtype), 0)
  labels = jnp.where(valid, labels, 0)
  if standardize:
    mean, scale = feature_stats(x, valid)
  else:
    mean, scale = jnp.zeros(x.shape[1], dtype), jnp.ones(x.shape[1], dtype)
  z = jnp.where(valid[:, None], (x - mean) / scale, 0)
  # Zero init keeps every iterate's bias (and each row of w) summing to 0 over classes,
  # since every gradient does: the optimum is then unique, not defined up to a shift.
  init = {"w": jnp.zeros((x.shape[1], num_classes), dtype), "b": jnp.zeros(num_classes, dtype)}
  l2 = jnp.asarray(l2, dtype)
  params, info = _minimize_lbfgs(
      lambda p: _objective(p, z, labels, weights, l2), init, max_iters, tol)
  b = params["b"] - jnp.mean(params["b"])
  return LinearHead(w=params["w"], b=b, mean=mean, scale=scale), info


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


@jax.jit
def _all_finite(features, valid) -> jax.Array:
  """On device, so that one bool comes back to the host rather than the features."""
  return jnp.all(jnp.isfinite(jnp.where(valid[:, None], features, 0)))


def check_inputs(features, labels, num_classes, mask=None, *, name: str = "",
                 who: str = "linear probe") -> None:
  """Raises ConfigError for inputs a probe cannot use; value checks only on concrete arrays.

  `who` and `name` start each message ("linear probe (test): ..."), so that evaluators built
  on these heads (few-shot, sparse probes) report under their own name.
  """
  where = f"{who} ({name})" if name else who
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
      or num_classes < 2:
    raise ConfigError(f"{where}: num_classes must be an int >= 2, got {num_classes!r}")
  if np.ndim(features) != 2:
    raise ConfigError(f"{where}: features must be 2-D [N, D], got shape "
                      f"{np.shape(features)}")
  if np.ndim(labels) != 1 or np.shape(labels)[0] != np.shape(features)[0]:
    raise ConfigError(f"{where}: labels must have shape [{np.shape(features)[0]}] "
                      f"to match features {np.shape(features)}, got {np.shape(labels)}")
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise ConfigError(f"{where}: labels must be integers, got dtype "
                      f"{jnp.result_type(labels)}")
  if mask is not None and np.shape(mask) != np.shape(labels):
    raise ConfigError(f"{where}: mask must have shape {np.shape(labels)}, got "
                      f"{np.shape(mask)}")
  if not (_is_concrete(labels) and (mask is None or _is_concrete(mask))):
    return
  valid = np.ones(np.shape(labels), bool) if mask is None else np.asarray(mask) != 0
  if not valid.any():
    raise ConfigError(f"{where}: the mask selects no rows")
  valid_labels = np.asarray(labels)[valid]
  bad = (valid_labels < 0) | (valid_labels >= num_classes)
  if bad.any():
    raise ConfigError(f"{where}: labels must lie in [0, {num_classes}), found "
                      f"{valid_labels[bad][0]} ({int(bad.sum())} such rows)")
  if _is_concrete(features) and not bool(_all_finite(features, valid)):
    raise ConfigError(f"{where}: features contain NaN or Inf in valid rows")


def fit_with_info(features, labels, num_classes: int, *, l2: float = 1e-4, mask=None,
                  max_iters: int = 500, tol: float = 1e-6,
                  standardize: bool = True) -> tuple[LinearHead, FitInfo]:
  """`fit`, also returning how the solve ended (objective, gradient norm, iterations)."""
  check_inputs(features, labels, num_classes, mask)
  if not (np.isscalar(l2) or np.ndim(l2) == 0) or (_is_concrete(l2) and not l2 >= 0):
    raise ConfigError(f"linear probe: l2 must be a scalar >= 0, got {l2!r}")
  if not isinstance(max_iters, (int, np.integer)) or max_iters < 1:
    raise ConfigError(f"linear probe: max_iters must be an int >= 1, got {max_iters!r}")
  if _is_concrete(tol) and not tol >= 0:
    raise ConfigError(f"linear probe: tol must be >= 0, got {tol!r}")
  # Always an array, so that fits with and without a mask share one compilation.
  mask = _valid_rows(np.shape(labels)[0], mask)
  return _fit_jitted(jnp.asarray(features), jnp.asarray(labels), mask, l2, tol,
                     num_classes=int(num_classes), max_iters=int(max_iters),
                     standardize=bool(standardize))


def fit(features, labels, num_classes: int, *, l2: float = 1e-4, mask=None,
        max_iters: int = 500, tol: float = 1e-6, standardize: bool = True) -> LinearHead:
  """Fits the probe's softmax head on frozen `features` [N, D] with int `labels` [N].

  Args:
    features: [N, D] float features; rows with mask 0 may hold anything, even NaN.
    labels: [N] ints in [0, num_classes) on valid rows.
    num_classes: C, the width of the head.
    l2: weight of (l2/2)||w||² next to the *mean* cross-entropy (sklearn's C = 1/(l2 N)).
    mask: optional [N] bool/float; rows where it is 0 are ignored exactly.
    max_iters: cap on L-BFGS iterations. With l2=0 on separable data there is no finite
      optimum, and the solve runs to this cap.
    tol: stop once the objective's gradient norm (standardised space) is <= tol.
    standardize: centre and scale each feature over the valid rows first; the head stores
      the transform, so `logits`/`predict` take raw features.

  Returns:
    The fitted `LinearHead`. `fit_with_info` also says whether the solve converged.
  """
  head, _ = fit_with_info(features, labels, num_classes, l2=l2, mask=mask,
                          max_iters=max_iters, tol=tol, standardize=standardize)
  return head


# ----------------------------------------------------------------------------------------
# Convenience for the runner and for choosing l2.


def _holdout_masks(valid: np.ndarray, val_fraction: float, seed: int):
  """Deterministic disjoint (train, val) masks over the valid rows, same length as `valid`."""
  rows = np.flatnonzero(valid)
  num_val = int(round(val_fraction * rows.size))
  if not 0 < num_val < rows.size:
    raise ConfigError(f"select_l2: val_fraction={val_fraction} of {rows.size} valid rows "
                      "leaves no train or no validation rows")
  val_rows = np.random.default_rng(seed).permutation(rows)[:num_val]
  val = np.zeros(valid.shape, bool)
  val[val_rows] = True
  return valid & ~val, val


def select_l2(features, labels, num_classes: int, *, grid: Sequence[float] = DEFAULT_L2_GRID,
              val_fraction: float = 0.2, seed: int = 0, mask=None, max_iters: int = 500,
              tol: float = 1e-6, standardize: bool = True) -> float:
  """The grid's l2 with the best held-out accuracy (ties: lower held-out loss, then smaller l2).

  The split is a seeded permutation of the valid rows, expressed as two masks over all N
  rows, so every grid point reuses one compiled solve (l2 is traced, not static).
  """
  check_inputs(features, labels, num_classes, mask, name="select_l2")
  if not grid or any(not float(l2) >= 0 for l2 in grid):
    raise ConfigError(f"select_l2: grid must be a non-empty sequence of l2 >= 0, got {grid!r}")
  if not 0 < val_fraction < 1:
    raise ConfigError(f"select_l2: val_fraction must be in (0, 1), got {val_fraction}")
  valid = np.ones(np.shape(labels), bool) if mask is None else np.asarray(mask) != 0
  train_mask, val_mask = _holdout_masks(valid, val_fraction, seed)
  features, labels = jnp.asarray(features), jnp.asarray(labels)
  scores = []
  for l2 in sorted(float(l2) for l2 in grid):
    head = fit(features, labels, num_classes, l2=l2, mask=train_mask, max_iters=max_iters,
               tol=tol, standardize=standardize)
    val_accuracy = float(accuracy(head, features, labels, val_mask))
    val_loss = float(loss(head, features, labels, val_mask))
    scores.append((-val_accuracy, val_loss, l2))
  return min(scores)[2]


def evaluate(train_features, train_labels, test_features, test_labels, num_classes: int, *,
             l2: float | None = 1e-4, train_mask=None, test_mask=None,
             standardize: bool = True) -> dict[str, float]:
  """Fits on the train features, scores on the test ones; `l2=None` picks it by `select_l2`.

  Returns Python floats: train_accuracy, test_accuracy, train_loss and test_loss (mean
  cross-entropy without the l2 term), l2 (the one used) and converged (1.0 or 0.0).
  """
  check_inputs(test_features, test_labels, num_classes, test_mask, name="test")
  if np.shape(test_features)[1] != np.shape(train_features)[1]:
    raise ConfigError(f"linear probe: train features have dim {np.shape(train_features)[1]} "
                      f"but test features {np.shape(test_features)[1]}")
  if l2 is None:
    l2 = select_l2(train_features, train_labels, num_classes, mask=train_mask,
                   standardize=standardize)
  head, info = fit_with_info(train_features, train_labels, num_classes, l2=l2,
                             mask=train_mask, standardize=standardize)
  return {
      "train_accuracy": float(accuracy(head, train_features, train_labels, train_mask)),
      "test_accuracy": float(accuracy(head, test_features, test_labels, test_mask)),
      "train_loss": float(loss(head, train_features, train_labels, train_mask)),
      "test_loss": float(loss(head, test_features, test_labels, test_mask)),
      "l2": float(l2),
      "converged": float(info.converged),
  }
