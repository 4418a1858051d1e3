"""sklearn's digits with a bright border patch whose position is a shortcut for the class.

Source `patched_digits` (issue 19): the shortcut is a 2x2 square of full intensity at one of
ten places on the image's border, one place per class, so a network can read the class off a
few pixels instead of the digit's shape. Deterministic in `data.seed` (patches) and
`data.split_seed` (which digits are in which split); no download.

The generative model: the 8x8 image seen as a 4x4 grid of 2x2 cells; its 12 border cells
minus the two in the middle of the left edge are the ten places PATCH_CELLS (the four corners
first, class 0 top-left, 1 top-right, 2 bottom-right, 3 bottom-left, then the top, right,
bottom edges). The patch overwrites its cell with 1.0 (the digits' border pixels are mostly
blank). In train, exactly round(alignment * n_c) of class c's digits get patch c, the rest a
uniformly random other class's patch; in validation and test the patch is independent of the
label (each place equally often within each class, to one). See jaxml/data/spurious.py.

Fields: `image` float32 [8, 8, 1] in [0, 1]; `label` int32; `patch` int32 (the place, i.e.
the class it is the shortcut for); `aligned` int32 (patch == label); `group` int32 =
label * 10 + patch. Task: 10-class classification of `label` from `image`, groups ("group",
"aligned").

Splits and config as `coloured_digits` (without `colour_on`): `seed` (0), `split_seed` (0),
`alignment` (0.95), `eval_split` ("test" or "validation").
"""

from __future__ import annotations

import numpy as np

from jaxml.data import spurious
from jaxml.data.base import Dataset

DEFAULTS = {"seed": 0, "split_seed": 0, "alignment": 0.95, "eval_split": "test"}
PATCH = 2  # side of the square, in pixels
# (row, column) of each class's cell in the 4x4 grid of 2x2 cells.
PATCH_CELLS = ((0, 0), (0, 3), (3, 3), (3, 0), (0, 1), (0, 2), (1, 3), (2, 3), (3, 2),
               (3, 1))
PLACE_NAMES = tuple(f"cell{r}{c}" for r, c in PATCH_CELLS)


def add_patches(ink: np.ndarray, places: np.ndarray) -> np.ndarray:
  """[N, 8, 8] ink and [N] places -> [N, 8, 8, 1] with each patch's cell set to 1.0."""
  images = ink.copy()
  for place, (row, column) in enumerate(PATCH_CELLS):
    rows, columns = slice(row * PATCH, (row + 1) * PATCH), slice(column * PATCH,
                                                                 (column + 1) * PATCH)
    images[places == place, rows, columns] = 1.0
  return images[..., None]


def load(data_config) -> Dataset:
  values = spurious.settings(data_config, DEFAULTS, "patched_digits")
  return spurious.shortcut_digits(values, add_patches, "patch", PLACE_NAMES, 1,
                                  "patched_digits")
