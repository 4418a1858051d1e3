"""The simplicity-bias "slab" data (Shah et al. 2020, "The Pitfalls of Simplicity Bias").

Source `slab` (issue 19): two classes, one coordinate that separates them linearly and
`data.slabs` coordinates that each separate them perfectly but only with k - 1 thresholds.
Networks trained by ERM rely on the linear coordinate alone; randomising it in test shows
this (accuracy falls to chance), though every slab coordinate still predicts the label.
Deterministic in `data.seed`.

The generative model, for each example with label y in {0, 1} (classes exactly balanced):

  x[0], the linear coordinate: |x[0]| ~ U[margin, 1], its sign the shortcut attribute
      `linear` (1: x[0] > 0, which points at class 1; 0: x[0] < 0, class 0). In train,
      exactly round(alignment * n_c) of class c's examples have linear = c (by default all
      of them, as in the paper); in validation and test `linear` is independent of y (half of
      each class each way), so x[0] is "randomised" and a model reading it is at chance;
  x[1..slabs], the slab coordinates, independently: [-1, 1] cut into k slabs of width 2/k,
      slab j belonging to class j mod 2 (alternating, slab 0 to class 0); a slab of y's class
      is chosen uniformly and x drawn uniformly inside it, `margin` / 2 from its edges (so
      neighbouring slabs of the two classes are `margin` apart).

Fields: `x` float32 [1 + slabs]; `label` int32; `linear` int32 (the class x[0] points at);
`aligned` int32 (linear == label); `group` int32 = 2 * label + linear, the (label, linear
coordinate's side) pair. Task: 2-class classification of `label` from `x`, groups ("group",
"aligned"). Validation and test are independent draws of `test_size` examples;
`data.eval_split` picks which one the Dataset's `test` split is (jaxml/data/spurious.py).

Config (all optional): `seed` (0), `train_size` (2,000), `test_size` (1,000), `slabs` (9
slab coordinates, >= 1), `k` (5 slabs per coordinate, >= 3), `margin` (0.1, in (0, 2 / k)),
`alignment` (1.0), `eval_split` ("test" or "validation").
"""

from __future__ import annotations

import numpy as np

from jaxml.data import spurious
from jaxml.data.base import Dataset, Field
from jaxml.errors import ConfigError

DEFAULTS = {"seed": 0, "train_size": 2_000, "test_size": 1_000, "slabs": 9, "k": 5,
            "margin": 0.1, "alignment": 1.0, "eval_split": "test"}
CLASS_NAMES = ("0", "1")
SIDE_NAMES = ("negative", "positive")
SLAB_STREAM = 10  # the coordinates' random stream, apart from the attributes' (spurious.STREAMS)


def _settings(data_config) -> dict:
  values = spurious.settings(data_config, DEFAULTS, "slab")
  for key, least in (("train_size", 2), ("test_size", 2), ("slabs", 1), ("k", 3)):
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
      raise ConfigError(f"slab: data.{key}={value!r} must be an integer >= {least}")
  margin = values["margin"]
  if isinstance(margin, bool) or not isinstance(margin, (int, float)) \
      or not 0 < margin < 2 / values["k"]:
    raise ConfigError(f"slab: data.margin={margin!r} must be in (0, 2 / k) = "
                      f"(0, {2 / values['k']:.3g}) so that slabs keep a width")
  return values


def slab_of(x: np.ndarray, k: int) -> np.ndarray:
  """The index of the slab of [-1, 1] (k equal slabs) that each value lies in."""
  return np.clip(np.floor((x + 1) * k / 2), 0, k - 1).astype(np.int64)


def slab_coordinates(labels: np.ndarray, slabs: int, k: int, margin: float,
                     rng: np.random.Generator) -> np.ndarray:
  """[N, slabs] values, each inside a random slab of its example's class."""
  n = len(labels)
  # Class c owns slabs c, c + 2, ...: ceil((k - c) / 2) of them.
  owned = (k - labels[:, None] + 1) // 2
  slab = labels[:, None] + 2 * np.floor(rng.random((n, slabs)) * owned).astype(np.int64)
  width = 2 / k
  low = -1 + slab * width + margin / 2
  return low + rng.random((n, slabs)) * (width - margin)


def linear_coordinate(sides: np.ndarray, margin: float, rng: np.random.Generator):
  """[N] values with |x| ~ U[margin, 1] and sign + where side is 1."""
  return (2 * sides - 1) * rng.uniform(margin, 1, len(sides))


def load(data_config) -> Dataset:
  values = _settings(data_config)
  sizes = {"train": values["train_size"], "validation": values["test_size"],
           "test": values["test_size"]}
  labels = {}
  for split, n in sizes.items():
    rng = np.random.default_rng([values["seed"], SLAB_STREAM, spurious.STREAMS[split]])
    labels[split] = rng.permutation(np.arange(n) % 2).astype(np.int32)
  sides = spurious.split_attributes(labels, 2, values)
  inputs = {}
  for split, y in labels.items():
    rng = np.random.default_rng([values["seed"], SLAB_STREAM + 1, spurious.STREAMS[split]])
    x = np.concatenate([linear_coordinate(sides[split], values["margin"], rng)[:, None],
                        slab_coordinates(y, values["slabs"], values["k"], values["margin"],
                                         rng)], axis=1)
    inputs[split] = {"x": x.astype(np.float32)}
  return spurious.shortcut_dataset(
      inputs, {"x": Field((1 + values["slabs"],), "float32")}, labels, sides, CLASS_NAMES,
      "linear", SIDE_NAMES, values, "slab")
