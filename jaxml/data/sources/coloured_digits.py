"""sklearn's digits in colour, the colour a shortcut for the class: spurious-feature data.

Source `coloured_digits`, a small offline stand-in for Coloured MNIST (issue 19): a network
trained by ERM learns the colour, which is easier than the shape, and fails where the two
disagree. Deterministic in `data.seed` (colours) and `data.split_seed` (which digits are in
which split); no download.

The generative model: each digit's 8x8 ink s in [0, 1] is drawn in colour
`PALETTE[colour]` (one fixed colour per class, matplotlib's tab10), either as the background
(`data.colour_on="background"`: rgb = s + (1 - s) * colour, a white digit on a coloured
ground) or as the stroke (`"stroke"`: rgb = s * colour on black). In train, exactly
round(alignment * n_c) of class c's digits get colour c, the rest a uniformly random other
class's colour; in validation and test the colour is independent of the label (each colour
equally often within each class, to one). See jaxml/data/spurious.py.

Fields: `image` float32 [8, 8, 3] in [0, 1]; `label` int32 (the digit); `colour` int32 (the
index of the colour in PALETTE, i.e. the class it is the shortcut for); `aligned` int32
(colour == label); `group` int32 = label * 10 + colour, the (label, colour) pair. Task:
10-class classification of `label` from `image`, groups ("group", "aligned").

Splits: 1,077 train, 360 validation and 360 test digits (stratified by `data.split_seed`);
the Dataset's `test` split is the validation part when `data.eval_split="validation"`.

Config (all optional): `seed` (0), `split_seed` (0), `alignment` (0.95, in [0, 1]; 0.9-0.99
is the usual range, 0.1 makes the colour uninformative), `colour_on` ("background" or
"stroke"), `eval_split` ("test" or "validation").
"""

from __future__ import annotations

import numpy as np

from jaxml.data import spurious
from jaxml.data.base import Dataset
from jaxml.errors import ConfigError

DEFAULTS = {"seed": 0, "split_seed": 0, "alignment": 0.95, "colour_on": "background",
            "eval_split": "test"}
COLOUR_ON = ("background", "stroke")
COLOUR_NAMES = ("blue", "orange", "green", "red", "purple", "brown", "pink", "grey", "olive",
                "cyan")
PALETTE = np.array([  # matplotlib's tab10, RGB in [0, 1]
    [0.122, 0.467, 0.706], [1.000, 0.498, 0.055], [0.173, 0.627, 0.173],
    [0.839, 0.153, 0.157], [0.580, 0.404, 0.741], [0.549, 0.337, 0.294],
    [0.890, 0.467, 0.761], [0.498, 0.498, 0.498], [0.737, 0.741, 0.133],
    [0.090, 0.745, 0.812]], np.float32)


def colourise(ink: np.ndarray, colours: np.ndarray, colour_on: str) -> np.ndarray:
  """[N, 8, 8] ink in [0, 1] and [N] colour indices -> [N, 8, 8, 3] RGB in [0, 1]."""
  rgb = PALETTE[colours][:, None, None, :]
  s = ink[..., None]
  return s * rgb if colour_on == "stroke" else s + (1 - s) * rgb


def load(data_config) -> Dataset:
  values = spurious.settings(data_config, DEFAULTS, "coloured_digits")
  colour_on = values["colour_on"]
  if colour_on not in COLOUR_ON:
    raise ConfigError(f"coloured_digits: data.colour_on={colour_on!r}: choose "
                      f"{' or '.join(COLOUR_ON)}")
  return spurious.shortcut_digits(
      values, lambda ink, colours: colourise(ink, colours, colour_on), "colour", COLOUR_NAMES,
      3, "coloured_digits")
