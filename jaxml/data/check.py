"""Data checked against its description when it loads: bad data is one line, not a traceback.

A source describes its examples (`Dataset.fields`, `Dataset.task`); `check_dataset` holds every
split to that description before anything compiles, so a NaN image, a uint8 array where float32
is declared, a test split of another shape, an empty split or a label outside the classes is a
`ConfigError` naming the source, the split and the field (exit 2), instead of a shape error
inside a jitted step or a run that trains until its first NaN.

What is checked, per split and field:

- the split is not empty, and reads exactly the described fields (none missing, none extra);
- each array has the declared dtype and per-example shape, and as many examples as the split;
- float fields hold only finite values (the message gives the first bad example's index);
- a classification target lies in [0, num_classes), an integer multi-label target in {0, 1},
  and any other field with `categories` in [0, len(categories));
- the task's example weights (`Task.weight`) are >= 0, and so are a partition's labels.

How much is checked depends on where the examples live. An in-memory `ArraySplit` (digits,
synthetic, adult, most plug-ins) is checked whole, vectorised and in bounded chunks (50k
CIFAR-sized float images take well under a second). Any other split (TFDS records, episode
windows, BabyAI videos, RL Unplugged's lazily decoded frames) is only readable example by
example, and reading all of it would cost as much as an epoch; `SAMPLE` examples spread over it,
always including the first and the last, are read and checked instead. Values in the examples
not sampled are not checked here; the training loop's non-finite guard (`config.nonfinite`) is
what catches those.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxml.data.base import ArraySplit, Dataset, Field, Split, Task
from jaxml.errors import ConfigError

SAMPLE = 16  # examples read from a split that is not held in memory
CHUNK_VALUES = 1 << 22  # values per vectorised pass: bounds the temporary masks (~4 MB)


def check_dataset(dataset: Dataset, source: str) -> None:
  """Raises ConfigError (one line: source, split, field) unless both splits fit the description."""
  for name in ("train", "test"):
    check_split(getattr(dataset, name), dataset.fields, dataset.task,
                f"dataset {source!r}: {name}")


def check_split(split: Split, fields: Mapping[str, Field], task: Task, where: str) -> None:
  """Checks all of an in-memory split, or `SAMPLE` examples of any other (see the module doc)."""
  size = len(split)
  if size == 0:
    raise ConfigError(f"{where} split is empty")
  non_negative = tuple(name for name in (task.weight, task.kind == "partition" and task.target)
                       if name)
  if isinstance(split, ArraySplit):
    _check_arrays(split.arrays, fields, _limits(fields, task), size, None, where, non_negative)
  else:
    rows = sample_indices(size)
    _check_arrays(_read(split, rows, where), fields, _limits(fields, task), len(rows), rows,
                  where, non_negative)


def check_examples(split: Split, fields: Mapping[str, Field], indices=(0,), where: str = ""):
  """Reads `indices` of `split` and raises ConfigError unless they are exactly `fields` (keys,
  dtypes, shapes, finite floats): a source's promise, checked on the examples it reads."""
  rows = np.asarray(indices, np.int64)
  _check_arrays(_read(split, rows, where or "split"), fields, {}, len(rows), rows,
                where or "split")


def sample_indices(size: int, count: int = SAMPLE) -> np.ndarray:
  """`count` indices spread evenly over [0, size), the first and the last included."""
  return np.unique(np.linspace(0, size - 1, min(size, count)).round().astype(np.int64))


def _limits(fields: Mapping[str, Field], task: Task) -> dict[str, int]:
  """Integer fields whose values must lie in [0, limit): categorical fields and class targets."""
  limits = {name: len(spec.categories) for name, spec in fields.items() if spec.categories}
  if task.kind == "classification":
    limits[task.target] = task.num_classes
  elif task.kind == "multilabel" and np.issubdtype(fields[task.target].dtype, np.integer):
    limits[task.target] = 2  # 0/1 per label; its categories name the labels, not values
  return limits


def _read(split: Split, rows: np.ndarray, where: str) -> Mapping[str, np.ndarray]:
  try:
    batch = split.read(rows)
  except (ValueError, IndexError, KeyError, TypeError) as err:
    # e.g. examples of different shapes that cannot be stacked into one batch
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    raise ConfigError(f"{where}: reading examples {rows.tolist()} failed: {first}") from None
  if not isinstance(batch, Mapping):
    raise ConfigError(f"{where}: read returned {type(batch).__name__}, not a dict of arrays")
  return batch


def _check_arrays(arrays: Mapping[str, np.ndarray], fields: Mapping[str, Field],
                  limits: Mapping[str, int], count: int, rows, where: str,
                  non_negative=()) -> None:
  """`rows` maps a position in `arrays` to the split's example index (None: the same);
  fields named in `non_negative` must hold values >= 0."""
  missing = [name for name in fields if name not in arrays]
  if missing:
    raise ConfigError(f"{where} lacks field {missing[0]!r} (it has {', '.join(map(str, arrays))})")
  extra = [name for name in arrays if name not in fields]
  if extra:
    raise ConfigError(f"{where} has field {extra[0]!r}, which the dataset does not describe")
  for name, spec in fields.items():
    value = np.asarray(arrays[name])
    if value.dtype != np.dtype(spec.dtype):
      raise ConfigError(f"{where} field {name!r} is {value.dtype.name}, declared {spec.dtype}")
    if value.ndim == 0 or value.shape[1:] != spec.shape:
      raise ConfigError(f"{where} field {name!r} has examples of shape "
                        f"{tuple(value.shape[1:])}, declared {spec.shape}")
    if len(value) != count:
      raise ConfigError(f"{where} field {name!r} has {len(value)} examples, the split {count}")
    _check_values(value, name, limits.get(name), rows, where)
    if name in non_negative:
      bad = _first_bad(value, lambda chunk: chunk < 0)
      if bad is not None:
        raise ConfigError(f"{where} field {name!r} holds {np.min(value[bad])} at example "
                          f"{_example(bad, rows)}: its values must be >= 0")


def _check_values(value: np.ndarray, name: str, limit: int | None, rows, where: str) -> None:
  if np.issubdtype(value.dtype, np.floating):
    bad = _first_bad(value, lambda chunk: ~np.isfinite(chunk))
    if bad is not None:
      kind = "NaN" if np.isnan(value[bad]).any() else "Inf"
      raise ConfigError(f"{where} field {name!r} holds {kind} at example "
                        f"{_example(bad, rows)} (float fields must be finite)")
  if limit is not None:
    bad = _first_bad(value, lambda chunk: (chunk < 0) | (chunk >= limit))
    if bad is not None:
      raise ConfigError(f"{where} field {name!r} is {value[bad]} at example "
                        f"{_example(bad, rows)}, outside [0, {limit}) ({limit} classes)")


def _example(position: int, rows) -> int:
  return int(position if rows is None else rows[position])


def _first_bad(value: np.ndarray, is_bad) -> int | None:
  """The first example (leading index) where `is_bad` holds for any value, scanned in chunks
  of about CHUNK_VALUES values so the temporary mask stays small on large splits."""
  per_example = int(np.prod(value.shape[1:], dtype=np.int64)) or 1
  step = max(1, CHUNK_VALUES // per_example)
  for start in range(0, len(value), step):
    chunk = value[start:start + step]
    bad = is_bad(chunk).reshape(len(chunk), -1).any(axis=1)
    if bad.any():
      return start + int(np.argmax(bad))
  return None
