"""The odour fingerprint baselines: they learn labels that depend on the features (far above the
same model taught shuffled labels), each column equals a scikit-learn model fitted directly
(with an independent Tanimoto distance for k-NN), labels with one class in training give a
constant column, tuning picks the best validation point, and bad names and inputs are named."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from jaxml.errors import ConfigError
from jaxml.evaluators import ranking
from jaxml.studies import odor_peers

FAST = {"random_forest": {"n_estimators": 60}, "knn": {}, "logistic": {}}


def counts_problem(seed=0, n=400, features=48, num_labels=4, counts=True):
  """Sparse non-negative features (counts, or continuous for tie-free distances) and labels
  that each depend on their own block of 8 features, with label noise."""
  rng = np.random.default_rng(seed)
  x = rng.poisson(0.6, (n, features)).astype(np.float32)
  if not counts:
    x *= rng.gamma(2.0, 1.0, x.shape).astype(np.float32)
  blocks = x[:, :8 * num_labels].reshape(n, num_labels, 8).sum(axis=2)
  noisy = blocks + rng.normal(0, 1.0, blocks.shape)
  y = (noisy > np.quantile(noisy, 0.7, axis=0)).astype(np.int8)
  return x[:n // 2], y[:n // 2], x[n // 2:], y[n // 2:]


def python_tanimoto(a, b):
  """1 - a.b / (a.a + b.b - a.b), one pair at a time, as scikit-learn calls a metric."""
  dot = float(np.dot(a, b))
  return 1.0 - dot / (float(np.dot(a, a)) + float(np.dot(b, b)) - dot)


def sklearn_column(name, train_x, train_y, test_x, seed, label):
  """The probability of `label` from a scikit-learn model built here from the settings the
  module documents (the forest is multi-output, so it is fitted on every label)."""
  if name == "random_forest":
    model = RandomForestClassifier(n_estimators=60, min_samples_leaf=3, max_features="sqrt",
                                   random_state=seed)
    target = train_y if train_y.shape[1] > 1 else train_y[:, 0]
    proba = model.fit(train_x, target).predict_proba(test_x)
    return (proba[label] if train_y.shape[1] > 1 else proba)[:, 1]
  if name == "knn":
    model = KNeighborsClassifier(50, weights="distance", algorithm="brute",
                                 metric=python_tanimoto)
    return model.fit(train_x, train_y[:, label]).predict_proba(test_x)[:, 1]
  model = LogisticRegression(C=0.3, solver="liblinear", intercept_scaling=10.0, max_iter=1000,
                             random_state=seed)
  return model.fit(np.log1p(train_x), train_y[:, label]).predict_proba(np.log1p(test_x))[:, 1]


@pytest.mark.parametrize("name", odor_peers.BASELINES)
def test_each_baseline_learns_far_above_shuffled_labels(name):
  train_x, train_y, test_x, test_y = counts_problem()
  shuffled = train_y[np.random.default_rng(1).permutation(len(train_y))]
  learnt = odor_peers.fit_predict(name, train_x, train_y, test_x, 0, **FAST[name])
  control = odor_peers.fit_predict(name, train_x, shuffled, test_x, 0, **FAST[name])

  assert learnt.shape == control.shape == test_y.shape
  real = ranking.multilabel_summary(learnt, test_y)["auroc/macro"]
  chance = ranking.multilabel_summary(control, test_y)["auroc/macro"]
  assert real - chance > 0.2, (real, chance)


@pytest.mark.parametrize("name", odor_peers.BASELINES)
@pytest.mark.parametrize("num_labels", [1, 3])
def test_columns_equal_scikit_learn_fitted_directly(name, num_labels):
  train_x, train_y, test_x, _ = counts_problem(seed=2, n=160, num_labels=num_labels,
                                               counts=name != "knn")
  scores = odor_peers.fit_predict(name, train_x, train_y, test_x, 7, **FAST[name])

  assert scores.shape == (len(test_x), num_labels)
  for label in range(num_labels):
    np.testing.assert_allclose(
        scores[:, label], sklearn_column(name, train_x, train_y, test_x, 7, label),
        rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", odor_peers.BASELINES)
def test_a_label_with_one_class_in_training_gives_a_constant_column(name):
  train_x, train_y, test_x, _ = counts_problem(seed=3, n=120)
  train_y[:, 1], train_y[:, 2] = 0, 1
  scores = odor_peers.fit_predict(name, train_x, train_y, test_x, 0, **FAST[name])

  np.testing.assert_array_equal(scores[:, 1], np.zeros(len(test_x)))
  np.testing.assert_array_equal(scores[:, 2], np.ones(len(test_x)))
  assert np.ptp(scores[:, 0]) > 0  # the others still vary


def test_tanimoto_distance_equals_the_pairwise_definition():
  rng = np.random.default_rng(4)
  a = rng.poisson(1.0, (5, 9)).astype(float)
  b = np.vstack([rng.poisson(1.0, (3, 9)), a[:1]])
  a[4] = 0  # an empty fingerprint: Tanimoto 0 to the others
  expected = [[1.0 if not u.any() else python_tanimoto(u, v) for v in b] for u in a]
  distance = odor_peers.tanimoto_distance(a, b)
  np.testing.assert_allclose(distance, expected, atol=1e-12)
  assert distance[0, 3] == 0.0
  assert odor_peers.tanimoto_distance(np.zeros((1, 3)), np.zeros((1, 3)))[0, 0] == 0.0


@pytest.mark.parametrize("name, grid", [
    ("random_forest", {"n_estimators": (30,), "min_samples_leaf": (20, 1)}),
    ("knn", {"n_neighbors": (1, 15), "weights": ("uniform", "distance")}),
    ("logistic", {"C": (0.001, 1.0)}),
])
def test_tune_picks_the_best_validation_macro_auroc(name, grid):
  train_x, train_y, _, _ = counts_problem(seed=5, n=300)
  fit, held = odor_peers.inner_split(len(train_x), 5, 0.25)
  assert sorted(np.concatenate([fit, held]).tolist()) == list(range(len(train_x)))
  assert len(held) == 38

  expected = []
  for point in odor_peers.grid_points(grid):
    scores = odor_peers.fit_predict(name, train_x[fit], train_y[fit], train_x[held], 5,
                                    **point)
    expected.append(metrics.roc_auc_score(train_y[held], scores, average="macro"))
  best = odor_peers.grid_points(grid)[int(np.argmax(expected))]

  assert odor_peers.tune(name, train_x, train_y, 5, grid, validation_fraction=0.25) == best
  got = odor_peers.validation_scores(name, train_x, train_y, 5, grid, 0.25)
  np.testing.assert_allclose([value for _, value in got], expected, atol=1e-12)


def test_tune_keeps_the_first_of_tied_settings():
  train_x, train_y, _, _ = counts_problem(seed=5, n=300)
  grid = {"n_neighbors": (1,), "weights": ("distance", "uniform")}  # one neighbour: the same
  (_, first), (_, second) = odor_peers.validation_scores("knn", train_x, train_y, 5, grid)
  assert first == second
  assert odor_peers.tune("knn", train_x, train_y, 5, grid) == {"n_neighbors": 1,
                                                                "weights": "distance"}


def test_default_grids_name_only_known_settings():
  for name in odor_peers.BASELINES:
    for point in odor_peers.grid_points(odor_peers.GRIDS[name]):
      odor_peers.settings_of(name, point)
  assert len(odor_peers.grid_points(odor_peers.GRIDS["knn"])) == 10


@pytest.mark.parametrize("call, message", [
    (lambda x, y: odor_peers.fit_predict("svm", x, y, x, 0), "unknown odour baseline 'svm'"),
    (lambda x, y: odor_peers.fit_predict("knn", x, y, x, 0, k=3), "unknown setting.*k .*"
     "n_neighbors"),
    (lambda x, y: odor_peers.fit_predict("knn", -x, y, x, 0), "non-negative"),
    (lambda x, y: odor_peers.fit_predict("knn", x, y + 1, x, 0), "0/1"),
    (lambda x, y: odor_peers.fit_predict("knn", x, y[1:], x, 0), "rows of train_x"),
    (lambda x, y: odor_peers.fit_predict("knn", x, y, x[:, 1:], 0), "features"),
    (lambda x, y: odor_peers.tune("knn", x, y, 0, validation_fraction=1.5), "fraction"),
    (lambda x, y: odor_peers.tune("logistic", x, np.zeros_like(y), 0), "both classes"),
])
def test_bad_names_and_inputs_are_named(call, message):
  x, y, _, _ = counts_problem(seed=6, n=40)
  with pytest.raises(ConfigError, match=message):
    call(x, y)
