"""Digit attributes: the extractors pinned on hand-made images, balanced binning, seeded rater
noise, and on real digits attributes that are neither constant nor the digit class."""

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.digit_attributes import (ATTRIBUTES, attribute_labels, bin_edges, rater_noise,
                                         size, slant, stroke_thickness, to_classes)
from jaxml.errors import ConfigError


def _canvas(*pixels, shape=(8, 8)):
  """One image [1, H, W] with ink 1 at the given (row, col) pixels."""
  image = np.zeros((1, *shape))
  for row, col in pixels:
    image[0, row, col] = 1.0
  return image


def _bar(rows, cols):
  return _canvas(*[(r, c) for r in rows for c in cols])


def test_thickness_orders_bars_and_matches_its_closed_form():
  thin, thick = _bar(range(1, 7), [3]), _bar(range(1, 7), [2, 3, 4])
  # 2 * mass / boundary: a 1 x 6 bar has mass 6 and boundary 2 * 6 + 2, so 6 / 7.
  assert stroke_thickness(thin)[0] == pytest.approx(6 / 7)
  assert stroke_thickness(thick)[0] == pytest.approx(3 * 6 / (3 + 6))
  assert stroke_thickness(thick)[0] > 2 * stroke_thickness(thin)[0]
  np.testing.assert_allclose(stroke_thickness(np.zeros((1, 8, 8))), [0.0])


def test_slant_sign_follows_the_lean_and_equals_the_moment_ratio():
  right = _canvas((0, 1), (1, 0))  # top pixel right of the bottom one
  left = _canvas((0, 0), (1, 1))
  # y up: x = (1, 0), y = (0, -1); mu11 = 2 * 0.5 * 0.5, mu02 = 2 * 0.5**2, so 1 and -1.
  assert slant(right)[0] == pytest.approx(1.0)
  assert slant(left)[0] == pytest.approx(-1.0)
  # Three pixels: x = (2, 1, 1), y = (0, -1, -2); means 4/3, -1; mu11 = 2/3 + 0 + 1/3, mu02 = 2.
  assert slant(_canvas((0, 2), (1, 1), (2, 1)))[0] == pytest.approx(0.5)
  assert slant(_bar(range(2, 6), [4]))[0] == 0.0
  assert slant(_bar([3], range(2, 6)))[0] == 0.0  # no vertical extent


def test_size_is_the_bar_height_and_orders_tall_over_short():
  tall, short = _bar(range(1, 8), [2, 3]), _bar(range(3, 6), [2, 3])
  assert size(tall)[0] == pytest.approx(7.0)
  assert size(short)[0] == pytest.approx(3.0)
  assert size(_canvas((4, 4)))[0] == pytest.approx(1.0)


def test_trailing_channel_is_accepted():
  images = np.concatenate([_bar(range(1, 7), [3]), _canvas((0, 1), (1, 0))])
  for extract in (stroke_thickness, slant, size):
    np.testing.assert_array_equal(extract(images[..., None]), extract(images))


@pytest.mark.parametrize("images, problem", [
    (np.zeros((8, 8)), "shape"),
    (np.zeros((2, 8, 8, 3)), "shape"),
    (np.zeros((0, 8, 8)), "non-empty"),
    (np.full((1, 8, 8), np.nan), "finite"),
    (np.full((1, 8, 8), 2.0), r"\[0, 1\]"),
])
def test_bad_images_are_config_errors(images, problem):
  for extract in (stroke_thickness, slant, size):
    with pytest.raises(ConfigError, match=problem):
      extract(images)


@pytest.mark.parametrize("num, num_bins", [(30, 3), (31, 3), (32, 3), (10, 4), (7, 2), (101, 5)])
def test_bin_edges_balance_distinct_training_values(num, num_bins):
  values = np.random.default_rng(num).permutation(np.arange(num) ** 1.5)
  classes = to_classes(values, bin_edges(values, num_bins))
  counts = np.bincount(classes, minlength=num_bins)
  assert classes.dtype == np.int32 and counts.sum() == num and len(counts) == num_bins
  assert counts.max() - counts.min() <= 1


def test_to_classes_is_monotone():
  edges = bin_edges(np.arange(9.0), 3)
  np.testing.assert_allclose(edges, [2.5, 5.5])
  values = np.linspace(-5, 15, 201)
  classes = to_classes(values, edges)
  assert np.all(np.diff(classes) >= 0) and set(classes.tolist()) == {0, 1, 2}
  np.testing.assert_array_equal(to_classes([2.4, 2.5, 5.6], edges), [0, 1, 2])


def test_binning_rejects_bad_input():
  with pytest.raises(ConfigError, match="num_bins"):
    bin_edges(np.arange(9.0), 1)
  with pytest.raises(ConfigError, match="at least num_bins"):
    bin_edges(np.arange(2.0), 3)
  with pytest.raises(ConfigError, match="finite"):
    to_classes([np.inf], [1.0])
  with pytest.raises(ConfigError, match="sorted"):
    to_classes([1.0], [2.0, 1.0])


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37, 0.9])
def test_rater_noise_flips_exactly_round_rate_n_labels_to_other_classes(rate):
  classes = np.random.default_rng(0).integers(0, 3, size=10_000).astype(np.int32)
  noisy = rater_noise(classes, 3, rate, seed=1)
  assert noisy.dtype == np.int32
  assert np.sum(noisy != classes) == round(rate * 10_000)
  assert noisy.min() >= 0 and noisy.max() < 3


def test_rater_noise_is_seeded_and_spreads_over_the_other_classes():
  classes = np.zeros(9_000, np.int32)
  a, b = rater_noise(classes, 4, 0.5, seed=7), rater_noise(classes, 4, 0.5, seed=7)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, rater_noise(classes, 4, 0.5, seed=8))
  counts = np.bincount(a, minlength=4)[1:]  # 4,500 flips spread over classes 1..3
  sd = np.sqrt(4_500 * (1 / 3) * (2 / 3))
  assert np.all(np.abs(counts - 1_500) < 4 * sd)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_rater_noise_rejects_a_rate_outside_zero_one_and_unknown_classes(rate):
  with pytest.raises(ConfigError, match="rate"):
    rater_noise(np.zeros(5, np.int32), 3, rate, seed=0)
  with pytest.raises(ConfigError, match="classes in"):
    rater_noise(np.full(5, 3, np.int32), 3, 0.1, seed=0)


@pytest.fixture(scope="module")
def digits():
  data = load_dataset(ml_collections.ConfigDict({"source": "digits"}))
  return data.train.arrays, data.test.arrays


def test_real_digit_attributes_vary_and_are_not_the_digit_class(digits):
  train, test = digits
  labels = attribute_labels(train["image"], train["image"])
  assert set(labels) == set(ATTRIBUTES)
  for name, classes in labels.items():
    counts = np.bincount(classes, minlength=3)
    assert counts.max() - counts.min() <= 0.05 * len(classes), name  # balanced on train
    for cls in range(3):
      digits_here = np.bincount(train["label"][classes == cls], minlength=10)
      assert np.sum(digits_here >= 5) >= 5, (name, cls, digits_here)
  test_labels = attribute_labels(test["image"], train["image"])
  for name, classes in test_labels.items():
    assert len(classes) == len(test["label"]) and len(np.unique(classes)) == 3, name


def test_attribute_label_noise_is_per_attribute_and_seeded(digits):
  train, _ = digits
  clean = attribute_labels(train["image"], train["image"])
  noisy = attribute_labels(train["image"], train["image"], noise=0.2, seed=3)
  again = attribute_labels(train["image"], train["image"], noise=0.2, seed=3)
  flips = {}
  for name in ATTRIBUTES:
    np.testing.assert_array_equal(noisy[name], again[name])
    flips[name] = noisy[name] != clean[name]
    assert flips[name].sum() == round(0.2 * len(train["label"]))
  assert not np.array_equal(flips["thickness"], flips["slant"])
