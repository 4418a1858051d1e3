"""Train a config once, resume it if preempted: how studies and sweeps get their trained runs.

A study names a workdir for each run it needs and calls `run_once`; rerunning the study picks
up where it stopped. A workdir that already holds a run of a *different* config is an error,
not a silent reuse: a sweep rerun with other settings must not read models it did not ask for.
"""

from __future__ import annotations

import os

from jaxml.core import files
from jaxml.errors import ConfigError
from jaxml.studies import results


def run_once(config, workdir: str) -> dict:
  """`jaxml.runner.run(config, workdir)`, unless `workdir` holds a finished run of `config`:
  then that run's summary. A preempted run resumes from its checkpoint."""
  # The runner dispatches to studies, so it is imported here, not at the top.
  from jaxml import runner  # pylint: disable=import-outside-toplevel

  check_same_config(config, workdir)
  try:
    summary = files.read_json(os.path.join(workdir, "artifacts", "summary.json"))
    if not summary.get("preempted"):
      return summary
  except FileNotFoundError:
    pass
  return runner.run(config, workdir)


def check_same_config(config, workdir: str) -> None:
  """Raises ConfigError if `workdir/config.json` is a different config (progress bars and the
  device count aside)."""
  try:
    old = results.settings(files.read_json(os.path.join(workdir, "config.json")))
  except FileNotFoundError:
    return
  new = results.settings(config)
  if old != new:
    where = _first_difference(old, new)
    raise ConfigError(f"{workdir} holds a run of another config ({where}); use another "
                      "directory or remove it")


def _first_difference(old, new, prefix: str = "") -> str:
  if isinstance(old, dict) and isinstance(new, dict):
    for key in sorted(set(old) | set(new)):
      if old.get(key) != new.get(key):
        return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
  return f"{prefix.rstrip('.')}: {old!r} there, {new!r} asked"
