"""`data.classes`: keep some classes of any source, relabelled in the order given."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.base import (ArraySplit, Dataset, Field, Task, image_classification,
                             select_classes)
from jaxml.errors import ConfigError


class _LazySplit:
  """A split that is not in memory (like TFDS): only `read` gives labels."""

  def __init__(self, labels):
    self.labels = np.asarray(labels, np.int32)

  def __len__(self):
    return len(self.labels)

  def read(self, indices):
    return {"image": self.labels[indices, None].astype(np.float32), "label": self.labels[indices]}


def test_digits_classes_are_kept_and_relabelled_in_order():
  full = load_dataset(ml_collections.ConfigDict({"source": "digits"}))
  sub = load_dataset(ml_collections.ConfigDict({"source": "digits", "classes": (7, 5)}))
  assert sub.num_classes == 2 and sub.fields["image"] == full.fields["image"]
  assert sub.fields["label"].categories == ("7", "5") and sub.task == dataclasses.replace(
      full.task, num_classes=2)
  labels = full.train.arrays["label"]
  expected = np.flatnonzero((labels == 7) | (labels == 5))
  assert len(sub.train) == expected.size
  got = sub.train.read(np.arange(len(sub.train)))
  np.testing.assert_array_equal(got["image"], full.train.arrays["image"][expected])
  np.testing.assert_array_equal(got["label"], np.where(labels[expected] == 7, 0, 1))


def test_lazy_splits_are_scanned_in_chunks():
  labels = np.arange(10_000) % 4
  dataset = image_classification(_LazySplit(labels), _LazySplit(labels[:9]), (1,), 4)
  sub = select_classes(dataset, [3])
  assert len(sub.train) == 2500 and len(sub.test) == 2
  batch = sub.train.read(np.array([0, 2499]))
  np.testing.assert_array_equal(batch["label"], [0, 0])
  np.testing.assert_array_equal(batch["image"][:, 0], [3, 3])  # the original class-3 rows


@pytest.mark.parametrize("classes,message", [((3, 3), "distinct"), ((0, 12), "outside"),
                                             ((), "distinct")])
def test_bad_classes_are_config_errors(classes, message):
  split = ArraySplit({"image": np.zeros((4, 1), np.float32), "label": np.arange(4) % 4})
  dataset = image_classification(split, split, (1,), 4)
  with pytest.raises(ConfigError, match=message):
    select_classes(dataset, classes)


def test_the_task_target_is_relabelled_whatever_its_name():
  split = ArraySplit({"x": np.arange(6, dtype=np.float32)[:, None],
                      "y": np.array([0, 1, 2, 0, 1, 2], np.int32)})
  fields = {"x": Field((1,), "float32"), "y": Field((), "int32", ("a", "b", "c"))}
  dataset = Dataset(split, split, fields, Task("classification", "x", "y", 3))
  sub = select_classes(dataset, [2, 0])
  np.testing.assert_array_equal(sub.train.read(np.arange(4))["y"], [1, 0, 1, 0])
  assert sub.fields["y"].categories == ("c", "a") and sub.num_classes == 2


def test_classes_of_a_task_without_classes_are_refused():
  split = ArraySplit({"x": np.zeros((3, 2), np.float32)})
  dataset = Dataset(split, split, {"x": Field((2,), "float32")}, Task("none", "x", None, 0))
  with pytest.raises(ConfigError, match="data.classes needs a classification dataset"):
    select_classes(dataset, [0])
