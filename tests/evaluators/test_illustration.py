"""Illustrations from attributes: every glyph distinct and drawn in the sense the extractors
read, agreement scores pinned on a hand-built case, and the side-by-side sheet."""

import itertools

import numpy as np
import pytest
from matplotlib import image as mpl_image

from jaxml.data.digit_attributes import INK_THRESHOLD, size, slant, stroke_thickness
from jaxml.errors import ConfigError
from jaxml.evaluators.illustration import agreement, glyph, illustrate, sheet

COMBOS = list(itertools.product(range(3), repeat=3))


@pytest.fixture(scope="module")
def glyphs():
  return {combo: glyph(*combo) for combo in COMBOS}


def _inked_rows(image):
  rows = np.flatnonzero((image >= INK_THRESHOLD).any(axis=1))
  return rows.max() - rows.min() + 1


def _centroid_x(image):
  return (image * np.arange(image.shape[1])).sum() / image.sum()


def test_every_combination_is_a_distinct_glyph_inside_the_canvas(glyphs):
  for a, b in itertools.combinations(COMBOS, 2):
    assert np.abs(glyphs[a] - glyphs[b]).max() >= 0.5, (a, b)
  for combo, image in glyphs.items():
    assert image.shape == (32, 32) and image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == 1.0
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    assert border.max() == 0.0, combo


def test_thicker_class_has_more_ink_and_reads_thicker(glyphs):
  for slant_class, size_class in itertools.product(range(3), repeat=2):
    stack = np.stack([glyphs[(t, slant_class, size_class)] for t in range(3)])
    assert np.all(np.diff(stack.sum(axis=(1, 2))) > 0)
    assert np.all(np.diff(stroke_thickness(stack)) > 0)


def test_size_class_changes_the_inked_height(glyphs):
  for thickness_class, slant_class in itertools.product(range(3), repeat=2):
    stack = [glyphs[(thickness_class, slant_class, s)] for s in range(3)]
    assert np.all(np.diff([_inked_rows(image) for image in stack]) > 0)
    assert np.all(np.diff(size(np.stack(stack))) > 0)


def test_slant_class_moves_the_top_of_the_ink(glyphs):
  for thickness_class, size_class in itertools.product(range(3), repeat=2):
    lean_left, upright, lean_right = (glyphs[(thickness_class, s, size_class)] for s in range(3))
    top, bottom = slice(0, 16), slice(16, 32)
    assert _centroid_x(lean_right[top]) > _centroid_x(lean_right[bottom]) + 1
    assert _centroid_x(lean_left[top]) < _centroid_x(lean_left[bottom]) - 1
    assert _centroid_x(upright[top]) == pytest.approx(_centroid_x(upright[bottom]))
    got = slant(np.stack([lean_left, upright, lean_right]))
    assert got[0] < 0 and got[1] == pytest.approx(0, abs=1e-9) and got[2] > 0


def test_more_bins_give_intermediate_glyphs():
  middle = glyph(1, 2, 3, num_bins=5)
  assert np.abs(middle - glyph(0, 1, 1)).max() > 0 and middle.shape == (32, 32)
  np.testing.assert_array_equal(glyph(4, 4, 4, num_bins=5), glyph(2, 2, 2))


def test_illustrate_draws_each_example_from_its_classes(glyphs):
  classes = {"thickness": [0, 2, 1, 0], "slant": [1, 0, 2, 1], "size": [2, 2, 0, 2]}
  pictures = illustrate(classes, num_bins=3)
  assert pictures.shape == (4, 32, 32) and pictures.dtype == np.float32
  for i in range(4):
    combo = (classes["thickness"][i], classes["slant"][i], classes["size"][i])
    np.testing.assert_array_equal(pictures[i], glyphs[combo])


def test_bad_classes_are_config_errors():
  with pytest.raises(ConfigError, match="slant class"):
    glyph(0, 3, 0)
  with pytest.raises(ConfigError, match="num_bins"):
    glyph(0, 0, 0, num_bins=1)
  with pytest.raises(ConfigError, match="exactly the attributes"):
    illustrate({"thickness": [0], "slant": [0]})
  with pytest.raises(ConfigError, match="one length"):
    illustrate({"thickness": [0], "slant": [0, 1], "size": [0]})


def test_identical_attributes_agree_everywhere():
  classes = {"thickness": [0, 1, 2], "slant": [2, 1, 0], "size": [1, 1, 2]}
  assert agreement(classes, dict(classes)) == {
      "thickness": 1.0, "slant": 1.0, "size": 1.0, "all": 1.0, "pixel_iou": 1.0}


def test_partial_disagreement_gives_the_hand_computed_fractions(glyphs):
  true = {"thickness": [0, 1, 2, 1], "slant": [1, 1, 0, 2], "size": [0, 0, 1, 0]}
  predicted = {"thickness": [0, 1, 2, 0], "slant": [1, 1, 0, 2], "size": [0, 0, 0, 0]}
  scores = agreement(predicted, true)
  # Examples 0 and 1 match; 2 differs in size, 3 in thickness.
  assert scores["thickness"] == 0.75 and scores["slant"] == 1.0 and scores["size"] == 0.75
  assert scores["all"] == 0.5

  def iou(a, b):
    a, b = glyphs[a] >= 0.5, glyphs[b] >= 0.5
    return (a & b).sum() / (a | b).sum()

  near_misses = [iou((2, 0, 0), (2, 0, 1)), iou((0, 2, 0), (1, 2, 0))]
  assert all(0 < x < 1 for x in near_misses)
  assert scores["pixel_iou"] == pytest.approx((2 + sum(near_misses)) / 4)


def test_agreement_rejects_mismatched_lengths():
  one = {"thickness": [0], "slant": [0], "size": [0]}
  two = {"thickness": [0, 1], "slant": [0, 1], "size": [0, 1]}
  with pytest.raises(ConfigError, match="different numbers of examples"):
    agreement(one, two)


def test_sheet_writes_a_png_that_grows_with_rows(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(10, 8, 8, 1)).astype(np.float32)
  classes = {"thickness": rng.integers(0, 3, 10), "slant": rng.integers(0, 3, 10),
             "size": rng.integers(0, 3, 10)}
  pictures = illustrate(classes)
  small = sheet(images, pictures, pictures[::-1], tmp_path / "small.png", rows=2, title="t")
  large = sheet(images, pictures, pictures[::-1], tmp_path / "large.png", rows=6)
  assert small == str(tmp_path / "small.png")
  small_png, large_png = mpl_image.imread(small), mpl_image.imread(large)
  assert small_png.size > 0 and np.ptp(small_png) > 0
  assert large_png.shape[0] > small_png.shape[0] and large_png.shape[1] == small_png.shape[1]
  with pytest.raises(ConfigError, match="one length"):
    sheet(images[:3], pictures, pictures, tmp_path / "bad.png")
  with pytest.raises(ConfigError, match="rows"):
    sheet(images, pictures, pictures, tmp_path / "bad.png", rows=0)
