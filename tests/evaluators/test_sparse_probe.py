"""Sparse unit probes: the all-units probe is the dense one bit for bit, a subset probe is the
ridge on those columns alone, and on data where only units 3 and 17 carry the label the top-2
selection finds exactly them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import MultiTaskLasso

from jaxml.errors import ConfigError
from jaxml.evaluators import few_shot, linear_probe, sparse_probe

NUM_CLASSES = 3
DIM = 24
CARRIERS = (3, 17)


def carrier_data(num_rows, seed):
  """Noise units of varied scale; units 3 and 17 shift with the class, together separating it."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, num_rows).astype(np.int32)
  features = rng.normal(size=(num_rows, DIM)) * rng.uniform(0.5, 20, DIM) + 3
  features[:, CARRIERS[0]] += 3 * np.array([-1.0, 0.0, 1.0])[labels] * features[:, 3].std()
  features[:, CARRIERS[1]] = np.array([2.0, -2.0, 0.0])[labels] + 0.5 * rng.normal(size=num_rows)
  return features.astype(np.float32), labels


@pytest.fixture(scope="module")
def data():
  return carrier_data(300, 0) + carrier_data(200, 1)


def test_all_units_is_the_dense_probe_exactly(data):
  train_x, train_y, test_x, test_y = data
  dense = sparse_probe.dense_probe(train_x, train_y, NUM_CLASSES)
  every = sparse_probe.fit_units(train_x, train_y, range(DIM), NUM_CLASSES)
  jax.tree.map(np.testing.assert_array_equal, every, dense)
  dense_accuracy = float(linear_probe.accuracy(dense, jnp.asarray(test_x), jnp.asarray(test_y)))
  curve = sparse_probe.unit_curve(train_x, train_y, test_x, test_y, NUM_CLASSES, units=(DIM,))
  assert curve == [sparse_probe.UnitPoint(DIM, dense_accuracy, tuple(range(DIM)))]
  # The dense probe is the standardised few-shot ridge on all train rows.
  jax.tree.map(np.testing.assert_array_equal, dense,
               few_shot.fit(jnp.asarray(train_x), jnp.asarray(train_y), NUM_CLASSES,
                            few_shot.DEFAULT_L2, whiten=True))


def test_a_subset_probe_is_the_ridge_on_those_columns_alone(data):
  train_x, train_y, test_x, _ = data
  units = [0, 3, 8, 17]
  head = sparse_probe.fit_units(train_x, train_y, units, NUM_CLASSES)
  alone = few_shot.fit(jnp.asarray(train_x[:, units]), jnp.asarray(train_y), NUM_CLASSES,
                       few_shot.DEFAULT_L2, whiten=True)
  others = np.setdiff1d(np.arange(DIM), units)
  np.testing.assert_array_equal(np.asarray(head.w)[others], 0)
  np.testing.assert_allclose(np.asarray(head.w)[units], alone.w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(linear_probe.logits(head, jnp.asarray(test_x)),
                             linear_probe.logits(alone, jnp.asarray(test_x[:, units])),
                             rtol=1e-5, atol=1e-5)


def test_top_two_units_are_the_carriers_and_nearly_match_all_units(data):
  train_x, train_y, test_x, test_y = data
  order, scores = sparse_probe.rank_units(train_x, train_y, NUM_CLASSES)
  assert set(order[:2].tolist()) == set(CARRIERS)
  assert scores[list(CARRIERS)].min() > 5 * np.delete(scores, CARRIERS).max()
  curve = sparse_probe.unit_curve(train_x, train_y, test_x, test_y, NUM_CLASSES)
  by_m = {point.num_units: point for point in curve}
  assert list(by_m) == [1, 2, 4, 8, 16, DIM]
  assert by_m[2].units == CARRIERS
  assert by_m[1].units[0] in CARRIERS
  assert by_m[2].accuracy > 0.9
  assert by_m[2].accuracy >= by_m[DIM].accuracy - 0.03
  chance = np.bincount(test_y).max() / test_y.size
  noise_unit = sparse_probe.unit_accuracy(train_x, train_y, test_x, test_y, [0], NUM_CLASSES)
  assert noise_unit < chance + 0.1
  assert by_m[2].accuracy > noise_unit + 0.4


@pytest.mark.parametrize("call, message", [
    (lambda d: sparse_probe.fit_units(d[0], d[1], [3, 3], NUM_CLASSES), "must be distinct"),
    (lambda d: sparse_probe.fit_units(d[0], d[1], [DIM], NUM_CLASSES), r"in \[0, 24\)"),
    (lambda d: sparse_probe.fit_units(d[0], d[1], [], NUM_CLASSES), "at least one"),
    (lambda d: sparse_probe.unit_curve(*d, NUM_CLASSES, units=(0, 2)), r"ints in \[1, 24\]"),
    (lambda d: sparse_probe.unit_curve(*d, NUM_CLASSES, units=(DIM + 1,)), r"ints in \[1, 24\]"),
    (lambda d: sparse_probe.dense_probe(d[0], d[1], NUM_CLASSES, l2=-1.0), "l2 must be"),
    (lambda d: sparse_probe.rank_units(d[0], d[1] + 1, NUM_CLASSES), r"lie in \[0, 3\)"),
    (lambda d: sparse_probe.unit_curve(d[0], d[1], d[2][:, :5], d[3], NUM_CLASSES),
     "train features have dim 24 but test features 5"),
])
def test_each_bad_input_raises_one_config_error(data, call, message):
  with pytest.raises(ConfigError, match=message):
    call(data)


def standardised(features):
  features = np.float64(features)
  return (features - features.mean(0)) / features.std(0)


def test_group_lasso_equals_sklearn_multi_task_lasso(data):
  train_x, train_y = data[:2]
  targets = 2 * np.eye(NUM_CLASSES)[train_y] - 1
  top = sparse_probe.alpha_max(train_x, train_y, NUM_CLASSES)
  compiled = []
  for alpha in (1.01 * top, 0.5 * top, 0.01 * top, 1e-3):
    head = sparse_probe.group_lasso(train_x, train_y, NUM_CLASSES, alpha)
    compiled.append(sparse_probe._group_lasso._cache_size())
    reference = MultiTaskLasso(alpha=alpha, fit_intercept=True, tol=1e-12, max_iter=100_000)
    reference.fit(standardised(train_x), targets)
    np.testing.assert_allclose(head.w, reference.coef_.T, atol=1e-4)
    np.testing.assert_array_equal(np.linalg.norm(head.w, axis=1) > 0,
                                  np.linalg.norm(reference.coef_, axis=0) > 0)
    np.testing.assert_allclose(linear_probe.logits(head, jnp.asarray(train_x)),
                               reference.predict(standardised(train_x)), atol=1e-4)
  assert compiled == compiled[:1] * 4  # alpha is traced: one compilation serves every alpha


def test_l1_path_admits_the_carriers_first(data):
  train_x, train_y = data[:2]
  path = sparse_probe.l1_path(train_x, train_y, NUM_CLASSES)
  assert path[0].units == ()  # the default grid starts at alpha_max
  first = next(point.units for point in path if point.units)
  assert first == CARRIERS
  assert len(path[-1].units) > 2  # weaker penalties admit noise units too
  sizes = [len(point.units) for point in path]
  assert sizes == sorted(sizes)
