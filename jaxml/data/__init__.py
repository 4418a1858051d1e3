"""Data sources, loaded by name, and the one batching pipeline."""

from __future__ import annotations

import importlib
import pkgutil

from jaxml.data import sources as _sources
from jaxml.data.base import (ArraySplit, Dataset, Field, Split, Task, image_classification,
                             select_classes)
from jaxml.data.check import check_dataset
from jaxml.errors import ConfigError

__all__ = ["ArraySplit", "Dataset", "Field", "Split", "Task", "image_classification",
           "load_dataset"]


def _available() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(_sources.__path__))


def load_dataset(data_config) -> Dataset:
  """Loads `data_config.source`, which is one of

  - `<name>`: a module `jaxml.data.sources.<name>` (e.g. `digits`, `synthetic`);
  - `<name>:<arg>`: the same module, which reads `<arg>` (e.g. `tfds:cifar10`);
  - `<package.module>:<function>`: a plug-in, e.g. a generated or environment-collected
    dataset, called as `function(data_config)` and returning a `jaxml.data.Dataset`, which
    describes its `fields` and `task` (`image_classification(...)` builds the common
    image/label one).

  Whatever the source, its splits are then checked against its description (`jaxml.data.check`:
  dtypes, shapes, finite floats, non-empty splits, labels within the classes), so bad data is
  one ConfigError naming the source, split and field, before anything compiles.

  Every source module has `load(data_config) -> Dataset`. Any source takes
  `data_config.classes`, a list of class ids: only those classes are kept, relabelled
  0..k-1 in the order given (`select_classes`).
  """
  source = data_config.source
  module_name, _, _ = source.partition(":")
  if "." in module_name:
    dataset = _load_plugin(source, data_config)
  elif module_name not in _available():
    raise ConfigError(f"unknown dataset source {source!r}; available: "
                      f"{', '.join(_available())}, or a plug-in 'package.module:function'")
  else:
    dataset = _checked(importlib.import_module(f"jaxml.data.sources.{module_name}").load(
        data_config), source)
  check_dataset(dataset, source)
  classes = data_config.get("classes")
  return select_classes(dataset, classes) if classes else dataset


def _load_plugin(source: str, data_config) -> Dataset:
  module_name, _, fn_name = source.partition(":")
  try:
    fn = getattr(importlib.import_module(module_name), fn_name or "load")
  except (ImportError, AttributeError) as err:
    raise ConfigError(f"dataset plug-in {source!r} cannot be loaded: {err}") from None
  try:
    dataset = fn(data_config)
  except ConfigError as err:  # e.g. an ArraySplit of unequal arrays, built inside the plug-in
    raise ConfigError(f"dataset plug-in {source!r}: {err}") from None
  return _checked(dataset, source)


def _checked(dataset, source: str) -> Dataset:
  if not isinstance(dataset, Dataset):
    raise ConfigError(f"dataset source {source!r} returned {type(dataset).__name__}, "
                      "not a jaxml.data.Dataset")
  return dataset
