"""Few-shot linear evaluation of frozen features on probe tasks, inside any run whose
algorithm has features (big_vision's few-shot evaluator; issue 24).

The config's `few_shot` block (experiments/base.py):

  tasks   "" (off), or probe tasks separated by ";", each `name=source[@classes]`: a data
          source as `data.source` takes it (the run's other data settings carry over) and
          optionally the classes to keep, e.g. `held_out=digits@5-9` or `a=digits@0,2,4`.
  shots   examples per class of each fit, e.g. (1, 5, 10, 25)
  draws   random draws of the shots per k (the same rows for every evaluation of a run)
  l2      the ridge penalty (`jaxml/evaluators/few_shot.py`)
  whiten  standardise each feature with the shots' statistics before the fit
  every   also every that many steps (0: only at the end)
  seed    of the draws

Logged as `fewshot/<task>/<k>shot` (mean accuracy over draws on the task's test split) and
`.../<k>shot_std`; with replicas, their mean and each one's under `fewshot/replica<r>/...`.

A probe task of the training data's own source whose classes overlap the classes trained on
measures nothing few-shot about new classes (the encoder was trained on their labels): it is
refused unless the task's name ends in `!`, which logs it as asked.
"""

from __future__ import annotations

import dataclasses
import re

import ml_collections
import numpy as np

from jaxml.core import checks
from jaxml.data import Dataset, load_dataset
from jaxml.errors import ConfigError
from jaxml.evaluators import few_shot as few_shot_lib
from jaxml.training import replicas
from jaxml.training.evaluate import gather

RULES = {"few_shot.shots": checks.each(checks.count(1)), "few_shot.draws": checks.count(1),
         "few_shot.l2": checks.in_range(0.0, open_low=True), "few_shot.whiten": checks.flag,
         "few_shot.every": checks.count(0), "few_shot.seed": checks.count(0, 2**32 - 1)}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+!?$")


@dataclasses.dataclass(frozen=True)
class ProbeTask:
  """One probe task: its name in the logged keys, its data, and its class-id target."""

  name: str
  dataset: Dataset
  target: str


def _classes(spec: str, entry: str) -> tuple[int, ...]:
  out = []
  for part in spec.split(","):
    low, dash, high = part.partition("-")
    try:
      out.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    except ValueError:
      raise ConfigError(f"few_shot.tasks entry {entry!r}: classes {spec!r} must be ids or "
                        "ranges such as 5-9 or 0,2,4") from None
  return tuple(out)


def parse_tasks(tasks: str) -> list[tuple[str, str, tuple[int, ...]]]:
  """[(name, source, classes)] of a `few_shot.tasks` string (classes () = all)."""
  if not isinstance(tasks, str):
    raise ConfigError(f"few_shot.tasks={tasks!r} must be a string of name=source[@classes] "
                      "entries separated by ';'")
  out = []
  for entry in filter(None, (e.strip() for e in tasks.split(";"))):
    name, eq, rest = entry.partition("=")
    source, _, classes = rest.partition("@")
    if not eq or not source or not _NAME.match(name):
      raise ConfigError(f"few_shot.tasks entry {entry!r} must be name=source[@classes] with "
                        "a name of letters, digits, '_', '.', '-' (e.g. held_out=digits@5-9)")
    out.append((name, source, _classes(classes, entry) if classes else ()))
  names = [n.rstrip("!") for n, _, _ in out]
  if len(set(names)) != len(names):
    raise ConfigError(f"few_shot.tasks names must be distinct, got {names}")
  return out


def check_config(config) -> None:
  """The few_shot block's checks that need no data."""
  checks.check_values(config, RULES)
  parse_tasks(config.few_shot.tasks)


def _trained_classes(config, dataset: Dataset) -> set[int]:
  """The source's class ids the run trains on (`data.classes`, else all of them)."""
  classes = config.data.get("classes")
  return set(int(c) for c in classes) if classes else set(range(dataset.num_classes))


def load_tasks(config, dataset: Dataset, has_features: bool) -> tuple[ProbeTask, ...]:
  """The probe tasks of `few_shot.tasks`, loaded and checked against the run: each a
  classification with the training task's input fields, of the same shapes and dtypes; ()
  when off."""
  entries = parse_tasks(config.few_shot.tasks)
  if not entries:
    return ()
  if not has_features:
    raise ConfigError(f"few_shot.tasks is set but algo {config.algo!r} has no features to "
                      "probe; set --config.few_shot.tasks=''")
  out = []
  for name, source, classes in entries:
    data = ml_collections.ConfigDict(config.data.to_dict())
    data.source = source
    data.classes = classes or None
    probe = load_dataset(data)
    where = f"few_shot task {name.rstrip('!')!r} ({source})"
    task = probe.task
    if task.kind != "classification" or task.target is None:
      raise ConfigError(f"{where} is a {task.kind!r} task: few-shot probes classify")
    for field in dataset.task.inputs:
      if probe.fields.get(field) != dataset.fields[field]:
        raise ConfigError(f"{where} has {field}={probe.fields.get(field)}, the model reads "
                          f"{dataset.fields[field]}")
    if source == config.data.source and not name.endswith("!"):
      overlap = sorted(_trained_classes(config, dataset) & set(
          classes or range(probe.num_classes)))
      if overlap:
        raise ConfigError(f"{where}: classes {overlap} are also trained on, so their labels "
                          "are not few; probe held-out classes (e.g. data.classes=0-4 and "
                          f"{name}={source}@5-9), or end the name in '!' to measure it anyway")
    out.append(ProbeTask(name.rstrip("!"), probe, task.target))
  return tuple(out)


def _features(steps, state, split, mesh, batch_size: int, target: str):
  got = gather(split, mesh, batch_size,
               lambda b: {"features": steps.features(state, b), "label": b[target]})
  return np.asarray(got["features"], np.float32), np.asarray(got["label"])


def evaluate(steps, state, tasks, mesh, config) -> dict[str, float]:
  """`fewshot/...` metrics of every probe task (see the module doc)."""
  settings = config.few_shot
  count = steps.algorithm.replicas
  rows = [{} for _ in range(count or 1)]
  for task in tasks:
    train_x, train_y = _features(steps, state, task.dataset.train, mesh,
                                 config.eval_batch_size, task.target)
    test_x, test_y = _features(steps, state, task.dataset.test, mesh, config.eval_batch_size,
                               task.target)
    for r, row in enumerate(rows):
      pick = (lambda x, r=r: x[:, r]) if count else (lambda x: x)
      results = few_shot_lib.evaluate(
          pick(train_x), train_y, pick(test_x), test_y, task.dataset.num_classes,
          shots=tuple(settings.shots), draws=int(settings.draws), l2=float(settings.l2),
          seed=int(settings.seed), whiten=bool(settings.whiten))
      row.update(few_shot_lib.metrics(results, task.name))
  merged = replicas.mean_and_each(rows) if count else rows[0]
  return {f"fewshot/{k}": v for k, v in merged.items()}
