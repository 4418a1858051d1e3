"""The study protocol, and the workdir every study leaves (the same one a training run leaves).

A study is a sweep or a closed-form fit over trained runs. Its module `jaxml/studies/<name>.py`
exposes `build(config) -> Study`, which checks the whole config (ConfigError, one line naming
the key) before anything trains. A config with a top-level `study` key (instead of `algo`) is
run by `run_study`, through the runner and so the launcher:

  workdir/config.json             the resolved config
  workdir/metrics.jsonl + events  the summary's numbers, one row at step = rows measured
  workdir/results.jsonl           the study's rows (jaxml/studies/results.py), resumable
  workdir/artifacts/summary.json  the summary, with "headline", "step", "completed": True
  workdir/artifacts/metrics.png   and the study's own tables and plots next to it
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable

from jaxml.errors import ConfigError

# Modules of this package that are not studies.
LIBRARY = ("allo_report", "base", "copd_gwas", "copd_report", "diarization_peers",
           "diarization_report", "drift_peers", "fairness_report", "figures", "odor_peers",
           "odor_report", "results", "runs", "smooth_activations_report", "tables")
COMMON_OUTPUTS = ("config.json", "metrics.jsonl", "artifacts/summary.json",
                  "artifacts/metrics.png", "TensorBoard events")


@dataclasses.dataclass(frozen=True)
class Study:
  """What `build(config)` returns once the config is known to be good.

  run: workdir -> summary (numbers by name, plus anything JSON-able); it must include "step",
    the number of result rows behind the summary. Rerun on the same workdir it reuses the rows
    and runs it has already.
  headline: the summary's metric names the launcher prints, in that order.
  outputs: the files it writes beyond the common workdir contract (for the last line printed).
  """
  run: Callable[[str], dict]
  headline: tuple[str, ...]
  outputs: tuple[str, ...] = ()


def check_choices(key: str, values, allowed, what: str) -> list:
  """`values` as a list; ConfigError unless it is a non-empty list of distinct `allowed`
  entries (`what` names them in the message: "data sets", "methods")."""
  values = list(values)
  if not values or any(v not in allowed for v in values) or len(set(values)) < len(values):
    raise ConfigError(f"{key}={values}: choose distinct {what} from {', '.join(allowed)}")
  return values


def check_seeds(seeds) -> list[int]:
  """`seeds` as a list; ConfigError unless they are integers >= 0, at least one."""
  seeds = list(seeds)
  if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
    raise ConfigError(f"seeds={seeds} must be integers >= 0, at least one")
  return seeds


def available() -> list[str]:
  from jaxml import studies  # pylint: disable=import-outside-toplevel  # this package
  return sorted(m.name for m in pkgutil.iter_modules(studies.__path__) if m.name not in LIBRARY)


def load_study(name: str):
  """The module `jaxml.studies.<name>` (loaded by name: no registry to edit)."""
  names = available()
  if name not in names:
    raise ConfigError(f"unknown study {name!r}; available: {', '.join(names)}")
  return importlib.import_module(f"jaxml.studies.{name}")


def run_study(config, workdir: str) -> dict:
  """Builds `config.study` (every config check first), runs it in `workdir` (resuming what is
  there) and writes the workdir contract; returns the summary."""
  # Imported here: the runner dispatches to this function, and jax is slow to import.
  import jax  # pylint: disable=import-outside-toplevel
  from jaxml import runner  # pylint: disable=import-outside-toplevel
  from jaxml.core import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from jaxml.core.metrics import MetricWriter  # pylint: disable=import-outside-toplevel

  workdir = runner.prepare_workdir(workdir)
  study = load_study(config.study).build(config)
  is_chief = jax.process_index() == 0
  if is_chief:
    workdir_lib.write_config(workdir, config)
  summary = dict(study.run(workdir))
  step = int(summary["step"])
  scalars = {k: v for k, v in summary.items()
             if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
  # A rerun replaces the row at this step (and any later one, from a study with more rows).
  writer = MetricWriter(workdir, start_step=max(step - 1, 0))
  try:
    writer.write(step, scalars)
  finally:
    writer.close()
  summary.update(study=config.study, headline=list(study.headline), completed=True,
                 preempted=False,
                 outputs=", ".join(COMMON_OUTPUTS + study.outputs))
  if is_chief:
    # metrics.png as for a training run: curves of what was logged at two or more steps (a
    # study rerun with a wider sweep); the study's own tables and plots show its final numbers.
    workdir_lib.write_artifacts(workdir, summary, writer.path)
  summary["workdir"] = workdir
  return summary

