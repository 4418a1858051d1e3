"""Shortcut attributes with known groups: what the spurious-feature sources share.

A spurious-feature data set (`coloured_digits`, `patched_digits`, `slab`) gives each example a
shortcut attribute `a` that takes one value per class, so that `a == label` means the shortcut
points at the right class. In training, a fraction `alignment` of each class's examples is
aligned (exactly round(alignment * n_c) of class c's n_c examples, not a binomial draw, so the
shortcut's strength is the configured one at any size) and the rest carry a uniformly random
other value. In validation and test the attribute is independent of the label: within each
class the values are spread as evenly as counts allow (they differ by at most one), so a model
that follows the shortcut is right on only about 1/K of them.

Groups are the standard (label, attribute) pairs of the spurious-correlation literature
(Waterbirds' bird x background, CelebA's hair x gender): `group = label * K + a`, K the number
of attribute values. `aligned` (0/1) is the coarser pair of groups a shortcut splits data into;
with K = 10 the (label, attribute) groups hold only a few test examples each, so worst-group
accuracy over `aligned` is the stabler number on small data. Groups are for evaluation and
model selection only; training never reads them (except an oracle baseline such as GroupDRO).

Validation: `Dataset` has train and test splits only, so `data.eval_split` ("test", the
default, or "validation") chooses which held-out part, disjoint from the other, the returned
`test` split holds; select hyperparameters with "validation", report with "test".
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError

EVAL_SPLITS = ("test", "validation")
# Random streams, one per split, so the test split's attributes do not change with the
# training alignment or with which held-out part is returned.
STREAMS = {"train": 0, "validation": 1, "test": 2}
DIGIT_NAMES = tuple(str(d) for d in range(10))
DIGITS_HELD_OUT = 0.2  # of all 1,797 digits each for validation and test (360 each)


def settings(data_config, defaults: dict, name: str) -> dict:
  """The config's values over `defaults`, with ConfigError naming a bad shared key (seed,
  split_seed, alignment, eval_split); the source checks its own keys."""
  values = {k: data_config.get(k, v) for k, v in defaults.items()}
  for key in ("seed", "split_seed"):
    value = values.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
      raise ConfigError(f"{name}: data.{key}={value!r} must be an integer >= 0")
  alignment = values["alignment"]
  if isinstance(alignment, bool) or not isinstance(alignment, (int, float)) \
      or not 0 <= alignment <= 1:
    raise ConfigError(f"{name}: data.alignment={alignment!r} must be a fraction in [0, 1]")
  if values["eval_split"] not in EVAL_SPLITS:
    raise ConfigError(f"{name}: data.eval_split={values['eval_split']!r}: choose "
                      f"{' or '.join(EVAL_SPLITS)}")
  return values


def aligned_attributes(labels: np.ndarray, num_values: int, alignment: float,
                       rng: np.random.Generator) -> np.ndarray:
  """Per class c, exactly round(alignment * n_c) examples get value c, the rest a uniform
  other value (c + U{1..K-1}) mod K; which examples are aligned is a random choice."""
  attributes = np.empty(len(labels), np.int32)
  for c in np.unique(labels):
    rows = rng.permutation(np.flatnonzero(labels == c))
    num_aligned = int(round(alignment * len(rows)))
    others = rows[num_aligned:]
    attributes[rows[:num_aligned]] = c
    attributes[others] = (c + rng.integers(1, num_values, len(others))) % num_values
  return attributes


def balanced_attributes(labels: np.ndarray, num_values: int,
                        rng: np.random.Generator) -> np.ndarray:
  """Values independent of the label: within each class every value occurs floor(n_c / K) or
  one more time (the extra ones start at a random value), in a random order."""
  attributes = np.empty(len(labels), np.int32)
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)
    cycle = (np.arange(len(rows)) + rng.integers(num_values)) % num_values
    attributes[rows] = rng.permutation(cycle)
  return attributes


def split_attributes(labels: dict, num_values: int, values: dict) -> dict:
  """The attribute of every example of each split: aligned in train, balanced elsewhere."""
  out = {}
  for split, split_labels in labels.items():
    rng = np.random.default_rng([values["seed"], STREAMS[split]])
    out[split] = (aligned_attributes(split_labels, num_values, values["alignment"], rng)
                  if split == "train" else balanced_attributes(split_labels, num_values, rng))
  return out


def group_ids(labels: np.ndarray, attributes: np.ndarray, num_values: int) -> np.ndarray:
  return (labels * num_values + attributes).astype(np.int32)


def group_fields(attribute: str, class_names, value_names) -> dict:
  """The fields `attribute`, `aligned` and `group` with names for each value."""
  return {attribute: Field((), "int32", tuple(value_names)),
          "aligned": Field((), "int32", ("misaligned", "aligned")),
          "group": Field((), "int32", tuple(f"{c}/{v}" for c in class_names
                                            for v in value_names))}


def shortcut_dataset(inputs: dict, input_fields: dict, labels: dict, attributes: dict,
                     class_names, attribute: str, value_names, values: dict,
                     name: str) -> Dataset:
  """The classification Dataset of `label` from `inputs` (split -> field -> array, described
  by `input_fields`), with the fields `attribute`, `aligned` and `group` added. Its `test`
  split is the held-out part `values["eval_split"]`."""
  num_values = len(value_names)
  splits = {}
  for split in ("train", values["eval_split"]):
    y, a = labels[split], attributes[split]
    splits[split] = ArraySplit({**inputs[split], "label": y, attribute: a,
                                "aligned": (a == y).astype(np.int32),
                                "group": group_ids(y, a, num_values)})
  fields = {**input_fields, "label": Field((), "int32", tuple(class_names)),
            **group_fields(attribute, class_names, value_names)}
  task = Task("classification", tuple(input_fields), "label", len(class_names),
              groups=("group", "aligned"))
  return Dataset(splits["train"], splits[values["eval_split"]], fields, task, name=name)


def digit_splits(split_seed: int) -> tuple[dict, dict]:
  """sklearn's digits, [N, 8, 8] float32 in [0, 1], split stratified into train (60%),
  validation and test (20% each) by `split_seed`: (images by split, labels by split)."""
  digits = load_digits()
  images, labels = (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int32)
  x_rest, x_test, y_rest, y_test = train_test_split(
      images, labels, test_size=DIGITS_HELD_OUT, random_state=split_seed, stratify=labels)
  x_train, x_val, y_train, y_val = train_test_split(
      x_rest, y_rest, test_size=DIGITS_HELD_OUT / (1 - DIGITS_HELD_OUT),
      random_state=split_seed, stratify=y_rest)
  return ({"train": x_train, "validation": x_val, "test": x_test},
          {"train": y_train, "validation": y_val, "test": y_test})


def shortcut_digits(values: dict, render, attribute: str, value_names, channels: int,
                    name: str) -> Dataset:
  """Digits whose images `render(images [N, 8, 8], attributes [N])` -> [N, 8, 8, channels]
  draws the shortcut attribute into (one value per class)."""
  images, labels = digit_splits(values["split_seed"])
  attributes = split_attributes(labels, len(DIGIT_NAMES), values)
  inputs = {split: {"image": render(images[split], attributes[split]).astype(np.float32)}
            for split in images}
  return shortcut_dataset(inputs, {"image": Field((8, 8, channels), "float32")}, labels,
                          attributes, DIGIT_NAMES, attribute, value_names, values, name)
