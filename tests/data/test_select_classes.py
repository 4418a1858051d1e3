"""`data.classes`: keep some classes of any source, relabelled in the order given."""

import ml_collections
import numpy as np
import pytest

from jaxml.data import load_dataset
from jaxml.data.base import ArraySplit, Dataset, select_classes
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
  assert sub.num_classes == 2 and sub.input_shape == full.input_shape
  labels = full.train.arrays["label"]
  expected = np.flatnonzero((labels == 7) | (labels == 5))
  assert len(sub.train) == expected.size
  got = sub.train.read(np.arange(len(sub.train)))
  np.testing.assert_array_equal(got["image"], full.train.arrays["image"][expected])
  np.testing.assert_array_equal(got["label"], np.where(labels[expected] == 7, 0, 1))


def test_lazy_splits_are_scanned_in_chunks():
  labels = np.arange(10_000) % 4
  dataset = Dataset(train=_LazySplit(labels), test=_LazySplit(labels[:9]), num_classes=4,
                    input_shape=(1,))
  sub = select_classes(dataset, [3])
  assert len(sub.train) == 2500 and len(sub.test) == 2
  batch = sub.train.read(np.array([0, 2499]))
  np.testing.assert_array_equal(batch["label"], [0, 0])
  np.testing.assert_array_equal(batch["image"][:, 0], [3, 3])  # the original class-3 rows


@pytest.mark.parametrize("classes,message", [((3, 3), "distinct"), ((0, 12), "outside"),
                                             ((), "distinct")])
def test_bad_classes_are_config_errors(classes, message):
  dataset = Dataset(train=ArraySplit({"label": np.arange(4) % 4}),
                    test=ArraySplit({"label": np.arange(4) % 4}), num_classes=4, input_shape=(1,))
  with pytest.raises(ConfigError, match=message):
    select_classes(dataset, classes)
