"""Visual attributes of small digit images, the offline stand-in for raters' labels.

In the Allo pattern a frozen encoder's features feed small heads trained on a few human labels
of attributes (hair style, eye colour, ...), and each predicted attribute picks a drawn
component of an illustration. Here the "raters" are pixel statistics of 8x8 digits that a
person would also judge by eye: how thick the stroke is, how it leans, how tall it is. Each is
a continuous value binned into `num_bins` classes by quantiles of the TRAINING values (so the
classes are balanced where the heads learn), optionally with seeded rater errors.

Every extractor is pure NumPy and takes images [N, H, W] or [N, H, W, 1] of ink in [0, 1].
"""

from __future__ import annotations

import numpy as np

from jaxml.errors import ConfigError

ATTRIBUTES = ("thickness", "slant", "size")
INK_THRESHOLD = 0.5  # a pixel at or above this is "inked" where a shape (not a mass) is needed


def _images(images) -> np.ndarray:
  """[N, H, W] float64 from [N, H, W] or [N, H, W, 1]; ConfigError on anything else, since a
  wrong layout would silently give meaningless moments."""
  images = np.asarray(images, np.float64)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.ndim != 3:
    raise ConfigError(f"digit attributes need images [N, H, W] or [N, H, W, 1], got shape "
                      f"{images.shape}")
  if images.size == 0:
    raise ConfigError(f"digit attributes need at least one non-empty image, got shape "
                      f"{images.shape}")
  if not np.all(np.isfinite(images)):
    raise ConfigError("digit attributes need finite pixel values; the images hold NaN or Inf")
  if images.min() < 0 or images.max() > 1:
    raise ConfigError(f"digit attributes need ink in [0, 1], got values in "
                      f"[{images.min():g}, {images.max():g}]")
  return images


def _boundary_length(inked: np.ndarray) -> np.ndarray:
  """Per image, the 4-neighbour pixel edges between an inked and a blank pixel, the image's
  border counting as blank (so a lone pixel has boundary 4)."""
  padded = np.pad(inked, ((0, 0), (1, 1), (1, 1)))
  vertical = np.abs(np.diff(padded, axis=1)).sum(axis=(1, 2))
  horizontal = np.abs(np.diff(padded, axis=2)).sum(axis=(1, 2))
  return vertical + horizontal


def stroke_thickness(images) -> np.ndarray:
  """Stroke width in pixels: 2 * ink mass / boundary length, float64 [N].

  A stroke of width w and length L has area ~ w*L and outline ~ 2*L, so the ratio estimates w
  without a skeleton, and grows as strokes thicken. Ink mass is the sum of all intensities (a
  faint anti-aliased rim adds width); the boundary is that of the pixels >= INK_THRESHOLD.
  Exactly, a full w x L bar gives w*L / (w + L): 1 x L gives L / (L + 1). Images without an
  inked pixel get 0.
  """
  images = _images(images)
  mass = images.sum(axis=(1, 2))
  boundary = _boundary_length((images >= INK_THRESHOLD).astype(np.int64))
  return np.where(boundary > 0, 2.0 * mass / np.maximum(boundary, 1), 0.0)


def _ink_moments(images: np.ndarray):
  """Ink mass and the central moments mu11 (x against y) and mu02 (y) per image, with x the
  column index and y pointing UP (minus the row index), so a stroke whose top leans right has
  mu11 > 0."""
  _, height, width = images.shape
  y = -np.arange(height, dtype=np.float64)[None, :, None]
  x = np.arange(width, dtype=np.float64)[None, None, :]
  mass = images.sum(axis=(1, 2))
  safe = np.maximum(mass, np.finfo(np.float64).tiny)
  x_mean = (images * x).sum(axis=(1, 2)) / safe
  y_mean = (images * y).sum(axis=(1, 2)) / safe
  dx = x - x_mean[:, None, None]
  dy = y - y_mean[:, None, None]
  mu11 = (images * dx * dy).sum(axis=(1, 2))
  mu02 = (images * dy * dy).sum(axis=(1, 2))
  return mass, mu11, mu02


def slant(images) -> np.ndarray:
  """Shear of the ink, mu11 / mu02, float64 [N]: the horizontal shift per pixel of height of
  the ink's least-squares axis (x regressed on y, y up). Positive: the top leans right;
  negative: left; 0 for an upright stroke, and for ink without vertical extent."""
  mass, mu11, mu02 = _ink_moments(_images(images))
  del mass
  return np.where(mu02 > 0, mu11 / np.where(mu02 > 0, mu02, 1.0), 0.0)


def size(images) -> np.ndarray:
  """Ink height in pixels, sqrt(12 * var_y + 1), float64 [N], with var_y the ink's vertical
  variance: the height of the uniform bar with the same vertical spread, so a full bar of
  height h gives exactly h. A second moment rather than a bounding box: on 8x8 digits most
  boxes span the whole image, while the spread still separates tall from squat digits. Images
  without ink get 0."""
  mass, mu11, mu02 = _ink_moments(_images(images))
  del mu11
  variance = mu02 / np.maximum(mass, np.finfo(np.float64).tiny)
  return np.where(mass > 0, np.sqrt(12.0 * variance + 1.0), 0.0)


EXTRACTORS = {"thickness": stroke_thickness, "slant": slant, "size": size}


def _values(values) -> np.ndarray:
  values = np.asarray(values, np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ConfigError(f"attribute values must be a non-empty 1-D array, got shape {values.shape}")
  if not np.all(np.isfinite(values)):
    raise ConfigError("attribute values must be finite; they hold NaN or Inf")
  return values


def _check_num_bins(num_bins: int) -> None:
  if int(num_bins) != num_bins or num_bins < 2:
    raise ConfigError(f"num_bins must be an integer >= 2, got {num_bins!r}")


def bin_edges(values, num_bins: int) -> np.ndarray:
  """The num_bins - 1 interior class edges, float64, from TRAINING values: midpoints between
  the sorted values at ranks floor(j * N / num_bins), so `to_classes` puts floor-balanced
  counts in each class there (sizes differ by at most 1 when the values are distinct)."""
  _check_num_bins(num_bins)
  values = np.sort(_values(values))
  if values.size < num_bins:
    raise ConfigError(f"bin_edges needs at least num_bins={num_bins} values, got {values.size}")
  ranks = (np.arange(1, num_bins) * values.size) // num_bins
  return (values[ranks - 1] + values[ranks]) / 2.0


def to_classes(values, edges) -> np.ndarray:
  """int32 [N] classes 0..len(edges): how many edges are <= each value (monotone in value)."""
  values = _values(values)
  edges = np.asarray(edges, np.float64)
  if edges.ndim != 1 or edges.size == 0 or np.any(np.diff(edges) < 0):
    raise ConfigError(f"class edges must be a non-empty sorted 1-D array, got {edges!r}")
  return np.searchsorted(edges, values, side="right").astype(np.int32)


def rater_noise(classes, num_bins: int, rate: float, seed: int | list[int]) -> np.ndarray:
  """Labels as erring raters would give them, int32 [N]: exactly round(rate * N) examples,
  chosen without replacement, get a class drawn uniformly from the num_bins - 1 OTHER classes
  (so every chosen label really changes). Seeded (an int, or a list of ints as
  `np.random.default_rng` takes): the same inputs give the same labels."""
  _check_num_bins(num_bins)
  classes = np.asarray(classes)
  if classes.ndim != 1 or not np.issubdtype(classes.dtype, np.integer):
    raise ConfigError(f"rater_noise needs integer classes [N], got {classes.dtype} "
                      f"{classes.shape}")
  if classes.size and (classes.min() < 0 or classes.max() >= num_bins):
    raise ConfigError(f"rater_noise needs classes in [0, {num_bins}), got "
                      f"[{classes.min()}, {classes.max()}]")
  if not 0.0 <= rate < 1.0:
    raise ConfigError(f"rater noise rate must be in [0, 1), got {rate!r}")
  rng = np.random.default_rng(seed)
  flipped = rng.choice(classes.size, size=int(round(rate * classes.size)), replace=False)
  noisy = classes.astype(np.int32).copy()
  shift = rng.integers(1, num_bins, size=flipped.size)
  noisy[flipped] = (noisy[flipped] + shift) % num_bins
  return noisy


def attribute_labels(images, train_images, num_bins: int = 3, noise: float = 0.0,
                     seed: int = 0) -> dict[str, np.ndarray]:
  """Every attribute of `images` as int32 [N] classes, binned at the quantile edges of
  `train_images`' values, with `noise` rater errors (an independent seeded stream per
  attribute)."""
  _check_num_bins(num_bins)
  labels = {}
  for index, name in enumerate(ATTRIBUTES):
    extract = EXTRACTORS[name]
    classes = to_classes(extract(images), bin_edges(extract(train_images), num_bins))
    labels[name] = rater_noise(classes, num_bins, noise, seed=[seed, index])
  return labels
