"""Illustrations composed from predicted attributes (the Allo pattern), and how close they are.

In Allo each predicted attribute selects an artist-drawn component and the components make
the picture. Our component is a "0"-like loop drawn in code whose stroke width, shear and
height follow the three digit attribute classes (`jaxml.data.digit_attributes`), so a
prediction error shows as a visibly different glyph. `agreement` scores predicted against true
attributes both per attribute and as pictures; `sheet` puts input, predicted and true
illustrations side by side for a person to judge. Host-only NumPy and matplotlib.
"""

from __future__ import annotations

import numpy as np

from jaxml.core.plots import save_figure
from jaxml.data.digit_attributes import ATTRIBUTES, INK_THRESHOLD
from jaxml.errors import ConfigError

CANVAS = 32
# Each range is (lowest class, highest class), as a fraction of the canvas or as a shear; the
# ranges keep the biggest, most sheared loop inside the canvas.
STROKE_WIDTH = (1 / 16, 1 / 6)
HALF_HEIGHT = (0.2, 0.36)
HALF_WIDTH = 0.17
SHEAR = (-0.4, 0.4)  # x shift per unit height; positive: the top leans right


def _fraction(cls: int, num_bins: int, name: str) -> float:
  """Class cls of num_bins as a position in [0, 1] along its drawing range."""
  if int(num_bins) != num_bins or num_bins < 2:
    raise ConfigError(f"num_bins must be an integer >= 2, got {num_bins!r}")
  if int(cls) != cls or not 0 <= cls < num_bins:
    raise ConfigError(f"{name} class must be an integer in [0, {num_bins}), got {cls!r}")
  return int(cls) / (num_bins - 1)


def _lerp(bounds: tuple[float, float], fraction: float) -> float:
  return bounds[0] + (bounds[1] - bounds[0]) * fraction


def glyph(thickness_class: int, slant_class: int, size_class: int, num_bins: int = 3,
          canvas: int = CANVAS) -> np.ndarray:
  """The component for one combination of classes, float32 [canvas, canvas] ink in [0, 1].

  A sheared elliptical ring: its stroke widens with thickness, its top leans right as slant
  rises (left for the lowest class, upright in the middle), and it grows taller with size at
  a fixed width. Rasterised from a first-order distance field (|f| / |grad f| of the ring's
  implicit function), with one pixel of linear falloff as anti-aliasing, so the ink varies
  smoothly with the parameters.
  """
  if int(canvas) != canvas or canvas < 8:
    raise ConfigError(f"glyph canvas must be an integer >= 8 pixels, got {canvas!r}")
  width = canvas * _lerp(STROKE_WIDTH, _fraction(thickness_class, num_bins, "thickness"))
  shear = _lerp(SHEAR, _fraction(slant_class, num_bins, "slant"))
  half_height = canvas * _lerp(HALF_HEIGHT, _fraction(size_class, num_bins, "size"))
  half_width = canvas * HALF_WIDTH
  centre = (canvas - 1) / 2.0
  y = centre - np.arange(canvas, dtype=np.float64)[:, None]  # up from the centre
  x = np.arange(canvas, dtype=np.float64)[None, :] - centre
  unsheared = x - shear * y
  radius = np.maximum(np.hypot(unsheared / half_width, y / half_height), 1e-9)
  d_unsheared = unsheared / (half_width**2 * radius)
  d_y = y / (half_height**2 * radius)
  gradient = np.hypot(d_unsheared, d_y - shear * d_unsheared)  # chain rule through the shear
  distance = np.abs(radius - 1.0) / np.maximum(gradient, 1e-9)
  return np.clip(width / 2.0 - distance + 0.5, 0.0, 1.0).astype(np.float32)


def _classes(attribute_classes) -> dict[str, np.ndarray]:
  """The attribute dict as equal-length int arrays, keyed exactly by ATTRIBUTES."""
  if set(attribute_classes) != set(ATTRIBUTES):
    raise ConfigError(f"illustrations need exactly the attributes {ATTRIBUTES}, got "
                      f"{tuple(attribute_classes)}")
  classes = {name: np.asarray(attribute_classes[name]) for name in ATTRIBUTES}
  lengths = {name: c.shape for name, c in classes.items()}
  if len(set(lengths.values())) != 1 or len(next(iter(lengths.values()))) != 1:
    raise ConfigError(f"attribute classes must be 1-D arrays of one length, got shapes {lengths}")
  return classes


def illustrate(attribute_classes, num_bins: int = 3, canvas: int = CANVAS) -> np.ndarray:
  """One glyph per example, float32 [N, canvas, canvas], from {attribute: int classes [N]};
  each distinct combination is drawn once."""
  classes = _classes(attribute_classes)
  combos = np.stack([classes[name] for name in ATTRIBUTES], axis=1)
  out = np.zeros((len(combos), canvas, canvas), np.float32)
  for combo in np.unique(combos, axis=0):
    out[np.all(combos == combo, axis=1)] = glyph(*combo.tolist(), num_bins=num_bins,
                                                  canvas=canvas)
  return out


def _pixel_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per example, intersection over union of the pixels inked (>= INK_THRESHOLD) in each."""
  a, b = a >= INK_THRESHOLD, b >= INK_THRESHOLD
  union = (a | b).sum(axis=(1, 2))
  return np.where(union > 0, (a & b).sum(axis=(1, 2)) / np.maximum(union, 1), 1.0)


def agreement(predicted, true, num_bins: int = 3, canvas: int = CANVAS) -> dict[str, float]:
  """How close the illustrations from predicted attributes are to those from the true ones:
  per attribute the fraction of equal classes; `all`, the fraction of examples whose every
  attribute matches (an identical illustration); `pixel_iou`, the mean IoU of the two
  illustrations' inked pixels, which gives partial credit for a near miss."""
  predicted, true = _classes(predicted), _classes(true)
  if len(predicted["size"]) != len(true["size"]):
    raise ConfigError(f"predicted and true attributes cover different numbers of examples: "
                      f"{len(predicted['size'])} and {len(true['size'])}")
  if len(true["size"]) == 0:
    raise ConfigError("agreement needs at least one example")
  equal = {name: predicted[name] == true[name] for name in ATTRIBUTES}
  scores = {name: float(match.mean()) for name, match in equal.items()}
  scores["all"] = float(np.all(list(equal.values()), axis=0).mean())
  scores["pixel_iou"] = float(_pixel_iou(illustrate(predicted, num_bins, canvas),
                                         illustrate(true, num_bins, canvas)).mean())
  return scores


COLUMNS = ("input", "predicted attributes", "true attributes")


def sheet(images, predicted_illustrations, true_illustrations, path, *, rows: int = 8,
          title: str = "") -> str:
  """Saves a PNG grid of the first `rows` examples, one per row: input | illustration from
  predicted attributes | illustration from true attributes, and returns `path`."""
  # The object API, not pyplot: a notebook that calls this keeps its own backend.
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import

  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  panels = (images, np.asarray(predicted_illustrations), np.asarray(true_illustrations))
  shapes = [p.shape for p in panels]
  if any(p.ndim != 3 for p in panels) or len({len(p) for p in panels}) != 1:
    raise ConfigError(f"sheet needs three image stacks [N, H, W] of one length, got {shapes}")
  if int(rows) != rows or rows < 1:
    raise ConfigError(f"sheet rows must be an integer >= 1, got {rows!r}")
  shown = min(int(rows), len(images))
  if shown == 0:
    raise ConfigError("sheet needs at least one example")
  fig = Figure(figsize=(1.3 * len(COLUMNS), 1.3 * shown + (0.4 if title else 0.2)))
  axes = fig.subplots(shown, len(COLUMNS), squeeze=False)
  for row in range(shown):
    for col, panel in enumerate(panels):
      ax = axes[row, col]
      ax.imshow(panel[row], cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(COLUMNS[col], fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return save_figure(fig, path)
