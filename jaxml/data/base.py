"""What a data source returns: random-access splits of examples.

Every source, bundled, TFDS, generated or environment-collected, returns a `Dataset` whose
splits can read any set of example indices as one batched dict of NumPy arrays. Random access
is what makes the data order a pure function of (seed, step), and so makes resume exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol

import numpy as np


class Split(Protocol):
  """A random-access collection of examples."""

  def __len__(self) -> int:
    ...

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Returns the examples at `indices`, stacked: each value has leading dim len(indices)."""
    ...


@dataclasses.dataclass(frozen=True)
class ArraySplit:
  """A split held in memory as equal-length NumPy arrays (generated or collected data)."""

  arrays: Mapping[str, np.ndarray]

  def __post_init__(self):
    lengths = {k: len(v) for k, v in self.arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"ArraySplit arrays must have equal length, got {lengths}")

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[indices] for k, v in self.arrays.items()}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test splits plus what a model needs to know about them.

  Examples are dicts with at least `image` (float32, [H, W, C], scaled to [0, 1]) and
  `label` (int32 scalar) for classification sources.
  """

  train: Split
  test: Split
  num_classes: int
  input_shape: tuple[int, ...]
  name: str = ""


def check_labels(dataset: Dataset, num_classes: int) -> None:
  """Raises ConfigError unless every label fits `num_classes` (in-memory splits are scanned)."""
  from jaxml.errors import ConfigError  # pylint: disable=import-outside-toplevel

  if num_classes < dataset.num_classes:
    raise ConfigError(f"labels out of range: dataset {dataset.name!r} has "
                      f"{dataset.num_classes} classes but the model has {num_classes}")
  for name, split in (("train", dataset.train), ("test", dataset.test)):
    if isinstance(split, ArraySplit) and "label" in split.arrays:
      labels = np.asarray(split.arrays["label"])
      if labels.min() < 0 or labels.max() >= num_classes:
        raise ConfigError(f"labels out of range: {name} labels span [{labels.min()}, "
                          f"{labels.max()}] but the model has {num_classes} classes")


@dataclasses.dataclass(frozen=True)
class ClassSubsetSplit:
  """The examples of `split` at `indices`, with labels renumbered by `relabel` (old -> new)."""

  split: Split
  indices: np.ndarray
  relabel: np.ndarray  # relabel[old_label] = new label (-1 for dropped classes)

  def __len__(self) -> int:
    return len(self.indices)

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    examples = self.split.read(self.indices[np.asarray(indices)])
    return {**examples, "label": self.relabel[examples["label"]].astype(np.int32)}


def labels_of(split: Split, chunk: int = 4096) -> np.ndarray:
  """Every label of `split` (in-memory splits directly; others are read in chunks)."""
  if isinstance(split, ArraySplit):
    return np.asarray(split.arrays["label"])
  return np.concatenate([split.read(np.arange(start, min(start + chunk, len(split))))["label"]
                         for start in range(0, len(split), chunk)])


def select_classes(dataset: Dataset, classes) -> Dataset:
  """The examples of `classes` only, relabelled 0..len(classes)-1 in the order given.

  This is how one source is split into disjoint tasks, e.g. a "public" pre-training task on
  digits 0-4 and a "private" one on digits 5-9. Splits that are not in memory are scanned
  once for their labels.
  """
  from jaxml.errors import ConfigError  # pylint: disable=import-outside-toplevel

  classes = [int(c) for c in classes]
  if len(set(classes)) != len(classes) or not classes:
    raise ConfigError(f"data.classes={classes} must be distinct class ids")
  bad = [c for c in classes if not 0 <= c < dataset.num_classes]
  if bad:
    raise ConfigError(f"data.classes has {bad}, outside dataset {dataset.name!r}'s classes "
                      f"0..{dataset.num_classes - 1}")
  relabel = np.full(dataset.num_classes, -1, np.int64)
  relabel[classes] = np.arange(len(classes))
  splits = {}
  for name in ("train", "test"):
    split = getattr(dataset, name)
    keep = np.flatnonzero(relabel[labels_of(split)] >= 0)
    if keep.size == 0:
      raise ConfigError(f"data.classes={classes} leaves no {name} examples")
    splits[name] = ClassSubsetSplit(split, keep, relabel)
  return dataclasses.replace(dataset, train=splits["train"], test=splits["test"],
                             num_classes=len(classes))
