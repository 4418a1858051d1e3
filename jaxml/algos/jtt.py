"""Just Train Twice (JTT, Liu et al. 2021): ERM again, with the first run's errors upsampled.

The first run (`jtt.first_run`, the workdir of a classifier run on the same data) is trained
with plain ERM; its error set is the training examples it classifies wrong. This run trains the
classifier's train step on an upsampled training set: every example once, and each example of
the error set `jtt.upweight - 1` more times, so an error row is seen `upweight` times per
upsampled epoch. The order of those epochs is the pipeline's (`batch_indices` over the
upsampled list), a pure function of (seed, step), so a resumed run reads what it would have.
The error set's size is logged as `jtt/errors`. Model, optimizer and eval are the classifier's.

The first run is opened with `classifier.restore` on this run's data (identical by the check
in `check_config`, so it is not loaded a second time).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import ml_collections

from jaxml.algos import classifier
from jaxml.algos.base import Algorithm, BatchSampler
from jaxml.core import checks
from jaxml.core import workdir as workdir_lib
from jaxml.data.base import labels_of
from jaxml.data.pipeline import batch_indices
from jaxml.errors import ConfigError

# Data settings that change how batches are fed, not which examples the data holds.
FEEDING = ("prefetch",)


def _workdir(value) -> str | None:
  return None if isinstance(value, str) and value else (
      "must be the workdir of the ERM run (a classifier run on the same data) whose training "
      "errors are upsampled")


RULES = {"jtt.first_run": _workdir, "jtt.upweight": checks.count(1), **classifier.RULES}


def check_config(config) -> None:
  """The checks that need no data (`jaxml/algos/base.py`), the first run's config among them:
  a bad first run is refused before this run's data is loaded."""
  classifier.check_extension(config, "jtt", RULES)
  first_config(config.jtt.first_run, config)


def build(config, dataset) -> Algorithm:
  """The classifier of `dataset`, trained on batches of the upsampled epoch."""
  check_config(config)
  algorithm = classifier.build(config, dataset)
  errors = error_set(config.jtt.first_run, dataset)
  upsampled = upsampled_epoch(len(dataset.train), errors, config.jtt.upweight)
  return dataclasses.replace(
      algorithm, sampler=upsampled_sampler(upsampled, config.batch_size),
      final_metrics=lambda state: {"jtt/errors": float(len(errors))},
      headline=algorithm.headline + worst_groups(dataset))


def worst_groups(dataset) -> tuple[str, ...]:
  """The worst-group accuracy of each group field: what the method is for."""
  return tuple(f"eval/{group}/worst_group/accuracy" for group in dataset.task.groups)


def first_config(first_run: str, config) -> ml_collections.ConfigDict:
  """The first run's resolved config, or ConfigError unless it is a classifier run of one
  model (`classifier.trained_config`) on this run's data: its data block is this run's
  (`prefetch` aside), as the error set indexes the training split."""
  theirs = classifier.trained_config(first_run, "jtt.first_run")
  changed = [(key, a, b) for key, a, b in workdir_lib.config_changes(
      workdir_lib.config_json(theirs).get("data", {}), workdir_lib.config_json(config)["data"],
      "data.") if key.removeprefix("data.") not in FEEDING]
  if changed:
    shown = ", ".join(f"{key} {a!r} there, {b!r} here" for key, a, b in changed[:3])
    raise ConfigError(f"jtt.first_run={first_run} was trained on other data ({shown}): its "
                      "errors index another training split; train the first run on this data")
  return theirs


def error_set(first_run: str, dataset) -> np.ndarray:
  """Sorted indices of the training rows that the first run's newest state classifies wrong
  (argmax of its outputs != label). `dataset` must be the data it was trained on."""
  config, algorithm, state = classifier.restore(first_run, dataset, "jtt.first_run")
  predicted = classifier.predicted_classes(algorithm, state, dataset.train,
                                           int(config.eval_batch_size))
  return np.flatnonzero(predicted != labels_of(dataset.train, algorithm.target))


def upsampled_epoch(num_train: int, errors: np.ndarray, upweight: int) -> np.ndarray:
  """The rows of one upsampled epoch: every training row once, then each error row
  `upweight - 1` more times (the order is the sampler's)."""
  extra = np.repeat(np.asarray(errors, np.int64), upweight - 1)
  epoch = np.concatenate([np.arange(num_train, dtype=np.int64), extra])
  epoch.setflags(write=False)
  return epoch


def upsampled_sampler(epoch: np.ndarray, batch_size: int) -> BatchSampler:
  """Batches of the infinite stream of upsampled epochs, each in the pipeline's epoch order
  (a pure function of (seed, step)); no padding, so no mask."""
  return BatchSampler(
      sample=lambda seed, step: (epoch[batch_indices(seed, step, batch_size, len(epoch))], None),
      batch_size=batch_size)
