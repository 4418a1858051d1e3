"""The linear probe against scikit-learn, its own optimality conditions and its invariances.

Most fits share one shape (iris: 150 x 4, 3 classes) so that they share one compilation; the
solver's compile dominates this file's run time.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from scipy.special import log_softmax, softmax
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from jaxml.errors import ConfigError
from jaxml.evaluators import linear_probe

L2 = 1e-2
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def iris():
  features, labels = load_iris(return_X_y=True)
  return features.astype(np.float32), labels.astype(np.int32)


def reference_objective(w, b, features, labels, l2):
  """mean CE + (l2/2)||w||², in float64 NumPy, independent of the module under test."""
  log_probs = log_softmax(np.float64(features) @ np.float64(w) + np.float64(b), axis=1)
  return -log_probs[np.arange(len(labels)), labels].mean() + 0.5 * l2 * np.sum(np.square(w))


def sklearn_fit(features, labels, l2):
  # sklearn minimises C * sum(CE) + ||w||²/2; dividing by C*N gives ours when C = 1/(l2 N).
  model = LogisticRegression(C=1.0 / (l2 * len(labels)), tol=1e-10, max_iter=10_000)
  return model.fit(np.float64(features), labels)


@pytest.fixture(scope="module")
def raw_fit(iris):
  features, labels = iris
  return linear_probe.fit_with_info(features, labels, NUM_CLASSES, l2=L2, standardize=False)


@pytest.fixture(scope="module")
def standardized_head(iris):
  return linear_probe.fit(*iris, NUM_CLASSES, l2=L2)


def test_matches_sklearn_without_standardization(iris, raw_fit):
  features, labels = iris
  head, info = raw_fit
  reference = sklearn_fit(features, labels, L2)
  assert bool(info.converged)
  np.testing.assert_allclose(head.w, reference.coef_.T, atol=1e-3)
  # Both centre the bias (sklearn explicitly, ours by symmetry), so no shift to remove.
  np.testing.assert_allclose(head.b, reference.intercept_, atol=5e-3)
  np.testing.assert_allclose(softmax(np.asarray(linear_probe.logits(head, features)), axis=1),
                             reference.predict_proba(features), atol=1e-3)
  assert np.mean(np.asarray(linear_probe.predict(head, features))
                 == reference.predict(features)) >= 0.99
  ours = reference_objective(head.w, head.b, features, labels, L2)
  theirs = reference_objective(reference.coef_.T, reference.intercept_, features, labels, L2)
  np.testing.assert_allclose(float(info.objective), ours, rtol=1e-5)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_standardized_fit_matches_sklearn_on_standardized_features(iris, standardized_head):
  features, labels = iris
  # Population std (ddof=0) over the rows, as the probe documents.
  z = (np.float64(features) - features.mean(0)) / np.float64(features).std(0)
  reference = sklearn_fit(z, labels, L2)
  np.testing.assert_allclose(standardized_head.mean, features.mean(0), rtol=1e-5)
  np.testing.assert_allclose(standardized_head.scale, np.float64(features).std(0), rtol=1e-5)
  np.testing.assert_allclose(standardized_head.w, reference.coef_.T, atol=1e-3)
  np.testing.assert_allclose(standardized_head.b, reference.intercept_, atol=5e-3)


def test_gradient_vanishes_at_the_solution(iris, raw_fit):
  features, labels = jnp.asarray(iris[0]), jnp.asarray(iris[1])
  head, _ = raw_fit

  def objective(w, b):
    log_probs = jax.nn.log_softmax(features @ w + b)
    return (-jnp.take_along_axis(log_probs, labels[:, None], axis=1).mean()
            + 0.5 * L2 * jnp.sum(w**2))

  grad_w, grad_b = jax.grad(objective, argnums=(0, 1))(head.w, head.b)
  assert float(jnp.sqrt(jnp.sum(grad_w**2) + jnp.sum(grad_b**2))) < 1e-5


def padded(iris, num_padding=42, seed=0):
  """Iris with garbage rows (huge values, NaN, out-of-range labels) at random positions."""
  features, labels = iris
  rng = np.random.default_rng(seed)
  total = len(labels) + num_padding
  is_valid = np.zeros(total, bool)
  is_valid[rng.permutation(total)[:len(labels)]] = True
  all_features = rng.normal(scale=1e4, size=(total, features.shape[1])).astype(np.float32)
  all_features[np.flatnonzero(~is_valid)[:5], 0] = np.nan
  all_labels = rng.integers(-5, 99, size=total).astype(np.int32)
  all_features[is_valid], all_labels[is_valid] = features, labels
  return all_features, all_labels, is_valid


def assert_heads_close(head, other, atol=1e-4):
  for name in ("w", "b", "mean", "scale"):
    np.testing.assert_allclose(getattr(head, name), getattr(other, name), atol=atol,
                               rtol=1e-5, err_msg=name)


def test_padding_rows_are_ignored(iris, standardized_head):
  features, labels, is_valid = padded(iris)
  # A float mask, as a padded eval batch carries it.
  head = linear_probe.fit(features, labels, NUM_CLASSES, l2=L2, mask=is_valid.astype(float))
  assert_heads_close(head, standardized_head)
  assert float(linear_probe.accuracy(head, features, labels, is_valid)) == pytest.approx(
      float(linear_probe.accuracy(standardized_head, *iris)))


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_sharded_features_give_the_same_head(iris, standardized_head, axis_type):
  features, labels, is_valid = padded(iris)  # 192 rows: divisible by the 8 devices.
  mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
  rows = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    head = linear_probe.fit(jax.device_put(features, rows), jax.device_put(labels, rows),
                            NUM_CLASSES, l2=L2, mask=jax.device_put(is_valid, rows))
  assert_heads_close(head, standardized_head)


def test_standardization_is_invariant_to_affine_rescaling(iris, standardized_head):
  features, labels = iris
  scales = np.array([1e-3, -20.0, 1e3, 0.5], np.float32)  # a negative one flips a feature
  shifts = np.array([5.0, -1e2, 3.0, 0.0], np.float32)
  rescaled = features * scales + shifts
  head = linear_probe.fit(rescaled, labels, NUM_CLASSES, l2=L2)
  np.testing.assert_array_equal(linear_probe.predict(head, rescaled),
                                linear_probe.predict(standardized_head, features))
  np.testing.assert_allclose(linear_probe.logits(head, rescaled),
                             linear_probe.logits(standardized_head, features), atol=1e-3)
  np.testing.assert_allclose(head.w, standardized_head.w * np.sign(scales)[:, None], atol=1e-4)


def test_constant_features_get_unit_scale_and_zero_weight(iris):
  features, labels = iris
  features = features.copy()
  features[:, 1] = 7.3  # constant: its float32 mean need not be exactly 7.3
  features[:, 3] = 0.0  # all zero, like a dead ReLU unit
  head = linear_probe.fit(features, labels, NUM_CLASSES, l2=L2)
  np.testing.assert_array_equal(np.asarray(head.scale)[[1, 3]], [1.0, 1.0])
  np.testing.assert_array_equal(np.asarray(head.mean)[[1, 3]], np.float32([7.3, 0.0]))
  np.testing.assert_array_equal(np.asarray(head.w)[[1, 3]], np.zeros((2, NUM_CLASSES)))
  assert float(linear_probe.accuracy(head, features, labels)) > 0.9


def test_linearly_separable_data_is_fitted_exactly():
  rng = np.random.default_rng(1)
  # Same shape as iris (150 x 4, 3 classes), so the solver's compilation is reused.
  centres = 10.0 * np.eye(NUM_CLASSES, 4)
  labels = np.repeat(np.arange(NUM_CLASSES), 50).astype(np.int32)
  features = (centres[labels] + rng.normal(size=(150, 4))).astype(np.float32)
  head = linear_probe.fit(features, labels, NUM_CLASSES, l2=1e-4)
  assert float(linear_probe.accuracy(head, features, labels)) == 1.0


def test_evaluate_reports_floats_matching_an_independent_computation(iris):
  features, labels = iris
  is_test = np.arange(len(labels)) % 5 == 0
  result = linear_probe.evaluate(features, labels, features, labels, NUM_CLASSES, l2=L2,
                                 train_mask=~is_test, test_mask=is_test)
  assert {"train_accuracy", "test_accuracy", "test_loss"} <= set(result)
  assert all(type(value) is float for value in result.values())
  head = linear_probe.fit(features, labels, NUM_CLASSES, l2=L2, mask=~is_test)
  test_logits = np.asarray(linear_probe.logits(head, features[is_test]), np.float64)
  expected_loss = -log_softmax(test_logits, axis=1)[np.arange(is_test.sum()),
                                                    labels[is_test]].mean()
  assert result["test_loss"] == pytest.approx(expected_loss, rel=1e-3)
  assert result["test_accuracy"] == pytest.approx(
      np.mean(test_logits.argmax(1) == labels[is_test]))
  assert result["train_accuracy"] > 0.9
  chosen = linear_probe.evaluate(features, labels, features, labels, NUM_CLASSES, l2=None,
                                 train_mask=~is_test, test_mask=is_test)
  assert chosen["l2"] in linear_probe.DEFAULT_L2_GRID and chosen["test_accuracy"] > 0.9


def test_select_l2_picks_from_the_grid_deterministically(iris):
  features, labels = iris
  grid = (1e-3, 1e-1, 1e3)  # 1e3 shrinks w to ~0: chance-level held-out accuracy
  chosen = linear_probe.select_l2(features, labels, NUM_CLASSES, grid=grid)
  assert chosen in grid and chosen != 1e3
  assert linear_probe.select_l2(features, labels, NUM_CLASSES, grid=grid[::-1]) == chosen
  # The padded copy has the same valid rows, but the split is over its own row order.
  padded_features, padded_labels, is_valid = padded(iris)
  again = linear_probe.select_l2(padded_features, padded_labels, NUM_CLASSES, grid=grid,
                                 mask=is_valid)
  assert again in grid and again != 1e3


@pytest.mark.parametrize("features_shape, labels, kwargs, message", [
    ((150, 4), np.full(150, 3), {}, r"\[0, 3\)"),
    ((150, 4), np.full(150, -1), {}, r"\[0, 3\)"),
    ((150, 4), np.zeros(149, int), {}, "labels must have shape"),
    ((150,), np.zeros(150, int), {}, "2-D"),
    ((150, 4, 1), np.zeros(150, int), {}, "2-D"),
    ((150, 4), np.zeros(150), {}, "integers"),
    ((150, 4), np.zeros(150, int), {"mask": np.ones(149)}, "mask must have shape"),
    ((150, 4), np.zeros(150, int), {"mask": np.zeros(150)}, "no rows"),
    ((150, 4), np.zeros(150, int), {"num_classes": 1}, "num_classes"),
    ((150, 4), np.zeros(150, int), {"l2": -1.0}, "l2"),
])
def test_unusable_inputs_raise_config_error(features_shape, labels, kwargs, message):
  kwargs = {"num_classes": NUM_CLASSES, **kwargs}
  with pytest.raises(ConfigError, match=message):
    linear_probe.fit(np.zeros(features_shape, np.float32), labels, **kwargs)


def test_non_finite_valid_features_raise_config_error(iris):
  features, labels = iris
  features = features.copy()
  features[3, 1] = np.inf
  with pytest.raises(ConfigError, match="NaN or Inf"):
    linear_probe.fit(features, labels, NUM_CLASSES)
  with pytest.raises(ConfigError, match="dim"):
    linear_probe.evaluate(iris[0], labels, iris[0][:, :3], labels, NUM_CLASSES)
