"""Hostile dataset plug-ins: each breaks its own description in one way, which loading must
refuse in one line naming the field (`--config.data.source=tests.hostile_data:<name>`).

Each is a small image/label set (8x8x1 float32 images, 3 classes) with one thing wrong;
`HOSTILE` maps every plug-in to the split and field its error must name.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxml.data.base import ArraySplit, Dataset, Field, Task, image_classification

SHAPE, CLASSES, TRAIN, TEST = (8, 8, 1), 3, 24, 12


def _arrays(n: int, seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {"image": rng.random((n, *SHAPE), dtype=np.float32),
          "label": (np.arange(n) % CLASSES).astype(np.int32)}


def _dataset(train=None, test=None) -> Dataset:
  """The honest set, with `train` / `test` array overrides."""
  splits = [ArraySplit({**_arrays(n, seed), **(over or {})})
            for n, seed, over in ((TRAIN, 0, train), (TEST, 1, test))]
  return image_classification(*splits, SHAPE, CLASSES, name="hostile")


def _images(n: int, seed: int, put) -> dict[str, np.ndarray]:
  images = _arrays(n, seed)["image"]
  put(images)
  return {"image": images}


def honest(data_config) -> Dataset:
  del data_config
  return _dataset()


def nan_images(data_config) -> Dataset:
  del data_config
  return _dataset(train=_images(TRAIN, 0, lambda x: x.__setitem__((5, 3, 3, 0), np.nan)))


def inf_images(data_config) -> Dataset:
  del data_config
  return _dataset(train=_images(TRAIN, 0, lambda x: x.__setitem__((7, 0, 0, 0), -np.inf)))


def inf_test_images(data_config) -> Dataset:
  del data_config
  return _dataset(test=_images(TEST, 1, lambda x: x.__setitem__((11, 7, 7, 0), np.inf)))


def uint8_images(data_config) -> Dataset:
  del data_config
  return _dataset(train={"image": np.zeros((TRAIN, *SHAPE), np.uint8)})


def string_images(data_config) -> Dataset:
  del data_config
  return _dataset(train={"image": np.full((TRAIN, *SHAPE), "pixel")})


def float64_labels(data_config) -> Dataset:
  del data_config
  return _dataset(test={"label": np.zeros(TEST)})


def wrong_train_shape(data_config) -> Dataset:
  del data_config
  return _dataset(train={"image": np.zeros((TRAIN, 8, 8, 3), np.float32)})


def wrong_test_shape(data_config) -> Dataset:
  """Only the test split differs: a test split of another shape must not be accepted."""
  del data_config
  return _dataset(test={"image": np.zeros((TEST, 16, 16, 1), np.float32)})


def flat_labels_with_extra_dim(data_config) -> Dataset:
  del data_config
  return _dataset(train={"label": np.zeros((TRAIN, 1), np.int32)})


def empty_train(data_config) -> Dataset:
  del data_config
  return _dataset(train={"image": np.zeros((0, *SHAPE), np.float32),
                         "label": np.zeros(0, np.int32)})


def empty_test(data_config) -> Dataset:
  del data_config
  return _dataset(test={"image": np.zeros((0, *SHAPE), np.float32),
                        "label": np.zeros(0, np.int32)})


def missing_label(data_config) -> Dataset:
  """The target field is described but the train split has no such array."""
  del data_config
  base = _dataset()
  return dataclasses.replace(base, train=ArraySplit({"image": base.train.arrays["image"]}))


def missing_image(data_config) -> Dataset:
  del data_config
  base = _dataset()
  return dataclasses.replace(base, test=ArraySplit({"label": base.test.arrays["label"]}))


def negative_label(data_config) -> Dataset:
  del data_config
  labels = _arrays(TRAIN, 0)["label"]
  labels[4] = -1
  return _dataset(train={"label": labels})


def label_too_large(data_config) -> Dataset:
  del data_config
  labels = _arrays(TEST, 1)["label"]
  labels[9] = CLASSES
  return _dataset(test={"label": labels})


def group_out_of_categories(data_config) -> Dataset:
  """A categorical (non-target) field holding a value past its categories."""
  del data_config
  arrays = [{**_arrays(n, seed), "group": np.zeros(n, np.int32)}
            for n, seed in ((TRAIN, 0), (TEST, 1))]
  arrays[0]["group"][2] = 2
  fields = {"image": Field(SHAPE, "float32"), "label": Field((), "int32"),
            "group": Field((), "int32", ("a", "b"))}
  task = Task("classification", "image", "label", CLASSES, groups="group")
  return Dataset(ArraySplit(arrays[0]), ArraySplit(arrays[1]), fields, task, name="hostile")


def mismatched_lengths(data_config) -> Dataset:
  del data_config
  return _dataset(train={"label": np.zeros(TRAIN - 1, np.int32)})


@dataclasses.dataclass(frozen=True)
class _StreamedSplit:
  """A split that is not in memory (as TFDS or episode windows are): read example by example."""

  arrays: dict

  def __len__(self) -> int:
    return len(self.arrays["label"])

  def read(self, indices):
    return {k: v[np.asarray(indices)] for k, v in self.arrays.items()}


def streamed_nan_last(data_config) -> Dataset:
  """A streamed split whose last example is NaN: the sample always includes the last one."""
  del data_config
  arrays = _arrays(TRAIN, 0)
  arrays["image"][-1] = np.nan
  base = _dataset()
  return dataclasses.replace(base, train=_StreamedSplit(arrays))


def streamed_short_labels(data_config) -> Dataset:
  """A streamed split whose reads return one label too few."""
  del data_config
  base = _dataset()

  @dataclasses.dataclass(frozen=True)
  class Short(_StreamedSplit):
    def read(self, indices):
      return {**super().read(indices), "label": np.zeros(len(indices) - 1, np.int32)}

  return dataclasses.replace(base, test=Short(_arrays(TEST, 1)))


# plug-in -> (split, field) its one-line error must name
HOSTILE = {
    "nan_images": ("train", "image"), "inf_images": ("train", "image"),
    "inf_test_images": ("test", "image"), "uint8_images": ("train", "image"),
    "string_images": ("train", "image"), "float64_labels": ("test", "label"),
    "wrong_train_shape": ("train", "image"), "wrong_test_shape": ("test", "image"),
    "flat_labels_with_extra_dim": ("train", "label"), "empty_train": ("train", None),
    "empty_test": ("test", None), "missing_label": ("train", "label"),
    "missing_image": ("test", "image"), "negative_label": ("train", "label"),
    "label_too_large": ("test", "label"), "group_out_of_categories": ("train", "group"),
    "mismatched_lengths": (None, "label"), "streamed_nan_last": ("train", "image"),
    "streamed_short_labels": ("test", "label"),
}
