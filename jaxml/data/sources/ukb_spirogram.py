"""Real spirograms in UK Biobank field 3066's layout ("blow curve time series"), for users
with approved access (issue 23).

UK Biobank stores each spirometry blow (field 3066, array index = blow 0, 1, 2, ...) as one
string of comma-separated integer volumes in mL, sampled every 10 ms from the start of the
blow. This reader takes those strings in a long table, one blow per row, which is what a
showcase export of field 3066 becomes after melting its array columns:

- a text file with a header row; tab-separated when its name ends in `.tsv` or `.txt`,
  otherwise comma-separated with the samples field quoted (RFC 4180, as Python's csv writes);
- columns `eid` (integer participant id), `blow` (integer, field 3066's array index),
  `samples` (the comma-separated volumes in mL, the first at time zero) and, for training,
  `label` (0 or 1, e.g. a COPD status from medical records). Other columns are ignored.

Each blow becomes volume–time in litres (mL / 1000) and the flow–volume curve on the 1,000
volumes of jaxml.data.spirogram.flow_volume — the same function the `spirometry` simulator
uses — plus fev1, fvc, ratio and pef from the samples (spirogram.measures). A blow must have
between `min_samples` (101: FEV1 needs the sample at 1 s) and `max_samples` (1500: 15 s)
samples, all finite numbers; anything else is one ConfigError naming the file's line.

`load` (source `ukb_spirogram`, `data.path`): the Dataset of the simulator's layout for the
fields a real file has: `flow_volume` float32 [1000, 1] (input), `label` int32 (target),
`fev1`, `fvc`, `ratio`, `pef` float32, `eid`, `blow` int32. Participants (all their blows)
are split into train and test by a seeded permutation of their eids (`test_fraction`).
Config: `path` (required), `seed` (0), `test_fraction` (0.2), `min_samples` (101),
`max_samples` (1500), `grid` ("relative" or "absolute"), `grid_volume` (8.0 L).
"""

from __future__ import annotations

import csv
import numbers
import pathlib

import numpy as np

from jaxml.data import spirogram
from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError

NAME = "ukb_spirogram"
COLUMNS = ("eid", "blow", "samples")
DEFAULTS = {"path": None, "seed": 0, "test_fraction": 0.2, "min_samples": 101,
            "max_samples": 1500, "grid": "relative", "grid_volume": 8.0}
MEASURES = ("fev1", "fvc", "ratio", "pef")


def write(path, eids, blows, volumes_ml, labels=None) -> None:
  """Writes blows in the layout `read` accepts (samples as integer mL); for tests and for
  converting other exports. `volumes_ml` is a list of 1-D arrays."""
  path = pathlib.Path(path)
  tab = path.suffix in (".tsv", ".txt")
  with open(path, "w", newline="") as f:
    out = csv.writer(f, delimiter="\t" if tab else ",")
    out.writerow([*COLUMNS, *(["label"] if labels is not None else [])])
    for row, (eid, blow, volume) in enumerate(zip(eids, blows, volumes_ml)):
      samples = ",".join(str(int(round(v))) for v in volume)
      out.writerow([int(eid), int(blow), samples,
                    *([int(labels[row])] if labels is not None else [])])


def _samples(text: str, where: str, min_samples: int, max_samples: int) -> np.ndarray:
  text = text.strip()
  if not text:
    raise ConfigError(f"{where}: the blow is empty (no samples)")
  try:
    values = np.array([float(v) for v in text.split(",")])
  except ValueError:
    raise ConfigError(f"{where}: samples must be comma-separated numbers (mL)") from None
  if not np.all(np.isfinite(values)):
    raise ConfigError(f"{where}: sample {int(np.flatnonzero(~np.isfinite(values))[0])} is "
                      "not finite")
  if not min_samples <= len(values) <= max_samples:
    raise ConfigError(f"{where}: {len(values)} samples; a blow needs {min_samples} to "
                      f"{max_samples} (10 ms each)")
  return values


def _integer_cell(text: str, where: str, column: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise ConfigError(f"{where}: {column} {text!r} is not an integer") from None


def read(path, min_samples: int = 101, max_samples: int = 1500,
         grid_volume: float | None = None) -> dict[str, np.ndarray]:
  """The blows of a file in the module doc's layout: `eid` int64 [B], `blow` int32 [B],
  `volume_time` float32 [B, max_samples] (litres, the last value held after the blow),
  `length` int32 [B] (samples), `flow_volume` float32 [B, 1000], `fev1`, `fvc`, `ratio`,
  `pef` float32 [B], and `label` int32 [B] when the file has that column."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f"{NAME}: no file {str(path)!r}")
  tab = path.suffix in (".tsv", ".txt")
  csv.field_size_limit(1 << 24)  # a 15 s blow is ~8 kB of text; leave room
  with open(path, newline="") as f:
    rows = csv.reader(f, delimiter="\t" if tab else ",")
    header = next(rows, None)
    if header is None:
      raise ConfigError(f"{NAME}: {path.name} is empty (it needs a header row)")
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
      raise ConfigError(f"{NAME}: {path.name} has no column(s) {missing} (header: {header})")
    column = {c: header.index(c) for c in (*COLUMNS, "label") if c in header}
    out = {k: [] for k in ("eid", "blow", "volume", "label")}
    for line, row in enumerate(rows, start=2):
      where = f"{NAME}: {path.name} line {line}"
      if not row:
        continue
      if len(row) < len(header):
        raise ConfigError(f"{where}: {len(row)} fields, the header has {len(header)}")
      out["eid"].append(_integer_cell(row[column["eid"]], where, "eid"))
      out["blow"].append(_integer_cell(row[column["blow"]], where, "blow"))
      out["volume"].append(_samples(row[column["samples"]], where, min_samples, max_samples))
      if "label" in column:
        label = row[column["label"]].strip()
        if label not in ("0", "1"):
          raise ConfigError(f"{where}: label {label!r} must be 0 or 1")
        out["label"].append(int(label))
  if not out["eid"]:
    raise ConfigError(f"{NAME}: {path.name} has no blows")
  volumes = [v / 1000.0 for v in out["volume"]]  # mL -> L
  arrays = {"eid": np.array(out["eid"], np.int64), "blow": np.array(out["blow"], np.int32),
            "length": np.array([len(v) for v in volumes], np.int32),
            "volume_time": np.stack([np.pad(v, (0, max_samples - len(v)), mode="edge")
                                     for v in volumes]).astype(np.float32),
            "flow_volume": np.stack([spirogram.flow_volume(v, spirogram.GRID_POINTS,
                                                           grid_volume)
                                     for v in volumes]).astype(np.float32)}
  measured = [spirogram.measures(v) for v in volumes]
  for key in MEASURES:
    arrays[key] = np.array([m[key] for m in measured], np.float32)
  if "label" in column:
    arrays["label"] = np.array(out["label"], np.int32)
  return arrays


def settings(data_config) -> dict:
  """The config over DEFAULTS, checked: one ConfigError naming the first bad key."""
  values = {k: v if data_config.get(k) is None else data_config.get(k)
            for k, v in DEFAULTS.items()}
  if not isinstance(values["path"], (str, pathlib.Path)) or not str(values["path"]):
    raise ConfigError(f"{NAME}: data.path={values['path']!r} must name a file of blows")
  for key, least in (("seed", 0), ("min_samples", 2), ("max_samples", 2)):
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
      raise ConfigError(f"{NAME}: data.{key}={value!r} must be an integer >= {least}")
  if values["max_samples"] < values["min_samples"]:
    raise ConfigError(f"{NAME}: data.max_samples={values['max_samples']} is below "
                      f"data.min_samples={values['min_samples']}")
  fraction = values["test_fraction"]
  if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not (
      0 < fraction < 1):
    raise ConfigError(f"{NAME}: data.test_fraction={fraction!r} must be in (0, 1)")
  if values["grid"] not in ("relative", "absolute"):
    raise ConfigError(f"{NAME}: data.grid={values['grid']!r}: choose relative or absolute")
  volume = values["grid_volume"]
  if isinstance(volume, bool) or not isinstance(volume, numbers.Real) or not volume > 0:
    raise ConfigError(f"{NAME}: data.grid_volume={volume!r} must be a positive number")
  return values


def load(data_config) -> Dataset:
  values = settings(data_config)
  arrays = read(values["path"], values["min_samples"], values["max_samples"],
                values["grid_volume"] if values["grid"] == "absolute" else None)
  if "label" not in arrays:
    raise ConfigError(f"{NAME}: {values['path']} has no label column to train on")
  people = np.unique(arrays["eid"])
  if len(people) < 2:
    raise ConfigError(f"{NAME}: {values['path']} has one participant; a split needs two")
  order = np.random.default_rng(values["seed"]).permutation(people)
  test_count = min(len(people) - 1, max(1, int(round(values["test_fraction"] * len(people)))))
  test = np.isin(arrays["eid"], order[:test_count])
  examples = {"flow_volume": arrays["flow_volume"][..., None], "label": arrays["label"],
              **{k: arrays[k] for k in MEASURES}, "eid": arrays["eid"].astype(np.int32),
              "blow": arrays["blow"]}
  fields = {"flow_volume": Field((spirogram.GRID_POINTS, 1), "float32"),
            "label": Field((), "int32", ("no COPD", "COPD")),
            **{k: Field((), "float32") for k in MEASURES},
            "eid": Field((), "int32"), "blow": Field((), "int32")}
  task = Task("classification", ("flow_volume",), "label", 2)
  return Dataset(ArraySplit({k: v[~test] for k, v in examples.items()}),
                 ArraySplit({k: v[test] for k, v in examples.items()}), fields, task,
                 name=NAME)
