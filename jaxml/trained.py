"""Opening a run again: its config, data, jitted functions and newest state.

    run = jaxml.trained.load(workdir)
    run.state                      # the newest readable checkpoint's TrainState
    x, y = run.features(split)     # frozen features of any split shaped like the run's data
    p, y = run.predict(split)      # the model's outputs, e.g. class probabilities [N, C]

For notebooks, analysis, studies over trained runs and fine-tuning from a pre-trained
encoder. A run still training can be opened too (its newest checkpoint).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxml import runner
from jaxml.core import files
from jaxml.core import mesh as mesh_lib
from jaxml.core.checkpoint import Checkpointer
from jaxml.data import Dataset, Split, load_dataset
from jaxml.errors import ConfigError
from jaxml.training.data import prepare_data
from jaxml.training.evaluate import collect
from jaxml.training.steps import Steps


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A run's config, dataset and mesh, its algorithm's jitted functions and its state."""

  config: ml_collections.ConfigDict
  dataset: Dataset
  mesh: Any
  steps: Steps
  state: Any

  def features(self, split: Split, batch_size: int | None = None):
    """(features [N, D], targets [N]) of every example of `split`, on every host. The split
    must hold the fields the run was trained on, with the same per-example shapes."""
    return self._collect("features", split, batch_size)

  def predict(self, split: Split, batch_size: int | None = None):
    """(predictions [N, ...], targets [N]) of every example of `split` in order, on every
    host: the algorithm's `predict` outputs (a classifier's class probabilities). Other
    fields of an in-memory split (its groups) are `split.read(np.arange(len(split)))`."""
    return self._collect("predict", split, batch_size)

  def _collect(self, kind: str, split: Split, batch_size: int | None):
    fn = getattr(self.steps, kind)
    if fn is None:
      raise ConfigError(f"algorithm {self.config.algo!r} has no {kind} function")
    ours = self.dataset.train.read(np.arange(1))
    theirs = split.read(np.arange(1))
    for name in sorted(ours.keys() & theirs.keys()):
      if ours[name].shape != theirs[name].shape:
        raise ConfigError(f"the run's {name!r} examples are {ours[name].shape[1:]} but the "
                          f"data's are {theirs[name].shape[1:]}")
    with jax.set_mesh(self.mesh):
      return collect(fn, self.steps, self.state, split, self.mesh,
                     batch_size or self.config.eval_batch_size)


def load(workdir: str, config=None) -> TrainedRun:
  """The run in `workdir` at its newest readable checkpoint; its config is read from the
  workdir's config.json unless given."""
  workdir = files.as_str(workdir)
  if config is None:
    try:
      config = ml_collections.ConfigDict(files.read_json(os.path.join(workdir, "config.json")))
    except FileNotFoundError:
      raise ConfigError(f"{workdir} has no config.json: not a jaxml workdir") from None
  if "study" in config:
    raise ConfigError(f"{workdir} is a {config.study!r} study, which trains no model")
  mesh = mesh_lib.make_mesh(config.num_devices)
  prepare_data(config.data)
  dataset = load_dataset(config.data)
  algorithm = runner.build_algorithm(config, dataset)
  with jax.set_mesh(mesh):
    steps = Steps.build(algorithm, mesh)
    checkpointer = Checkpointer(workdir)
    state = checkpointer.restore_latest(steps.abstract_state)
    checkpointer.close()
  if state is None:
    raise ConfigError(f"{workdir} has no readable checkpoint")
  return TrainedRun(config, dataset, mesh, steps, state)
