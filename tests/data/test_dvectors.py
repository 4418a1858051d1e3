"""The simulated d-vector conversations: layout, determinism, disjoint speaker pools, and the
stated model (cosine to the speaker mean, turn-stay rate, drift) measured on draws.

Statistical checks allow 4 standard errors of the seeded sample: the draws are fixed, so a
pass is a pass every time, and 4 se is wide enough that a correct model passes for any seed.
With the samples here 4 se is 0.005 of turn-stay rate, 0.003 of cosine at noise 0.5 (where the
large-dim limit 1 / sqrt(1 + noise^2) would be 0.004 off) and 0.0009 for the drift step.
"""

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.check import check_examples
from jaxml.data.sources import dvectors
from jaxml.errors import ConfigError

SMALL = {"dim": 16, "train_speakers": 20, "test_speakers": 10, "min_length": 5,
         "max_length": 30, "train_conversations": 40, "test_conversations": 12}


def values(**overrides):
  return dvectors.settings({**SMALL, **overrides})


def same_speaker_cosines(arrays, means=None):
  """Cosines of each real segment to its speaker's true mean (when `means` is given), else of
  each speaker's consecutive segments to each other."""
  out = []
  for i in range(len(arrays["num_speakers"])):
    length = int(arrays["step_mask"][i].sum())
    x = arrays["embeddings"][i, :length].astype(np.float64)
    who = arrays["speakers"][i, :length]
    if means is not None:
      centre = means[arrays["identity"][i][who]]
      out.append(np.sum(x * centre, axis=1) / np.linalg.norm(x, axis=1))
      continue
    for speaker in range(arrays["num_speakers"][i]):
      mine = x[who == speaker]
      out.append(np.sum(mine[1:] * mine[:-1], axis=1)
                 / np.linalg.norm(mine[1:], axis=1) / np.linalg.norm(mine[:-1], axis=1))
  return np.concatenate(out)


def test_loads_in_the_sequence_layout_and_passes_the_data_check():
  dataset = load_dataset(ml_collections.ConfigDict({"source": "dvectors", **SMALL}))
  assert {k: (f.shape, f.dtype) for k, f in dataset.fields.items()} == {
      "embeddings": ((30, 16), "float32"), "speakers": ((30,), "int32"),
      "step_mask": ((30,), "float32"), "num_speakers": ((), "int32")}
  task = dataset.task
  assert (task.kind, task.inputs, task.target, task.num_classes, task.step_mask) == (
      "partition", ("embeddings",), "speakers", 0, "step_mask")
  assert (len(dataset.train), len(dataset.test)) == (40, 12)
  for split in (dataset.train, dataset.test):
    check_examples(split, dataset.fields, np.arange(len(split)))
    arrays = split.arrays
    mask = arrays["step_mask"]
    lengths = mask.sum(axis=1).astype(int)
    np.testing.assert_array_equal(mask, np.arange(30)[None, :] < lengths[:, None])
    assert lengths.min() >= 5 and lengths.max() <= 30
    padding = mask == 0
    assert not arrays["embeddings"][padding].any() and not arrays["speakers"][padding].any()
    real = arrays["embeddings"][~padding]
    np.testing.assert_allclose(np.linalg.norm(real, axis=1), 1, atol=1e-6)
    top = np.where(padding, -1, arrays["speakers"]).max(axis=1)
    np.testing.assert_array_equal(arrays["num_speakers"], top + 1)


def test_speakers_are_numbered_by_first_appearance():
  np.testing.assert_array_equal(dvectors.first_appearance(["c", "c", "a", "c", "b", "a"]),
                                [0, 0, 1, 0, 2, 1])
  arrays = dvectors.simulate(values(), "train")
  for i, length in enumerate(arrays["step_mask"].sum(axis=1).astype(int)):
    who = arrays["speakers"][i, :length]
    labels, first = np.unique(who, return_index=True)
    np.testing.assert_array_equal(labels, np.arange(arrays["num_speakers"][i]))
    assert np.all(np.diff(first) > 0)  # speaker k first talks before speaker k + 1


def test_deterministic_in_the_seed_and_stable_under_other_keys():
  first, again = (dvectors.simulate(values(seed=3), "train") for _ in range(2))
  other = dvectors.simulate(values(seed=4), "train")
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["embeddings"], other["embeddings"])
  # A conversation has its own stream: more conversations leave the first ones as they were,
  # and the noise level changes the embeddings, not who speaks when.
  more = dvectors.simulate(values(seed=3, train_conversations=60), "train")
  for key in first:
    np.testing.assert_array_equal(more[key][:40], first[key])
  louder = dvectors.simulate(values(seed=3, noise=0.3), "train")
  np.testing.assert_array_equal(louder["speakers"], first["speakers"])
  assert not np.array_equal(louder["embeddings"], first["embeddings"])


def test_train_and_test_speakers_come_from_disjoint_pools():
  settings = values(noise=0.0)
  means = dvectors.speaker_means(settings)
  assert means.shape == (30, 16)
  identities = {}
  for split in ("train", "test"):
    arrays = dvectors.simulate(settings, split)
    ids = arrays["identity"]
    np.testing.assert_array_equal(ids >= 0, np.arange(6)[None, :] < arrays["num_speakers"][:, None])
    identities[split] = set(ids[ids >= 0].tolist())
    assert identities[split] <= set(dvectors.pool(settings, split).tolist())
    # With no noise and no drift every segment is exactly its speaker's pool mean.
    for i in range(len(ids)):
      length = int(arrays["step_mask"][i].sum())
      expected = means[ids[i][arrays["speakers"][i, :length]]]
      np.testing.assert_allclose(arrays["embeddings"][i, :length], expected, atol=1e-6)
  assert not identities["train"] & identities["test"]
  assert len(identities["test"]) > 5  # the test conversations do use the test pool
  # The training pool does not depend on the size of the test pool.
  np.testing.assert_array_equal(dvectors.speaker_means(values(test_speakers=50))[:20],
                                means[:20])


def test_cosine_to_mean_closed_form():
  assert dvectors.cosine_to_mean(0.0, 256) == 1.0
  # Monte-Carlo means (2e5 draws each, se < 1e-3) at dim 2 and 256, and the dim -> oo limit
  # 1 / sqrt(1 + noise^2).
  assert dvectors.cosine_to_mean(1.0, 2) == pytest.approx(0.71027, abs=5e-5)
  assert dvectors.cosine_to_mean(1.0, 256) == pytest.approx(0.70728, abs=5e-5)
  assert dvectors.cosine_to_mean(0.75, 256) == pytest.approx(0.80026, abs=5e-5)
  assert dvectors.cosine_to_mean(2.0, 1 << 16) == pytest.approx(1 / np.sqrt(5), abs=1e-4)


@pytest.mark.parametrize("noise", [0.5, 1.25])
def test_measured_cosine_to_the_speaker_mean_is_the_closed_form(noise):
  settings = values(noise=noise, train_conversations=120)
  arrays = dvectors.simulate(settings, "train")
  cosines = same_speaker_cosines(arrays, dvectors.speaker_means(settings))
  expected = dvectors.cosine_to_mean(noise, 16)
  se = cosines.std() / np.sqrt(len(cosines))
  assert abs(cosines.mean() - expected) < 4 * se


def test_turn_stay_rate_is_the_configured_probability():
  settings = values(dim=2, turn_stay=0.85, min_length=40, max_length=160,
                    train_conversations=800)
  arrays = dvectors.simulate(settings, "train")
  both_real = arrays["step_mask"][:, 1:] * arrays["step_mask"][:, :-1] > 0
  stays = (arrays["speakers"][:, 1:] == arrays["speakers"][:, :-1])[both_real]
  # Each transition stays independently with probability p: the binomial sd of the rate
  # over n transitions is sqrt(p (1 - p) / n) (about 0.0013 for the ~8e4 here).
  n, p = stays.size, 0.85
  assert n > 60_000
  assert abs(stays.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_a_switch_goes_to_a_uniform_other_participant():
  who = dvectors.turns(np.random.default_rng(0), 4, 200_000, 0.0)
  assert np.all(who[1:] != who[:-1])  # turn_stay 0: every step switches
  step = (who[1:] - who[:-1]) % 4
  counts = np.bincount(step, minlength=4)
  assert counts[0] == 0
  # Each of the 3 others with probability 1/3: binomial sd sqrt(n p (1 - p)).
  n = step.size
  np.testing.assert_array_less(np.abs(counts[1:] - n / 3), 4 * np.sqrt(n * 2 / 9))


def test_drift_walks_each_speaker_mean_by_the_stated_step():
  still = dvectors.simulate(values(noise=0.0), "train")
  np.testing.assert_allclose(same_speaker_cosines(still), 1, atol=1e-6)
  settings = values(noise=0.0, drift=0.3, train_conversations=300)
  moving = dvectors.simulate(settings, "train")
  # With no noise a segment is its speaker's current mean, so consecutive segments of one
  # speaker are one step of the walk apart: cosine E = cosine_to_mean(drift, dim).
  cosines = same_speaker_cosines(moving)
  se = cosines.std() / np.sqrt(len(cosines))
  assert abs(cosines.mean() - dvectors.cosine_to_mean(0.3, 16)) < 4 * se
  # The walk starts at the pool mean and moves away: by symmetry E[m_(k+1) | m_k] = c m_k,
  # c = cosine_to_mean(drift, dim), so a speaker's k-th segment has E cos to the pool mean c^k.
  means = dvectors.speaker_means(settings)
  firsts, fifths = [], []
  for i in range(len(moving["num_speakers"])):
    length = int(moving["step_mask"][i].sum())
    who = moving["speakers"][i, :length]
    for speaker in range(moving["num_speakers"][i]):
      mine = moving["embeddings"][i, :length][who == speaker].astype(np.float64)
      mean = means[moving["identity"][i, speaker]]
      firsts.append(mine[0] @ mean)
      if len(mine) > 4:
        fifths.append(mine[4] @ mean)
  np.testing.assert_allclose(firsts, 1, atol=1e-6)
  fifths = np.array(fifths)
  assert len(fifths) > 400
  se = fifths.std() / np.sqrt(len(fifths))
  assert abs(fifths.mean() - dvectors.cosine_to_mean(0.3, 16) ** 4) < 4 * se


@pytest.mark.parametrize("key, value", [
    ("seed", -1), ("seed", True), ("dim", 1), ("noise", -0.1), ("noise", float("nan")),
    ("drift", "slow"), ("drift", float("inf")), ("turn_stay", 1.5), ("min_speakers", 0),
    ("max_speakers", 1), ("min_length", 0), ("max_length", 4), ("train_speakers", 5),
    ("test_speakers", 3), ("train_conversations", 0), ("test_conversations", 2.5)])
def test_a_bad_key_is_one_config_error_naming_it(key, value):
  config = ml_collections.ConfigDict({"source": "dvectors", **SMALL, key: value})
  with pytest.raises(ConfigError, match=f"dvectors: data.{key}="):
    load_dataset(config)
