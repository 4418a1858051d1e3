"""Real time-stamped data kept one file or one folder per period (Wild-Time, CLEAR), read.

Source `periods` (issue 20), for users with real drifting data. `data.dir` (or
`source="periods:<dir>"`) holds one of two layouts, never both:

  <dir>/<period>.npz            one NumPy archive per period, or
  <dir>/<period>/*.npz          one folder per period, whose archives are concatenated in the
                                order of their file names (e.g. CLEAR's buckets in shards).

`<period>` is the period's name and must be an integer (a year such as 2012, a bucket such as
07 or 10): that is the example's timestamp, and the periods are ordered by its value, not by
its spelling (so 9 comes before 10). The period field numbers them 0..P-1 in that order
whatever the gaps (an age is a count of periods), and its categories keep the names, so a
report says "2012". Other entries of `<dir>` are ignored: files not ending in .npz, and names
starting with "." or "_".

Each archive holds, with one row per example (the same N for every array in it):

  `features` [N, ...] float, or `image` [N, H, W, C] (uint8, scaled to [0, 1], or float):
      the model input, the same one (and the same per-example shape) in every archive;
  `label` [N] integers >= 0: the class;
  `cluster` [N] integers >= 0 (optional, in all archives or none): a known sub-population,
      reported per group as the generated sources' clusters are.

Other arrays are ignored. Float inputs are cast to float32 and must be finite.

Splits are Eval-Fix, as in jaxml/data/drift.py: train is the first `data.train_periods`
periods, test every later one; fields `features` or `image`, `label`, `period` and (where the
archives have it) `cluster`; task: classification of `label`, timestamp `period`, groups
("period", "cluster") or ("period",). Read data has no known drift rates (`drift_rates`
says so). Bad input (no periods, a name that is not a period, an archive that cannot be read,
lacks `label` or an input, or whose shapes disagree) is one ConfigError naming the file.

Config: `dir` (required unless given in the source), `train_periods` (required, >= 1 and
less than the number of periods), `num_classes` (0: one more than the largest label).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from jaxml.data import drift
from jaxml.data.base import Dataset, Field
from jaxml.errors import ConfigError

NAME = "periods"
DEFAULTS = {"dir": "", "train_periods": None, "num_classes": 0}
INPUTS = ("features", "image")


def drift_rates(data_config) -> np.ndarray:
  raise ConfigError(f"{NAME}: read data has no known drift rates (only generated sources do)")


def _period_of(name: str, path: str) -> int:
  try:
    return int(name)
  except ValueError:
    raise ConfigError(f"{NAME}: {path} has no timestamp: its name {name!r} must be an integer "
                      "period (a year, a bucket number)") from None


def period_files(root: str) -> list[tuple[str, list[str]]]:
  """[(period name, [archive paths])] in time order, or one ConfigError naming the problem."""
  if not root or not os.path.isdir(root):
    raise ConfigError(f"{NAME}: data.dir={root!r} must be a folder of <period>.npz files or "
                      "<period>/ folders")
  entries = sorted(e for e in os.listdir(root) if not e.startswith((".", "_")))
  files = [e for e in entries if e.endswith(".npz") and os.path.isfile(os.path.join(root, e))]
  folders = [e for e in entries if os.path.isdir(os.path.join(root, e))]
  if files and folders:
    raise ConfigError(f"{NAME}: {root} mixes period files ({files[0]}) and period folders "
                      f"({folders[0]}); use one layout")
  if not files and not folders:
    raise ConfigError(f"{NAME}: {root} holds no <period>.npz files or <period>/ folders")
  periods = []
  for entry in files or folders:
    path = os.path.join(root, entry)
    name = entry.removesuffix(".npz") if files else entry
    if files:
      archives = [path]
    else:
      archives = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".npz")]
      if not archives:
        raise ConfigError(f"{NAME}: period folder {path} holds no .npz files")
    periods.append((_period_of(name, path), name, archives))
  periods.sort(key=lambda item: item[0])
  for (before, name_before, _), (now, name, _) in zip(periods, periods[1:]):
    if before == now:
      raise ConfigError(f"{NAME}: {root} has periods {name_before!r} and {name!r}, the same "
                        "time twice")
  return [(name, archives) for _, name, archives in periods]


def read_archive(path: str) -> dict[str, np.ndarray]:
  """{input name, "label", ["cluster"]} of one archive, checked; ConfigError naming the file."""
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {k: archive[k] for k in archive.files if k in (*INPUTS, "label", "cluster")}
  except (OSError, ValueError, zipfile.BadZipFile) as err:
    raise ConfigError(f"{NAME}: {path} cannot be read as a .npz archive: {err}") from None
  inputs = [k for k in INPUTS if k in arrays]
  if len(inputs) != 1 or "label" not in arrays:
    raise ConfigError(f"{NAME}: {path} must hold `label` and one of `features` or `image`; it "
                      f"holds {sorted(arrays) or 'neither'}")
  sizes = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
  if len(set(sizes.values())) != 1 or None in sizes.values():
    raise ConfigError(f"{NAME}: {path} arrays hold different numbers of examples: {sizes}")
  for key in ("label", "cluster"):
    if key in arrays:
      value = arrays[key]
      if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer) or (
          value.size and value.min() < 0):
        raise ConfigError(f"{NAME}: {path} `{key}` must be integers >= 0 of shape [N], got "
                          f"{value.dtype} {value.shape}")
      arrays[key] = value.astype(np.int32)
  name = inputs[0]
  value = arrays[name]
  if value.dtype == np.uint8 and name == "image":
    value = value.astype(np.float32) / 255
  elif np.issubdtype(value.dtype, np.number) and not np.issubdtype(value.dtype, np.complexfloating):
    value = value.astype(np.float32)
  else:
    raise ConfigError(f"{NAME}: {path} `{name}` must be numbers, got {value.dtype}")
  if not np.all(np.isfinite(value)):
    raise ConfigError(f"{NAME}: {path} `{name}` holds NaN or Inf")
  arrays[name] = value
  return arrays


def load(data_config) -> Dataset:
  root = data_config.source.partition(":")[2] or data_config.get("dir", "")
  periods = period_files(root)
  train_periods = data_config.get("train_periods", None)
  if train_periods is None:
    raise ConfigError(f"{NAME}: data.train_periods must be set: how many of the "
                      f"{len(periods)} periods in {root} to train on")
  drift.check_periods(len(periods), train_periods, NAME)
  first, parts = None, []
  for index, (period, archives) in enumerate(periods):
    rows = 0
    for path in archives:
      arrays = read_archive(path)
      keys = {k: v.shape[1:] for k, v in arrays.items()}
      first = first or (path, keys)
      if keys != first[1]:
        raise ConfigError(f"{NAME}: {path} holds arrays {keys} (per-example shapes) but "
                          f"{first[0]} holds {first[1]}; every archive needs the same")
      rows += len(arrays["label"])
      if len(arrays["label"]):
        parts.append({**arrays, "period": np.full(len(arrays["label"]), index, np.int32)})
    if not rows:
      raise ConfigError(f"{NAME}: period {period!r} ({archives[0]}) holds no examples")
  largest = {k: max(int(p[k].max(initial=0)) for p in parts) for k in ("label", "cluster")
             if k in first[1]}
  num_classes = drift.check_integer({"num_classes": data_config.get("num_classes", 0) or 0},
                                    "num_classes", 0, NAME)
  if num_classes and largest["label"] >= num_classes:
    raise ConfigError(f"{NAME}: labels reach {largest['label']} but data.num_classes="
                      f"{num_classes}")
  splits = {}
  for split, train in (("train", True), ("test", False)):
    chosen = [p for p in parts if (p["period"][0] < train_periods) == train]
    splits[split] = {k: np.concatenate([p[k] for p in chosen]) for k in chosen[0]}
  name = next(k for k in INPUTS if k in first[1])
  clusters = ([str(c) for c in range(largest["cluster"] + 1)] if "cluster" in largest
              else None)
  return drift.dataset(splits, {name: Field(first[1][name], "float32")},
                       num_classes or largest["label"] + 1, [n for n, _ in periods], clusters,
                       NAME)
