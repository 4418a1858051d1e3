"""Train a config once, resume it if preempted: how studies and sweeps get their trained runs.

A study names a workdir for each run it needs and calls `run_once`; rerunning the study picks
up where it stopped. A workdir that already holds a run of a *different* config is an error,
not a silent reuse: a sweep rerun with other settings must not read models it did not ask for
(the runner's own check, `workdir.check_same_config`, made before the finished summary is
trusted).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping

from jaxml.core import files
from jaxml.core import workdir as workdir_lib


def configured(template, seed: int, progress: bool, changes: Mapping[str, object] = None):
  """A copy of the run config `template` at `seed`, with the study's `progress` and
  `changes` (dotted keys, e.g. {"drift.tau": 2.0})."""
  c = copy.deepcopy(template)
  c.seed = seed
  c.progress = progress
  for key, value in (changes or {}).items():
    block, _, leaf = key.rpartition(".")
    target = c
    for part in filter(None, block.split(".")):
      target = target[part]
    target[leaf] = value
  return c


def run_once(config, workdir: str) -> dict:
  """`jaxml.runner.run(config, workdir)`, unless `workdir` holds a finished run of `config`:
  then that run's summary. A preempted run resumes from its checkpoint, and so does one that
  `config` extends (a larger num_steps)."""
  # The runner dispatches to studies, so it is imported here, not at the top.
  from jaxml import runner  # pylint: disable=import-outside-toplevel

  workdir_lib.check_same_config(workdir, config)
  try:
    summary = files.read_json(os.path.join(workdir, "artifacts", "summary.json"))
    # `completed` since a signal stops a run in any phase; older summaries say `preempted`.
    finished = summary.get("completed", not summary.get("preempted"))
    if finished and summary.get("step", 0) >= config.get("num_steps", 0):
      return summary
  except FileNotFoundError:
    pass
  return runner.run(config, workdir)
