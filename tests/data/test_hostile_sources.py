"""Hostile plug-in sources (tests/hostile_data.py): each is refused on load, in one line that
names the source, the split and the field, before anything compiles."""

import os

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.check import CHUNK_VALUES, check_split, sample_indices
from jaxml.data.base import ArraySplit, Field, Task
from jaxml.errors import ConfigError
from tests import hostile_data
from tests.launch_utils import run_launcher


def _load(name: str):
  return load_dataset(ml_collections.ConfigDict({"source": f"tests.hostile_data:{name}"}))


def test_the_honest_variant_loads():
  dataset = _load("honest")
  assert (len(dataset.train), len(dataset.test)) == (hostile_data.TRAIN, hostile_data.TEST)


@pytest.mark.parametrize("name", sorted(hostile_data.HOSTILE))
def test_hostile_source_is_one_line_naming_split_and_field(name):
  split, field = hostile_data.HOSTILE[name]
  with pytest.raises(ConfigError) as caught:
    _load(name)
  message = str(caught.value)
  assert "\n" not in message
  assert f"tests.hostile_data:{name}" in message
  if split is not None:
    assert f": {split} " in message, message
  if field is not None:
    assert repr(field) in message, message


@pytest.mark.parametrize("name,detail", [
    ("nan_images", "field 'image' holds NaN at example 5"),
    ("inf_images", "field 'image' holds Inf at example 7"),
    ("inf_test_images", "test field 'image' holds Inf at example 11"),
    ("uint8_images", "field 'image' is uint8, declared float32"),
    ("string_images", "field 'image' is str160, declared float32"),
    ("wrong_test_shape", "test field 'image' has examples of shape (16, 16, 1), declared "
                         "(8, 8, 1)"),
    ("empty_train", "train split is empty"),
    ("missing_label", "train lacks field 'label'"),
    ("negative_label", "field 'label' is -1 at example 4, outside [0, 3)"),
    ("label_too_large", "test field 'label' is 3 at example 9, outside [0, 3)"),
    ("group_out_of_categories", "field 'group' is 2 at example 2, outside [0, 2)"),
    ("mismatched_lengths", "different numbers of examples: 'image' 24, 'label' 23"),
    ("streamed_nan_last", "field 'image' holds NaN at example 23"),
    ("streamed_short_labels", "test field 'label' has 11 examples, the split 12"),
])
def test_the_message_says_what_is_wrong_and_where(name, detail):
  with pytest.raises(ConfigError) as caught:
    _load(name)
  assert detail in str(caught.value)


def test_sample_covers_first_and_last_and_is_bounded():
  assert sample_indices(1).tolist() == [0]
  assert sample_indices(5).tolist() == [0, 1, 2, 3, 4]
  big = sample_indices(10**9)
  assert len(big) == 16 and big[0] == 0 and big[-1] == 10**9 - 1


def test_finiteness_scan_finds_a_nan_past_the_first_chunk():
  rows = 3 * CHUNK_VALUES // 48 + 5  # several chunks of [4, 4, 3] images
  images = np.zeros((rows, 4, 4, 3), np.float32)
  images[rows - 2, 3, 3, 2] = np.nan
  split = ArraySplit({"image": images, "label": np.zeros(rows, np.int32)})
  fields = {"image": Field((4, 4, 3), "float32"), "label": Field((), "int32")}
  with pytest.raises(ConfigError, match=f"holds NaN at example {rows - 2} "):
    check_split(split, fields, Task("classification", "image", "label", 2), "toy: train")


def test_a_hostile_source_through_the_launcher_exits_2_before_compiling(tmp_path):
  proc = run_launcher("experiments/classifier.py:smoke", tmp_path,
                      "--config.data.source=tests.hostile_data:wrong_test_shape")
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  assert "test field 'image' has examples of shape (16, 16, 1)" in lines[0]
  checkpoints = tmp_path / "checkpoints"
  assert not checkpoints.exists() or not os.listdir(checkpoints)
  assert not (tmp_path / "metrics.jsonl").exists()


def test_episodes_with_a_nan_reward_are_refused_whatever_the_sample(tmp_path):
  """Episode windows are only sampled on load, but the stored episodes are checked whole."""
  from tests.data import test_fields  # pylint: disable=import-outside-toplevel
  root = test_fields._write_episodes(str(tmp_path))  # pylint: disable=protected-access
  config = ml_collections.ConfigDict({"source": f"episodes:{root}", "context": 3,
                                      "test_fraction": 0.25})
  load_dataset(config)  # the honest data loads
  path = os.path.join(root, "asterix", "random.npz")
  with np.load(path) as data:
    arrays = dict(data)
  arrays["reward"] = arrays["reward"].astype(np.float32)
  arrays["reward"][3] = np.nan  # in the second episode (lengths 2, 4, 5, 3)
  np.savez(path, **arrays)
  with pytest.raises(ConfigError, match=r"random.npz field 'reward' holds NaN or Inf in "
                                        r"episode 1$"):
    load_dataset(config)
