"""The spurious-feature sources: exact alignment in train, independence in test, groups."""

import ml_collections
import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxml.data import load_dataset, spurious
from jaxml.data.check import check_examples
from jaxml.data.sources import coloured_digits, patched_digits, slab
from jaxml.errors import ConfigError

ATTRIBUTE = {"coloured_digits": "colour", "patched_digits": "patch", "slab": "linear"}
SMALL_SLAB = {"train_size": 600, "test_size": 400, "slabs": 4}


def load(source, **fields):
  extra = SMALL_SLAB if source == "slab" else {}
  return load_dataset(ml_collections.ConfigDict({"source": source, **extra, **fields}))


@pytest.mark.parametrize("source, inputs, shape, num_classes", [
    ("coloured_digits", "image", (8, 8, 3), 10), ("patched_digits", "image", (8, 8, 1), 10),
    ("slab", "x", (5,), 2)])
def test_fields_task_and_split_sizes(source, inputs, shape, num_classes):
  dataset = load(source)
  attribute = ATTRIBUTE[source]
  task = dataset.task
  assert (task.kind, task.inputs, task.target, task.num_classes, task.groups) == (
      "classification", (inputs,), "label", num_classes, ("group", "aligned"))
  assert {k: (f.shape, f.dtype) for k, f in dataset.fields.items()} == {
      inputs: (shape, "float32"), "label": ((), "int32"), attribute: ((), "int32"),
      "aligned": ((), "int32"), "group": ((), "int32")}
  assert len(dataset.fields["group"].categories) == num_classes ** 2
  sizes = (600, 400) if source == "slab" else (1077, 360)
  assert (len(dataset.train), len(dataset.test)) == sizes
  for split in (dataset.train, dataset.test):
    check_examples(split, dataset.fields, np.arange(len(split)))
    if inputs == "image":
      images = split.arrays["image"]
      assert images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("source", sorted(ATTRIBUTE))
def test_groups_are_label_attribute_pairs(source):
  dataset = load(source)
  k = dataset.task.num_classes
  for split in (dataset.train, dataset.test):
    arrays = split.arrays
    y, a = arrays["label"].astype(np.int64), arrays[ATTRIBUTE[source]].astype(np.int64)
    np.testing.assert_array_equal(arrays["group"], [label * k + v for label, v in zip(y, a)])
    np.testing.assert_array_equal(arrays["aligned"], [int(label == v) for label, v in zip(y, a)])


@pytest.mark.parametrize("source", sorted(ATTRIBUTE))
@pytest.mark.parametrize("alignment", [0.0, 0.9, 0.95, 0.99, 1.0])
def test_train_alignment_is_exact_per_class(source, alignment):
  arrays = load(source, alignment=alignment).train.arrays
  y, a = arrays["label"], arrays[ATTRIBUTE[source]]
  for c in np.unique(y):
    in_class = y == c
    assert np.sum(a[in_class] == c) == round(alignment * in_class.sum()), c


def test_misaligned_colours_are_spread_over_the_other_classes():
  arrays = load("coloured_digits", alignment=0.0).train.arrays
  offsets = (arrays["colour"] - arrays["label"]) % 10
  counts = np.bincount(offsets, minlength=10)
  assert counts[0] == 0
  expected = len(offsets) / 9
  assert np.all(np.abs(counts[1:] - expected) < 4 * np.sqrt(expected)), counts


@pytest.mark.parametrize("source", sorted(ATTRIBUTE))
@pytest.mark.parametrize("eval_split", ["test", "validation"])
def test_held_out_attributes_are_independent_of_the_label(source, eval_split):
  arrays = load(source, alignment=0.99, eval_split=eval_split).test.arrays
  k = 2 if source == "slab" else 10
  table = np.zeros((k, k), np.int64)
  np.add.at(table, (arrays["label"], arrays[ATTRIBUTE[source]]), 1)
  # Within each class every value occurs equally often, to one.
  assert np.all(table.max(axis=1) - table.min(axis=1) <= 1), table
  assert abs(arrays["aligned"].mean() - 1 / k) < 0.02


def test_digit_splits_partition_the_digits_and_validation_is_not_test():
  images, labels = spurious.digit_splits(0)
  assert {s: len(v) for s, v in labels.items()} == {"train": 1077, "validation": 360,
                                                     "test": 360}
  rows = np.concatenate([images[s] for s in images]).reshape(1797, -1)
  digits = load_digits()
  np.testing.assert_array_equal(np.unique(rows, axis=0),
                                np.unique(digits.images.reshape(1797, -1) / 16, axis=0))
  for split in labels:  # stratified: every class in every split
    assert np.bincount(labels[split]).min() >= 30
  validation = load("patched_digits", eval_split="validation").test.arrays
  test = load("patched_digits").test.arrays
  assert not np.array_equal(validation["image"], test["image"])
  np.testing.assert_array_equal(validation["label"], labels["validation"])


@pytest.mark.parametrize("source", sorted(ATTRIBUTE))
def test_deterministic_in_the_seed(source):
  first, again, other = load(source, seed=3), load(source, seed=3), load(source, seed=4)
  for name in first.fields:
    np.testing.assert_array_equal(first.train.arrays[name], again.train.arrays[name])
    np.testing.assert_array_equal(first.test.arrays[name], again.test.arrays[name])
  attribute = ATTRIBUTE[source]
  assert not np.array_equal(first.train.arrays[attribute], other.train.arrays[attribute])
  if source != "slab":  # the seed draws shortcuts, split_seed the digits' split
    np.testing.assert_array_equal(first.train.arrays["label"], other.train.arrays["label"])
    moved = load(source, split_seed=1).train.arrays["label"]
    assert not np.array_equal(first.train.arrays["label"], moved)


def test_colours_read_back_from_the_images():
  palette = coloured_digits.PALETTE
  background = load("coloured_digits", colour_on="background").train.arrays
  stroke = load("coloured_digits", colour_on="stroke").train.arrays
  colour = background["colour"]
  np.testing.assert_array_equal(colour, stroke["colour"])
  # Every digit's top-left pixel is blank: there the background is the colour itself.
  np.testing.assert_allclose(background["image"][:, 0, 0], palette[colour], atol=1e-6)
  # A stroke pixel's colour is proportional to the palette colour: the brightest's direction.
  flat = stroke["image"].reshape(len(colour), 64, 3)
  brightest = flat[np.arange(len(colour)), flat.sum(-1).argmax(1)]
  direction = brightest / brightest.sum(-1, keepdims=True)
  nearest = np.abs(direction[:, None] - (palette / palette.sum(-1, keepdims=True))).sum(-1)
  np.testing.assert_array_equal(nearest.argmin(1), colour)
  # Both renderings draw the same ink s: stroke rgb = s c, background rgb = s + (1 - s) c.
  rgb = palette[colour][:, None, None, :]
  ink = stroke["image"] / rgb
  np.testing.assert_allclose(ink, ink[..., :1].repeat(3, -1), atol=1e-5)
  np.testing.assert_allclose(background["image"], ink + (1 - ink) * rgb, atol=1e-5)


def test_patches_sit_in_their_class_cell():
  arrays = load("patched_digits").train.arrays
  images, patch = arrays["image"][..., 0], arrays["patch"]
  cells = np.stack([images[:, 2 * r:2 * r + 2, 2 * c:2 * c + 2].min(axis=(1, 2))
                    for r, c in patched_digits.PATCH_CELLS], axis=1)  # [N, 10]
  assert np.all(cells[np.arange(len(patch)), patch] == 1.0)
  # Ink rarely fills another border cell, so the patch is what marks one.
  assert np.mean(np.sum(cells == 1.0, axis=1) > 1) < 0.01


def test_slab_coordinates_separate_the_labels_and_the_linear_one_only_in_train():
  dataset = load("slab", k=3, margin=0.2)
  for split, agreement in ((dataset.train, 1.0), (dataset.test, 0.5)):
    x, y = split.arrays["x"].astype(np.float64), split.arrays["label"]
    assert np.mean((x[:, 0] > 0) == y) == agreement
    assert np.all(np.abs(x[:, 0]) >= 0.2) and np.all(np.abs(x[:, 0]) <= 1)
    np.testing.assert_array_equal(split.arrays["linear"], (x[:, 0] > 0).astype(np.int32))
    for column in x[:, 1:].T:
      slab_index = slab.slab_of(column, 3)
      np.testing.assert_array_equal(slab_index % 2, y)  # each one predicts perfectly
      edges = -1 + 2 * slab_index / 3
      inside = np.minimum(column - edges, edges + 2 / 3 - column)
      assert inside.min() >= 0.1 - 1e-9  # margin / 2 from the slab's edges
    # Class 0 holds slabs 0 and 2, class 1 slab 1; both of class 0's are used.
    assert set(slab.slab_of(x[y == 0, 1], 3)) == {0, 2}


@pytest.mark.parametrize("source, key, value, message", [
    ("coloured_digits", "alignment", 1.5, r"data.alignment=1.5 must be a fraction in \[0, 1\]"),
    ("patched_digits", "alignment", -0.1, "data.alignment=-0.1 must be"),
    ("slab", "alignment", True, "data.alignment=True must be"),
    ("coloured_digits", "colour_on", "ink", "data.colour_on='ink': choose background or"),
    ("patched_digits", "eval_split", "val", "data.eval_split='val': choose test or validation"),
    ("coloured_digits", "seed", -1, "data.seed=-1 must be an integer >= 0"),
    ("patched_digits", "split_seed", 0.5, "data.split_seed=0.5 must be"),
    ("slab", "margin", 0.5, r"data.margin=0.5 must be in \(0, 2 / k\)"),
    ("slab", "k", 2, "data.k=2 must be an integer >= 3"),
    ("slab", "slabs", 0, "data.slabs=0 must be an integer >= 1"),
    ("slab", "train_size", 1, "data.train_size=1 must be"),
])
def test_bad_settings_raise_one_clear_error(source, key, value, message):
  with pytest.raises(ConfigError, match=message):
    load(source, **{key: value})
