"""sklearn's digits over time, each cluster of classes rotating (or shearing) at its own rate.

Source `drifting_digits` (issue 20): a small offline stream with a known truth, where
sub-populations drift at different speeds, some not at all. Deterministic in `data.seed`
(which digits each period draws) and `data.split_seed` (which digits are in which pool); no
download. See jaxml/data/drift.py for the shared conventions (periods, Eval-Fix splits,
ages, groups).

The generative model, for C = len(rates) clusters: digit class k is in cluster k mod C (4
clusters: {0, 4, 8}, {1, 5, 9}, {2, 6}, {3, 7}, named "0_4_8" .. "3_7" in reports: a "/"
would nest metric names). An example of period p is a digit drawn
uniformly, with replacement, from a pool, then transformed about the image centre by
rates[c] * p, c its cluster (`transform_images`):

  "rotate" (the default): rotated counter-clockwise (as displayed, row 0 at the top) by
      rates[c] * p degrees, as scipy.ndimage.rotate(image, angle, reshape=False, order=1,
      mode="grid-constant") does;
  "shear": every row shifted right by rates[c] * p * (row - 3.5) pixels (a horizontal shear;
      rows below the centre move right);

both by bilinear interpolation with zeros outside the image, so values stay in [0, 1] and a
rate of 0 leaves the digit exactly as drawn.

Pools: sklearn's 1,797 digits split stratified by `data.split_seed` into train (1,077),
validation (360) and test (360) parts (jaxml/data/spurious.py's `digit_splits`). Training
periods draw from the train part only and test periods from the test part (the validation
part with `data.eval_split="validation"`), so no source digit of a test period is ever seen in
training, in any transformation.

Fields: `image` float32 [8, 8, 1] in [0, 1]; `label` int32 (the digit); `period` int32 (the
timestamp); `cluster` int32. Task: 10-class classification of `label` from `image`, groups
("period", "cluster").

Config (all optional): `seed` (0), `split_seed` (0), `periods` (15), `train_periods` (10),
`examples_per_period` (200), `transform` ("rotate" or "shear"), `rates` (one per cluster,
1 to 10 clusters, each >= 0; default (0, 3, 6, 10) degrees per period for "rotate",
(0, 0.02, 0.05, 0.1) per period for "shear"), `eval_split` ("test" or "validation").
"""

from __future__ import annotations

import numpy as np

from jaxml.data import drift, spurious
from jaxml.data.base import Dataset, Field
from jaxml.errors import ConfigError

NAME = "drifting_digits"
DEFAULT_RATES = {"rotate": (0.0, 3.0, 6.0, 10.0), "shear": (0.0, 0.02, 0.05, 0.1)}
DEFAULTS = {"seed": 0, "split_seed": 0, "periods": 15, "train_periods": 10,
            "examples_per_period": 200, "transform": "rotate", "rates": None,
            "eval_split": "test"}
NUM_CLASSES = 10


def settings(data_config) -> dict:
  transform = data_config.get("transform", DEFAULTS["transform"])
  if transform not in DEFAULT_RATES:
    raise ConfigError(f"{NAME}: data.transform={transform!r}: choose "
                      f"{' or '.join(DEFAULT_RATES)}")
  values = drift.settings(data_config, {**DEFAULTS, "rates": DEFAULT_RATES[transform]}, NAME)
  drift.check_integer(values, "split_seed", 0, NAME)
  if len(values["rates"]) > NUM_CLASSES:
    raise ConfigError(f"{NAME}: data.rates has {len(values['rates'])} clusters; at most "
                      f"{NUM_CLASSES}, one per class")
  return values


def drift_rates(data_config) -> np.ndarray:
  """The true rate of each cluster [C]: degrees ("rotate") or shear ("shear") per period."""
  return settings(data_config)["rates"]


def inverse_maps(amounts: np.ndarray, transform: str) -> np.ndarray:
  """[N, 2, 2]: the (row, col) matrices taking an output pixel's offset from the centre to
  the input's it is read from, for a rotation by `amounts` degrees or a shear by `amounts`."""
  amounts = np.asarray(amounts, np.float64)
  out = np.zeros((len(amounts), 2, 2))
  if transform == "rotate":
    radians = np.deg2rad(amounts)
    cos, sin = np.cos(radians), np.sin(radians)
    out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = cos, sin, -sin, cos
  else:
    out[:, 0, 0], out[:, 1, 0], out[:, 1, 1] = 1, -amounts, 1
  return out


def affine_warp(images: np.ndarray, inverse: np.ndarray) -> np.ndarray:
  """[N, H, W] images, each read at centre + inverse[i] @ (pixel - centre): bilinear, with
  zeros outside the image (scipy.ndimage's mode "grid-constant")."""
  n, height, width = images.shape
  rows, cols = np.meshgrid(np.arange(height) - (height - 1) / 2,
                           np.arange(width) - (width - 1) / 2, indexing="ij")
  source_row = (height - 1) / 2 + inverse[:, 0, :1, None] * rows + inverse[:, 0, 1:, None] * cols
  source_col = (width - 1) / 2 + inverse[:, 1, :1, None] * rows + inverse[:, 1, 1:, None] * cols
  row0, col0 = np.floor(source_row).astype(np.int64), np.floor(source_col).astype(np.int64)
  row_frac, col_frac = source_row - row0, source_col - col0
  index = np.arange(n)[:, None, None]
  out = np.zeros(images.shape, np.float64)
  for dr, row_weight in ((0, 1 - row_frac), (1, row_frac)):
    for dc, col_weight in ((0, 1 - col_frac), (1, col_frac)):
      r, c = row0 + dr, col0 + dc
      inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
      pixel = images[index, np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
      out += np.where(inside, pixel, 0.0) * row_weight * col_weight
  return out


def transform_images(images: np.ndarray, amounts: np.ndarray, transform: str) -> np.ndarray:
  """[N, 8, 8] digits in [0, 1] rotated / sheared by `amounts` [N] -> float32 in [0, 1]."""
  warped = affine_warp(images.astype(np.float64), inverse_maps(amounts, transform))
  return np.clip(warped, 0, 1).astype(np.float32)


def cluster_names(num_clusters: int) -> list[str]:
  return ["_".join(str(k) for k in range(c, NUM_CLASSES, num_clusters))
          for c in range(num_clusters)]


def load(data_config) -> Dataset:
  values = settings(data_config)
  rates, num_clusters = values["rates"], len(values["rates"])
  pools, pool_labels = spurious.digit_splits(values["split_seed"])

  def draw(rng, period, split):
    chosen = rng.integers(len(pool_labels[split]), size=values["examples_per_period"])
    label = pool_labels[split][chosen]
    cluster = (label % num_clusters).astype(np.int32)
    images = transform_images(pools[split][chosen], rates[cluster] * period,
                              values["transform"])
    return {"image": images[..., None], "label": label.astype(np.int32), "cluster": cluster}

  splits = drift.generate(values, draw)
  return drift.dataset(splits, {"image": Field((8, 8, 1), "float32")}, NUM_CLASSES,
                       [str(p) for p in range(values["periods"])], cluster_names(num_clusters),
                       NAME, class_names=spurious.DIGIT_NAMES)
