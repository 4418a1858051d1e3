"""The `clicklog` simulator: deterministic, calibrated, noisy as configured, hashed."""

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.sources import clicklog
from jaxml.errors import ConfigError

SMALL = {"train_size": 20_000, "test_size": 2_000}


def load(**fields):
  return load_dataset(ml_collections.ConfigDict({"source": "clicklog", **SMALL, **fields}))


def test_fields_and_task():
  dataset = load()
  assert (len(dataset.train), len(dataset.test)) == (20_000, 2_000)
  task = dataset.task
  assert (task.kind, task.inputs, task.target, task.num_classes) == (
      "classification", ("ids",), "click", 2)
  ids = dataset.train.arrays["ids"]
  assert ids.dtype == np.int32 and ids.shape == (20_000, len(clicklog.FIELDS))
  assert ids.min() >= 0 and ids.max() < 1_000


def test_same_seed_same_data_other_seed_other_data():
  first, again, other = load(seed=3), load(seed=3), load(seed=4)
  for name in ("ids", "click", "p_click"):
    np.testing.assert_array_equal(first.train.arrays[name], again.train.arrays[name])
    np.testing.assert_array_equal(first.test.arrays[name], again.test.arrays[name])
  assert not np.array_equal(first.train.arrays["p_click"], other.train.arrays["p_click"])


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_click_rate_is_near_the_configured_rate(rate):
  clicks = load(click_rate=rate).train.arrays["click"]
  standard_error = np.sqrt(rate * (1 - rate) / len(clicks))
  assert abs(clicks.mean() - rate) < 4 * standard_error + 0.002  # offset fitted on train+test


def test_empirical_click_rate_per_bucket_matches_p_click():
  """The simulator is calibrated: clicks are drawn from p_click, bucket by bucket."""
  arrays = load(train_size=50_000, label_noise=0.1).train.arrays
  p, clicks = arrays["p_click"].astype(np.float64), arrays["click"]
  edges = np.quantile(p, np.linspace(0, 1, 11))
  bucket = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
  for b in range(10):
    inside = bucket == b
    expected, n = p[inside].mean(), inside.sum()
    tolerance = 4 * np.sqrt(expected * (1 - expected) / n)
    assert abs(clicks[inside].mean() - expected) < tolerance, (b, expected)


def test_label_noise_flips_the_expected_share_and_is_folded_into_p_click():
  clean, noisy = load(), load(label_noise=0.1)
  flipped = clean.train.arrays["click"] != noisy.train.arrays["click"]
  assert flipped.mean() == pytest.approx(0.1, abs=0.006)  # 4 standard errors at n = 20k
  np.testing.assert_array_equal(clean.train.arrays["ids"], noisy.train.arrays["ids"])
  p = clean.train.arrays["p_click"]
  np.testing.assert_allclose(noisy.train.arrays["p_click"], 0.9 * p + 0.1 * (1 - p), atol=1e-6)


def test_hashing_collides_when_the_vocabulary_is_small():
  users = np.arange(1_000)[:, None]
  roomy = clicklog.hash_ids(users, 1 << 30)
  assert len(np.unique(roomy)) == 1_000  # distinct users keep distinct ids
  tight = clicklog.hash_ids(users, 100)
  assert tight.min() >= 0 and tight.max() < 100 and len(np.unique(tight)) == 100
  # Fields are salted: the same raw value lands in unrelated buckets in different fields.
  both = clicklog.hash_ids(np.stack([np.arange(50)] * 2, axis=1), 1 << 30)
  assert not np.any(both[:, 0] == both[:, 1])
  ids = load(vocab=50).train.arrays["ids"]
  assert len(np.unique(ids[:, 0])) <= 50  # 1,000 users share 50 buckets


@pytest.mark.parametrize("key, value, message", [
    ("train_size", 0, "data.train_size=0 must be an integer >= 1"),
    ("test_size", 2.5, "data.test_size=2.5 must be an integer >= 1"),
    ("vocab", -1, "data.vocab=-1 must be"),
    ("factors", True, "data.factors=True must be"),
    ("click_rate", 0.0, r"data.click_rate=0.0 must be in \(0, 1\)"),
    ("click_rate", 1.0, r"data.click_rate=1.0 must be in \(0, 1\)"),
    ("label_noise", 0.5, r"data.label_noise=0.5 must be in \[0, 0.5\)"),
    ("label_noise", -0.1, "data.label_noise=-0.1 must be"),
])
def test_bad_settings_raise_one_clear_error(key, value, message):
  with pytest.raises(ConfigError, match=message):
    load(**{key: value})
