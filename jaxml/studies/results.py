"""The one results log of every study: a jsonl file whose rows are keyed by a config
fingerprint and by the row's own key, so a rerun reuses exactly the rows it would compute again.

  log = ResultsLog(os.path.join(workdir, RESULTS), fingerprint(config, exclude=("seeds",)))
  row = log.cached(("sgd", 1.0, seed), lambda: measure(...))

Each line is `{**row, "key": key, "fingerprint": tag}`. The fingerprint is a stable hash of
every setting that can change a row. The settings a sweep iterates over (which rows exist, not
what is in them) go in the key instead and are excluded from the fingerprint, so widening a
sweep reuses the rows already measured.
Rows of another fingerprint stay in the file but are never returned. A run killed mid-write
leaves a torn last line: it is dropped when the log is opened, and the file is rewritten
without it so the next row does not land on the same line. Host-only, no JAX (rule 4).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jaxml.core import files

RESULTS = "results.jsonl"
# Never change a row: progress bars, and the device count (sharding only reorders sums).
IGNORED = ("progress", "num_devices")
_RESERVED = ("key", "fingerprint")


def settings(config, *, exclude: Iterable[str] = (), ignore: Iterable[str] = IGNORED) -> dict:
  """`config` (a ConfigDict or a dict) as plain JSON data, without the top-level `exclude`
  keys (settings that cannot change a row: the sweep's axes, which are in its key, or
  settings of other rows) and without `ignore` keys at any depth."""
  if hasattr(config, "to_json_best_effort"):
    tree = json.loads(config.to_json_best_effort())
  else:
    tree = json.loads(json.dumps(config, default=str))
  ignore = frozenset(ignore)

  def strip(node):
    if not isinstance(node, dict):
      return node
    return {k: strip(v) for k, v in node.items() if k not in ignore}

  exclude = frozenset(exclude)
  return {k: v for k, v in strip(tree).items() if k not in exclude}


def fingerprint(config, *, exclude: Iterable[str] = (), ignore: Iterable[str] = IGNORED) -> str:
  """A stable 16-hex-digit hash of `settings(config, exclude=..., ignore=...)`."""
  text = json.dumps(settings(config, exclude=exclude, ignore=ignore), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _key_text(key) -> str:
  # Keys compare by their JSON text: a tuple and the list read back from the file agree.
  return json.dumps(list(key) if isinstance(key, tuple) else key, sort_keys=True)


class ResultsLog:
  """The rows of `path` made under fingerprint `tag`, by key. `write=False` (every process
  but the chief of a multi-host run) reads and computes but never touches the file."""

  def __init__(self, path: str, tag: str, *, write: bool = True):
    self.path, self.tag, self.write = path, tag, write
    self._rows: dict[str, dict] = {}
    for record in read_records(path, repair=write):
      if record.get("fingerprint") == tag and "key" in record:
        row = {k: v for k, v in record.items() if k not in _RESERVED}
        self._rows[_key_text(record["key"])] = row

  def __len__(self) -> int:
    return len(self._rows)

  def __contains__(self, key) -> bool:
    return _key_text(key) in self._rows

  def get(self, key) -> dict | None:
    """The row stored under `key` for this fingerprint, or None."""
    return self._rows.get(_key_text(key))

  def put(self, key, row: Mapping[str, Any]) -> dict:
    """Stores `row` under `key` (appended to the file at once, so a kill loses at most the
    row being written); returns it."""
    clash = [k for k in _RESERVED if k in row]
    if clash:
      raise ValueError(f"a results row may not have the field(s) {clash}")
    row = dict(row)
    if self.write:
      key_json = json.loads(_key_text(key))
      files.append_jsonl(self.path, [{**row, "key": key_json, "fingerprint": self.tag}])
    self._rows[_key_text(key)] = row
    return row

  def cached(self, key, compute: Callable[[], Mapping[str, Any]]) -> dict:
    """The row under `key`; `compute()` is called (and its row stored) only if there is none."""
    row = self.get(key)
    return row if row is not None else self.put(key, compute())

  def rows(self) -> list[dict]:
    """Every row of this fingerprint, in the order they were first stored."""
    return list(self._rows.values())


def read_records(path: str, *, repair: bool = False) -> list[dict]:
  """Every row of `path` (of any fingerprint). A torn last line (its writer was killed) is
  dropped and, with `repair`, cut from the file; a damaged line elsewhere is skipped with a
  warning (`files.read_jsonl`)."""
  return [r for r in files.read_jsonl(path, repair=repair) if isinstance(r, dict)]
