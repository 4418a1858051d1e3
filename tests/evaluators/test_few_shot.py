"""Few-shot ridge evaluation against scikit-learn's RidgeClassifier, its draws, its compile
count and its input checks. Small shapes: each k of each (train, test) shape compiles once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier

from jaxml.errors import ConfigError
from jaxml.evaluators import few_shot, linear_probe

NUM_CLASSES = 4
DIM = 16
L2 = 0.1


def blobs(num_rows, seed, dim=DIM, separation=2.0):
  """Gaussian class blobs, shifted and scaled away from mean 0 / std 1 on purpose."""
  rng = np.random.default_rng(seed)
  centres = separation * np.random.default_rng(123).normal(size=(NUM_CLASSES, dim))
  labels = rng.integers(0, NUM_CLASSES, num_rows).astype(np.int32)
  features = (rng.normal(size=(num_rows, dim)) + centres[labels]) * 3 + 5
  return features.astype(np.float32), labels


@pytest.fixture(scope="module")
def data():
  return blobs(200, 0) + blobs(80, 1)


@pytest.mark.parametrize("whiten", [False, True])
def test_each_draw_equals_sklearn_ridge_classifier(data, whiten):
  train_x, train_y, test_x, test_y = data
  draws = 3
  for k in (1, 3, 8):  # n = 4, 12 (dual: n < D) and 32 (primal)
    indices = few_shot.draw_shots(train_y, NUM_CLASSES, k, draws, seed=k)
    heads = few_shot.fit_draws(jnp.asarray(train_x), jnp.asarray(train_y),
                               jnp.asarray(indices), L2, num_classes=NUM_CLASSES, whiten=whiten)
    accuracies = few_shot.draw_accuracies(
        jnp.asarray(train_x), jnp.asarray(train_y), jnp.asarray(indices), jnp.asarray(test_x),
        jnp.asarray(test_y), L2, num_classes=NUM_CLASSES, whiten=whiten)
    for d in range(draws):
      rows = np.float64(train_x[indices[d]])
      mean, std = rows.mean(0), (rows.std(0) if whiten else 1.0)
      model = RidgeClassifier(alpha=L2 * NUM_CLASSES * k, fit_intercept=True)
      model.fit((rows - mean) / std, train_y[indices[d]])
      reference = model.decision_function((np.float64(test_x) - mean) / std)
      head = jax.tree.map(lambda leaf, d=d: leaf[d], heads)
      ours = np.asarray(linear_probe.logits(head, jnp.asarray(test_x)))
      np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=1e-4)
      np.testing.assert_array_equal(np.argmax(ours, 1), model.predict((test_x - mean) / std))
      assert float(accuracies[d]) == pytest.approx(
          model.score((np.float64(test_x) - mean) / std, test_y), abs=1e-6)


def test_evaluate_reports_each_draw_and_its_mean_and_std(data):
  results = few_shot.evaluate(*data, NUM_CLASSES, shots=(1, 3), draws=4, l2=L2, seed=7)
  assert list(results) == [1, 3]
  for k, result in results.items():
    indices = few_shot.draw_shots(data[1], NUM_CLASSES, k, 4, seed=7)
    expected = few_shot.draw_accuracies(*(jnp.asarray(a) for a in (
        data[0], data[1], indices, data[2], data[3])), L2, num_classes=NUM_CLASSES)
    assert result.shots == k
    np.testing.assert_array_equal(result.accuracies, np.asarray(expected))
    assert result.mean == pytest.approx(np.mean(result.accuracies))
    assert result.std == pytest.approx(np.std(result.accuracies))
  assert few_shot.metrics(results, "fewshot/blobs") == {
      "fewshot/blobs/1shot": results[1].mean, "fewshot/blobs/1shot_std": results[1].std,
      "fewshot/blobs/3shot": results[3].mean, "fewshot/blobs/3shot_std": results[3].std}


def test_draws_are_seeded_distinct_and_k_per_class(data):
  labels = data[1]
  first = few_shot.draw_shots(labels, NUM_CLASSES, 5, 6, seed=3)
  np.testing.assert_array_equal(first, few_shot.draw_shots(labels, NUM_CLASSES, 5, 6, seed=3))
  assert not np.array_equal(first, few_shot.draw_shots(labels, NUM_CLASSES, 5, 6, seed=4))
  assert first.shape == (6, NUM_CLASSES * 5)
  for draw in first:
    assert len(set(draw.tolist())) == draw.size  # without replacement within a draw
    np.testing.assert_array_equal(labels[draw], np.repeat(np.arange(NUM_CLASSES), 5))
  assert len({tuple(draw) for draw in first}) == 6  # the draws differ from one another


def test_a_class_with_too_few_rows_is_named():
  labels = np.array([0] * 5 + [1] * 2 + [2] * 5, np.int32)
  with pytest.raises(ConfigError, match=r"3-shot .* class 1 has 2 .*\[5, 2, 5\]"):
    few_shot.draw_shots(labels, 3, 3, 2, seed=0)


def test_informative_features_beat_random_labels(data):
  train_x, train_y, test_x, test_y = data
  shuffled_y = np.random.default_rng(0).permutation(train_y)
  informative = few_shot.evaluate(*data, NUM_CLASSES, shots=(5,), draws=5, l2=L2)[5]
  random = few_shot.evaluate(train_x, shuffled_y, test_x, test_y, NUM_CLASSES, shots=(5,),
                             draws=5, l2=L2)[5]
  chance = np.bincount(test_y).max() / test_y.size
  assert informative.mean > 0.9
  assert random.mean < chance + 0.2
  assert informative.mean > random.mean + 0.5


def test_new_feature_values_at_the_same_k_do_not_recompile():
  dim = 12  # shapes no other test uses, so the first call's compilations are counted exactly
  train_x, train_y = blobs(60, 2, dim=dim)
  test_x, test_y = blobs(30, 3, dim=dim)
  before = few_shot.draw_accuracies._cache_size()
  first = few_shot.evaluate(train_x, train_y, test_x, test_y, NUM_CLASSES, shots=(1, 2),
                            draws=3, l2=L2)
  assert few_shot.draw_accuracies._cache_size() == before + 2  # one per k
  second = few_shot.evaluate(train_x * 2 - 1, train_y, test_x + 1, test_y, NUM_CLASSES,
                             shots=(1, 2), draws=3, l2=0.5, seed=9)
  assert few_shot.draw_accuracies._cache_size() == before + 2
  assert not np.array_equal(first[2].accuracies, second[2].accuracies)


def _bad(data, **changes):
  args = dict(zip(["train_features", "train_labels", "test_features", "test_labels"], data))
  args.update(num_classes=NUM_CLASSES, shots=(1,), draws=1, l2=L2)
  args.update(changes)
  return args


def _with_nan(features):
  features = features.copy()
  features[3, 2] = np.nan
  return features


@pytest.mark.parametrize("change, message", [
    (lambda d: {"train_features": _with_nan(d[0])}, r"\(train\): features contain NaN"),
    (lambda d: {"test_features": np.where(d[2] > 6, np.inf, d[2])},
     r"\(test\): features contain NaN or Inf"),
    (lambda d: {"train_labels": np.where(d[1] == 0, 4, d[1])}, r"labels must lie in \[0, 4\)"),
    (lambda d: {"test_labels": d[3] - 1}, r"\(test\): labels must lie in \[0, 4\)"),
    (lambda d: {"train_labels": d[1][:-1]}, r"labels must have shape \[200\]"),
    (lambda d: {"test_features": d[2][:, :-1]}, "train features have dim 16 but test"),
    (lambda d: {"train_labels": d[1].astype(np.float32)}, "labels must be integers"),
    (lambda d: {"shots": (1, 0)}, "each of shots must be an int >= 1, got 0"),
    (lambda d: {"shots": 5}, "shots must be a non-empty sequence"),
    (lambda d: {"draws": 0}, "draws must be an int >= 1"),
    (lambda d: {"l2": 0.0}, "l2 must be a scalar > 0"),
    (lambda d: {"num_classes": 1}, "num_classes must be an int >= 2"),
    (lambda d: {"shots": (100,)}, "100-shot needs 100 train rows per class"),
])
def test_each_bad_input_raises_one_config_error(data, change, message):
  with pytest.raises(ConfigError, match=message):
    few_shot.evaluate(**_bad(data, **change(data)))
