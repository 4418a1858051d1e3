"""MovieLens ratings (TFDS, read TF-free) as a logged click task for the recommender.

Source `movielens`. The `clicklog` simulator gives issue 18's recommender a known ground truth;
this source gives it real logged data, with the same layout, so one model and one variant
serve both. Config (all optional): `tfds_name` ("movielens/100k-ratings"; any `-ratings`
config, e.g. "movielens/1m-ratings"), `data_dir` ("" = TFDS default), `vocab` (10,000
buckets per field), `like_threshold` (4.0 stars), `test_fraction` (0.2), `seed` (0).

Fields: `ids` int32 [F], each field's raw value hashed into `vocab` buckets by clicklog's
hash, so distinct values of a field collide as real hashed ids do; `click` int32, 1 when the
rating is at least `like_threshold` (a "like": the 2-class task of the click log, ~55% of
100k's ratings at 4 stars); `rating` float32, the stars themselves. Task: 2-class
classification of `click` from `ids`. The F fields, in this order: user, movie, the movie's
first genre (TFDS lists genres alphabetically; -1 for none), then, where the dataset has
them (100k and 1m do, 20m and 25m do not), occupation, gender and age bucket. String ids
are keyed by a fixed hash of their bytes, not by their rank among the ids present, so a
user's bucket does not depend on which other users a dataset holds.

Split: TFDS MovieLens has only "train", so `test_fraction` of its rows, chosen by a
permutation seeded by `seed`, are the test split and the rest the training split (each in
record order). Rows are read once, eagerly, into arrays, so training then runs as fast as on
the simulator. TFDS decodes each record in Python, ~150 us a record here (measured on
generated rows), so loading should take ~15 s for 100k and ~2.5 minutes for 1m.

Reading needs no TensorFlow, but preparing the dataset does, once, as ArrayRecord:

    pip install 'jaxml[tf]' && tfds build movielens/100k-ratings --file_format=array_record
"""

from __future__ import annotations

import hashlib

import numpy as np
# Importing the builder registers it: tfds imports its dataset modules lazily.
from tensorflow_datasets.structured import movielens as _tfds_movielens  # noqa: F401

from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.data.sources.clicklog import hash_ids
from jaxml.data.sources.tfds import open_split
from jaxml.errors import ConfigError

FIELDS = ("user_id", "movie_id", "movie_genres", "user_occupation_label", "user_gender",
          "bucketized_user_age")
REQUIRED = (*FIELDS[:3], "user_rating")  # every -ratings config has these
DEFAULTS = {"tfds_name": "movielens/100k-ratings", "data_dir": "", "vocab": 10_000,
            "like_threshold": 4.0, "test_fraction": 0.2, "seed": 0}
SPLIT = 0  # the split permutation's random stream, seeded by (seed, SPLIT)
CHUNK = 50_000  # rows converted to arrays at a time, so a million rows never sit as dicts


def settings(data_config) -> dict:
  """The config's values over DEFAULTS, checked; ConfigError naming the bad key."""
  if data_config.source != "movielens":
    raise ConfigError(f"source {data_config.source!r}: use 'movielens' and pick the TFDS "
                      "config with data.tfds_name (e.g. 'movielens/1m-ratings')")
  values = {k: data_config.get(k, v) for k, v in DEFAULTS.items()}
  for key, least in (("vocab", 1), ("seed", 0)):
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
      raise ConfigError(f"data.{key}={value!r} must be an integer >= {least}")
  fraction = values["test_fraction"]
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
    raise ConfigError(f"data.test_fraction={fraction!r} must be in (0, 1)")
  threshold = values["like_threshold"]
  if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
    raise ConfigError(f"data.like_threshold={threshold!r} must be a number of stars")
  return values


def string_keys(values) -> np.ndarray:
  """uint64 [n]: a fixed hash (blake2b) of each string's bytes; each distinct string once."""
  as_bytes = np.array([v.encode() if isinstance(v, str) else bytes(v) for v in values],
                      dtype=object)
  unique, inverse = np.unique(as_bytes, return_inverse=True)
  keys = [int.from_bytes(hashlib.blake2b(u, digest_size=8).digest(), "little") for u in unique]
  return np.array(keys, np.uint64)[inverse.reshape(-1)]


def number_keys(values) -> np.ndarray:
  """uint64 [n]: rounded numbers (labels, booleans, age buckets); -1 wraps to 2^64 - 1."""
  return np.rint(np.asarray(values, np.float64)).astype(np.int64).astype(np.uint64)


def raw_keys(records: list, fields: tuple[str, ...]) -> np.ndarray:
  """uint64 [n, len(fields)]: one integer key per raw field value, for `hash_ids`."""
  columns = []
  for field in fields:
    values = [record[field] for record in records]
    if field == "movie_genres":
      columns.append(number_keys([genres[0] if len(genres) else -1 for genres in values]))
    elif field in ("user_id", "movie_id"):
      columns.append(string_keys(values))
    else:
      columns.append(number_keys(values))
  return np.stack(columns, axis=1)


def present_fields(record, name: str) -> tuple[str, ...]:
  """The FIELDS this dataset has; ConfigError if it lacks one that every rating has."""
  missing = [key for key in REQUIRED if key not in record]
  if missing:
    raise ConfigError(f"TFDS dataset {name!r} has no feature(s) {missing} (available: "
                      f"{sorted(record)}); data.tfds_name must be a movielens '-ratings' config")
  return tuple(field for field in FIELDS if field in record)


def read_rows(source, name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """(raw keys [n, F] uint64, ratings [n] float32, field names) of every record, in order."""
  if not len(source):
    raise ConfigError(f"TFDS dataset {name!r} has no ratings")
  fields = present_fields(source[0], name)
  keys, ratings = [], []
  for start in range(0, len(source), CHUNK):
    records = [source[i] for i in range(start, min(start + CHUNK, len(source)))]
    keys.append(raw_keys(records, fields))
    ratings.append(np.array([record["user_rating"] for record in records], np.float32))
  return np.concatenate(keys), np.concatenate(ratings), fields


def split_rows(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train rows, test rows): a seeded partition of range(n), each in record order."""
  test_size = round(n * test_fraction)
  if not 0 < test_size < n:
    raise ConfigError(f"data.test_fraction={test_fraction} of {n} ratings leaves an empty "
                      "split")
  order = np.random.default_rng([seed, SPLIT]).permutation(n)
  return np.sort(order[test_size:]), np.sort(order[:test_size])


def load(data_config) -> Dataset:
  values = settings(data_config)
  name = values["tfds_name"]
  source = open_split(name, "train", values["data_dir"] or None)
  keys, ratings, fields = read_rows(source, name)
  arrays = {"ids": hash_ids(keys, values["vocab"]),
            "click": (ratings >= values["like_threshold"]).astype(np.int32),
            "rating": ratings}
  train_rows, test_rows = split_rows(len(ratings), values["test_fraction"], values["seed"])
  train = ArraySplit({k: v[train_rows] for k, v in arrays.items()})
  test = ArraySplit({k: v[test_rows] for k, v in arrays.items()})
  spec = {"ids": Field((len(fields),), "int32"),
          "click": Field((), "int32", ("not liked", "liked")),
          "rating": Field((), "float32")}
  return Dataset(train, test, spec, Task("classification", ("ids",), "click", 2), name=name)
