"""Waterbirds (Sagawa et al. 2020): CUB birds pasted onto Places backgrounds, read from a folder.

Source `waterbirds` (issue 19): land- or waterbird, where the background (land or water) agrees
with the bird on 95% of the training images and is independent of it in validation and test
(each class seen equally often on each background), so a model that reads the background
fails on waterbirds on land and landbirds on water.

`data.dir` is the standard release unpacked (e.g. `waterbird_complete95_forest2water2/`):
`<dir>/metadata.csv`, columns img_id, img_filename, y, split, place, place_filename (y: 0
landbird, 1 waterbird; place: 0 land, 1 water; split: 0 train, 1 validation, 2 test), and each
image at `<dir>/<img_filename>`. Nothing is downloaded.

Fields: `image` float32 [S, S, 3] in [0, 1], S = `data.image_size`; `label` int32 (y);
`place` int32; `aligned` int32 (place == y); `group` int32 = 2 * y + place (0 landbird on
land, 1 landbird on water, 2 waterbird on land, 3 waterbird on water: Sagawa et al.'s
numbering). Task: 2-class classification of `label` from `image`, groups ("group",
"aligned"), as in jaxml/data/spurious.py.

Images are decoded when a batch is read (PIL, on a thread pool: `decode_images`), and their
centred square resized to S x S (bilinear), as the `celeba` source does; the paper's transform
instead squashes the whole image to 256 x 256 and keeps the central 224. The metadata is read
at load, and every image of the splits used must exist then.

Splits: train (4,795 images) and, as the Dataset's `test`, the release's test (5,794) or
validation (1,199) part per `data.eval_split`.

Config: `dir` (required), `image_size` (64), `eval_split` ("test" or "validation").
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from jaxml.data import spurious
from jaxml.data.base import Dataset, Field, Task
from jaxml.errors import ConfigError

DEFAULTS = {"dir": "", "image_size": 64, "eval_split": "test"}
COLUMNS = ("img_id", "img_filename", "y", "split", "place", "place_filename")
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
CLASS_NAMES = ("landbird", "waterbird")
PLACE_NAMES = ("land", "water")
DECODE_THREADS = 8  # at most; PIL releases the GIL while it decodes


def check_size(values: dict, key: str, name: str) -> int:
  value = values[key]
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ConfigError(f"{name}: data.{key}={value!r} must be an integer >= 0")
  return int(value)


def check_eval_split(values: dict, name: str) -> None:
  if values["eval_split"] not in spurious.EVAL_SPLITS:
    raise ConfigError(f"{name}: data.eval_split={values['eval_split']!r}: choose "
                      f"{' or '.join(spurious.EVAL_SPLITS)}")


def decode_image(file, size: int) -> np.ndarray:
  """An image file (path or file object) -> uint8 [size, size, 3]: its centred square (the
  shorter side's length) resized to `size` (bilinear); JPEGs are decoded straight at the
  smallest reduced scale still >= size. size 0 keeps the stored size."""
  from PIL import Image, ImageOps  # pylint: disable=import-outside-toplevel  # when reading

  with Image.open(file) as image:
    if not size:
      return np.asarray(image.convert("RGB"))
    image.draft("RGB", (size, size))  # JPEG only: DCT scaling to >= size, else a no-op
    return np.asarray(ImageOps.fit(image.convert("RGB"), (size, size), Image.BILINEAR))


@functools.cache
def _decoders() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(min(DECODE_THREADS, os.cpu_count() or 1),
                                               thread_name_prefix="jaxml-decode")


def decode_images(files: Sequence, size: int, shape: tuple[int, ...],
                  read_one: Callable = decode_image) -> np.ndarray:
  """float32 [len(files), *shape] in [0, 1]: `read_one(file, size)` of each, on threads."""
  if not len(files):
    return np.zeros((0, *shape), np.float32)
  images = list(_decoders().map(functools.partial(read_one, size=size), files))
  return np.stack(images).astype(np.float32) * np.float32(1 / 255)


@dataclasses.dataclass(frozen=True)
class LazyImageSplit:
  """A split whose small fields (`arrays`) are in memory and whose `image`s are decoded
  when read: `images(indices)` -> float32 [len(indices), *image_shape]."""

  arrays: Mapping[str, np.ndarray]
  images: Callable[[np.ndarray], np.ndarray]

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f"indices out of range for a split of {len(self)} examples")
    return {"image": self.images(indices), **{k: v[indices] for k, v in self.arrays.items()}}


def read_metadata(folder: str) -> dict[str, np.ndarray]:
  """metadata.csv as arrays: `img_filename` (str), `y`, `split`, `place` (int32)."""
  path = os.path.join(folder, "metadata.csv")
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  header = set(rows[0]) if rows else set()
  missing = [column for column in COLUMNS if column not in header]
  if missing:
    raise ConfigError(f"waterbirds: {path} has no column(s) {missing} (it needs "
                      f"{', '.join(COLUMNS)}) or no rows")
  out = {"img_filename": np.array([row["img_filename"] for row in rows])}
  for column, allowed in (("y", (0, 1)), ("place", (0, 1)), ("split", (0, 1, 2))):
    try:
      values = np.array([int(row[column]) for row in rows], np.int32)
    except ValueError as err:
      raise ConfigError(f"waterbirds: {path} column {column!r}: {err}") from None
    bad = np.flatnonzero(~np.isin(values, allowed))
    if bad.size:
      raise ConfigError(f"waterbirds: {path} column {column!r} is {values[bad[0]]} on data "
                        f"row {bad[0] + 1}; it must be one of {allowed}")
    out[column] = values
  return out


def read_image(path: str, size: int) -> np.ndarray:
  try:
    return decode_image(path, size)
  except OSError as err:  # a missing, truncated or non-image file (PIL's errors are OSErrors)
    raise ConfigError(f"waterbirds: cannot read image {path}: {err}") from None


def _settings(data_config) -> dict:
  values = {k: data_config.get(k, v) for k, v in DEFAULTS.items()}
  check_size(values, "image_size", "waterbirds")
  check_eval_split(values, "waterbirds")
  folder = values["dir"]
  if not folder or not os.path.isfile(os.path.join(folder, "metadata.csv")):
    raise ConfigError(
        f"waterbirds: data.dir={folder!r} must be the unpacked Waterbirds release, a folder "
        "holding metadata.csv (img_id, img_filename, y, split, place, place_filename) and "
        "the images it names, e.g. waterbird_complete95_forest2water2/")
  return values


def load(data_config) -> Dataset:
  values = _settings(data_config)
  folder, size = values["dir"], int(values["image_size"])
  if not size:
    raise ConfigError("waterbirds: data.image_size must be > 0 (the images differ in size)")
  metadata = read_metadata(folder)
  shape = (size, size, 3)
  splits = {}
  for role, name in (("train", "train"), ("test", values["eval_split"])):
    rows = np.flatnonzero(metadata["split"] == SPLIT_IDS[name])
    if not rows.size:
      raise ConfigError(f"waterbirds: {folder}/metadata.csv has no {name} rows "
                        f"(split {SPLIT_IDS[name]})")
    paths = np.array([os.path.join(folder, f) for f in metadata["img_filename"][rows]])
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
      raise ConfigError(f"waterbirds: image file {missing[0]} is missing ({len(missing)} of "
                        f"the {len(paths)} {name} images named in metadata.csv are)")
    y, place = metadata["y"][rows], metadata["place"][rows]
    arrays = {"label": y, "place": place, "aligned": (place == y).astype(np.int32),
              "group": spurious.group_ids(y, place, 2)}
    read = functools.partial(_read_images, paths=paths, size=size, shape=shape)
    splits[role] = LazyImageSplit(arrays, read)
  fields = {"image": Field(shape, "float32"), "label": Field((), "int32", CLASS_NAMES),
            **spurious.group_fields("place", CLASS_NAMES, PLACE_NAMES)}
  task = Task("classification", ("image",), "label", 2, groups=("group", "aligned"))
  return Dataset(splits["train"], splits["test"], fields, task, name="waterbirds")


def _read_images(indices: np.ndarray, *, paths: np.ndarray, size: int, shape) -> np.ndarray:
  return decode_images(list(paths[indices]), size, shape, read_one=read_image)
