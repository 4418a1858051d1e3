"""Files that sources ship with jaxml (`jaxml/data/files/<source>/`), or a user's own copy.

Tabular sources (`adult`, `compas`, `fico`) read small public files shipped as package data,
each folder with a README giving source and licence; `data.dir` points a source at the
user's own copy instead, plain or gzipped.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os

import numpy as np

from jaxml.errors import ConfigError


def read_text(source: str, name: str, data_dir: str = "", shipped: str = "") -> tuple[str, str]:
  """(where, text) of file `name` for source `source`: `name` or `name.gz` in `data_dir`
  when given, else the copy shipped as `files/<source>/<shipped or name>`. A missing or
  unreadable file is a ConfigError naming it."""
  if data_dir:
    for candidate in (name, f"{name}.gz"):
      path = os.path.join(data_dir, candidate)
      if os.path.exists(path):
        with open(path, "rb") as f:
          raw = f.read()
        break
    else:
      raise ConfigError(f"{source}: data.dir={data_dir!r} has neither {name} nor {name}.gz")
  else:
    inside = f"files/{source}/{shipped or name}"
    path = f"jaxml/data/{inside}"
    raw = importlib.resources.files("jaxml.data").joinpath(inside).read_bytes()
  try:
    return path, (gzip.decompress(raw) if path.endswith(".gz") else raw).decode("utf-8")
  except (OSError, EOFError, UnicodeDecodeError) as err:
    raise ConfigError(f"{source}: {path} cannot be read: {err}") from None


def category_codes(source: str, column: str, values, categories: tuple[str, ...]):
  """int32 codes of the strings `values` (a table column) in `categories` order; a value not
  among them is a ConfigError naming the source and column."""
  found, codes = np.unique(values, return_inverse=True)
  unknown = sorted(set(found.tolist()) - set(categories))
  if unknown:
    raise ConfigError(f"{source}: column {column!r} has values {unknown}; expected "
                      f"{categories}")
  return np.array([categories.index(v) for v in found.tolist()], np.int32)[codes]
