"""The workdir contract that every training run and every study leaves (local or gs://):

  config.json            the resolved config
  metrics.jsonl          one JSON object per logged step (and TensorBoard events beside it,
                         whose hparams are the config and the algorithm's `record`)
  artifacts/summary.json the final numbers, with the headline metric names and, under
                         `record`, what the algorithm resolved at build (jaxml/algos/base.py)
  artifacts/metrics.png  curves of what was logged
  .jaxml-lock            while a run holds the workdir: its host and pid (jaxml/core/lock.py)
  metrics.jsonl.damaged  only after a resume repaired metrics.jsonl: the lines it cut out

Only the chief process writes them; every process may read them.

config.json is also the run's identity: a run restarted on its workdir with another config
would resume checkpoints it cannot read, or worse ones it can, under other settings, so
`check_same_config` refuses it before any checkpoint is touched. What may change when a run
resumes is listed once, in RESUMABLE.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jaxml.core import files
from jaxml.core.plots import plot_metrics
from jaxml.errors import ConfigError

# Settings a run may change when it resumes (dotted; a block's name covers all of it): they
# do not change which parameters training computes, only how long it runs (num_steps: a
# decaying schedule then decays over the new length from the resume step on), what it logs,
# evaluates and keeps, how batches are fed, and what a NaN/Inf does (nonfinite=skip is how a
# run stopped by one goes on). The seed, the data, the model, the optimizer, the batch size
# and the device count (the DP batch padding depends on it) are the run.
RESUMABLE = ("num_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
             "progress", "nonfinite", "eval_batch_size", "data.prefetch", "linear_probe",
             "few_shot")
# A key the run's config.json lacks (added to jaxml since the run began) may appear with one of
# these values: the "off" setting of a new option (`data.classes = ()`: every class) changes
# nothing the run did, so the run stays resumable across the upgrade.
OFF = (None, False, "", [], {})
# A RESUMABLE key that the run's own config ties down when all the settings named here are on
# (truthy) in its config.json: DP-SGD with dp.target_epsilon calibrates its noise multiplier so
# that ε reaches the target at num_steps; a new num_steps would recalibrate the noise of the
# steps to come while the steps done used the old one, and the ε logged would understate the
# privacy spent.
PINNED = {"num_steps": ("dp.enabled", "dp.target_epsilon")}
_SHOWN = 3  # differing keys spelled out in the refusal; the rest are counted
_ABSENT = object()


def config_json(config) -> dict:
  """The JSON form of `config` that config.json holds (tuples as lists)."""
  return json.loads(config.to_json_best_effort())


def write_config(workdir: str, config) -> None:
  files.write_json(os.path.join(workdir, "config.json"), config_json(config), sort_keys=True)


def check_same_config(workdir: str, config) -> None:
  """Raises a one-line ConfigError if `workdir/config.json` records a run of a config that
  differs from `config` outside RESUMABLE (a key it lacks, now OFF, is no difference); a
  workdir without one is new, and passes."""
  path = os.path.join(workdir, "config.json")
  try:
    old = files.read_json(path)
  except FileNotFoundError:
    return
  except ValueError as err:  # edited by hand: not the run's record any more
    raise ConfigError(f"{files.as_str(path)} is not JSON ({err}); restore it, or delete it to "
                      "resume with the config given") from None
  changes = config_changes(old, config_json(config))
  for key, a, b in changes:
    pins = PINNED.get(key, ())
    if pins and all(_lookup(old, pin) for pin in pins):
      settings = " and ".join(f"{pin}={_lookup(old, pin)}" for pin in pins)
      raise ConfigError(
          f"workdir {workdir} holds a run with {settings}, which ties {key} to {_show(a)}: "
          f"changing it ({_show(a)}→{_show(b)}) on resume would recalibrate the noise of the "
          f"steps to come and misstate the privacy spent; resume with {key}={_show(a)}, or "
          "start a new --workdir")
  changed = [(key, a, b) for key, a, b in changes
             if not resumable(key) and not (a is _ABSENT and is_off(b))]
  if changed:
    shown = ", ".join(f"{key} {_show(a)}→{_show(b)}" for key, a, b in changed[:_SHOWN])
    more = f" and {len(changed) - _SHOWN} more" if len(changed) > _SHOWN else ""
    raise ConfigError(
        f"workdir {workdir} holds a run of another config ({shown}{more}); rerun it with the "
        f"config it was started with, use a new --workdir, or start one from its weights with "
        f"--config.init_from={workdir}. Only {', '.join(RESUMABLE)} may change on resume")


def is_off(value: Any) -> bool:
  """An OFF value, or a block (dict) of them: a new option, or a new block of options, whose
  default leaves a run as it was before the option existed (0 counts, as 0 == False)."""
  if isinstance(value, dict) and value:
    return all(is_off(v) for v in value.values())
  return value in OFF


def config_changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
  """(dotted key, old value, new value) for every leaf where two JSON trees differ, in key
  order; a key one side lacks has the value `_ABSENT` there."""
  if isinstance(old, dict) and isinstance(new, dict):
    return [change for key in sorted(set(old) | set(new))
            for change in config_changes(old.get(key, _ABSENT), new.get(key, _ABSENT),
                                         f"{prefix}{key}.")]
  return [] if old == new else [(prefix.rstrip("."), old, new)]


def _lookup(tree: dict, dotted: str) -> Any:
  for part in dotted.split("."):
    if not isinstance(tree, dict) or part not in tree:
      return None
    tree = tree[part]
  return tree


def resumable(key: str) -> bool:
  """Whether the dotted `key` is one of RESUMABLE or inside one of its blocks."""
  return any(key == name or key.startswith(name + ".") for name in RESUMABLE)


def _show(value: Any) -> str:
  if value is _ABSENT:
    return "(absent)"
  text = json.dumps(value)
  return text if len(text) <= 40 else text[:37] + "..."


def write_artifacts(workdir: str, summary: dict, metrics_path: str) -> None:
  """summary.json, and metrics.png drawn from `metrics_path` (the run's metrics.jsonl)."""
  artifacts = os.path.join(workdir, "artifacts")
  files.makedirs(artifacts)
  files.write_json(os.path.join(artifacts, "summary.json"), summary, sort_keys=True)
  plot_metrics(metrics_path, os.path.join(artifacts, "metrics.png"))
