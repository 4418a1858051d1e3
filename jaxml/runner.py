"""The experiment runner: config -> mesh -> data -> algorithm -> loop -> checkpoints -> artifacts.

`run(config, workdir)` is the whole lifecycle of one experiment. Every check that can fail on
bad input happens before anything compiles. A run started again on the same workdir resumes
from the newest readable checkpoint and ends with exactly the parameters an uninterrupted run
would have (the data order and the keys are pure functions of (seed, step)).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pkgutil
import tempfile
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxml import algos as _algos
from jaxml.core import mesh as mesh_lib
from jaxml.core.checkpoint import Checkpointer, warm_start
from jaxml.evaluators.passes import collect_features, evaluate, linear_probe
from jaxml.core.loop import train_loop
from jaxml.core.metrics import MetricWriter
from jaxml.core.plots import plot_metrics
from jaxml.core.steps import Steps
from jaxml.data import load_dataset
from jaxml.errors import ConfigError

NONFINITE_MODES = ("stop", "skip")


def run(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns a summary.

  A config with a top-level `study` key instead of `algo` (sweeps and fits over trained runs)
  is run by `jaxml.studies.run_study`, which leaves the same workdir contract.
  """
  workdir = prepare_workdir(workdir)
  if "study" in config:
    from jaxml import studies  # pylint: disable=import-outside-toplevel  # studies use the runner
    return studies.run_study(config, workdir)
  algo = load_algo(config.algo)
  mesh = mesh_lib.make_mesh(config.get("num_devices", 0))
  is_chief = jax.process_index() == 0
  check_config(config, mesh)
  dataset = load_dataset(config.data)
  if hasattr(algo, "validate"):
    algo.validate(config, dataset)
  if is_chief:
    _write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))

  # The ambient mesh lets algorithms call jax.shard_map (e.g. SupCon's all-gather).
  with jax.set_mesh(mesh):
    # Made replicated on the mesh (every host) so the loop never transfers a key.
    init_key, train_key = jax.jit(lambda: tuple(jax.random.split(jax.random.key(config.seed))),
                                  out_shardings=mesh_lib.replicated(mesh))()
    steps = Steps.build(algo, config, dataset, mesh)
    checkpointer = Checkpointer(workdir, max_to_keep=config.get("keep_checkpoints", 3))
    state = checkpointer.restore_latest(steps.abstract_state)
    if state is None:
      state = steps.init(init_key)
      if config.get("init_from"):  # fine-tuning: a fresh run from another run's weights
        state = warm_start(state, steps.abstract_state, config.init_from)
    writer = MetricWriter(workdir, start_step=int(state.step))
    try:
      state, summary = train_loop(config, state, steps, dataset, mesh, train_key,
                                  checkpointer, writer)
      if not summary["preempted"]:
        final = {f"eval/{k}": v for k, v in evaluate(steps, state, dataset.test, mesh,
                                                    config.eval_batch_size).items()}
        if steps.features is not None and config.get("linear_probe", {}).get("enabled", False):
          final.update(linear_probe(steps, state, dataset, mesh, config))
        if hasattr(algo, "final_metrics"):  # e.g. play in the environments
          final.update(algo.final_metrics(config, dataset, state))
        writer.write(summary["step"], final)
        summary.update(final)
    finally:
      writer.close()
      checkpointer.wait()
      checkpointer.close()
  summary["algo"] = config.algo
  if is_chief:
    artifacts = os.path.join(workdir, "artifacts")
    os.makedirs(artifacts, exist_ok=True)
    _write_json(os.path.join(artifacts, "summary.json"), summary)
    plot_metrics(writer.path, os.path.join(artifacts, "metrics.png"))
  summary["workdir"] = workdir
  return summary


def load_trained(workdir: str, config=None):
  """(config, dataset, state) from the newest readable checkpoint of a finished or running
  workdir, for notebooks, analysis and fine-tuning from a pre-trained encoder. The config is
  read from the workdir's config.json unless given."""
  encoder = _restore(workdir, config)
  return encoder.config, encoder.dataset, encoder.state


@dataclasses.dataclass(frozen=True)
class Encoder:
  """A trained run's model, frozen: `features(split)` gives its pre-head features."""
  config: ml_collections.ConfigDict
  dataset: Any
  mesh: Any
  steps: Steps
  state: Any

  def features(self, split, batch_size: int | None = None):
    """(features [N, D], labels [N]) of every example of `split`, on every host."""
    if self.steps.features is None:
      raise ConfigError(f"algorithm {self.config.algo!r} has no feature function")
    shape = tuple(split.read(np.arange(1))["image"].shape[1:])
    if shape != tuple(self.dataset.input_shape):
      raise ConfigError(f"the encoder takes inputs of shape {tuple(self.dataset.input_shape)} "
                        f"but the data has {shape}")
    with jax.set_mesh(self.mesh):
      return collect_features(self.steps, self.state, split, self.mesh,
                              batch_size or self.config.eval_batch_size)


def pretrained(workdir: str, config=None) -> Encoder:
  """The frozen encoder of the jaxml run in `workdir`. Given `config`, that run is trained
  first (or resumed; a finished run only re-evaluates)."""
  if config is not None:
    run(config, workdir)
  return _restore(workdir, None)


def _restore(workdir: str, config) -> Encoder:
  workdir = os.path.abspath(workdir)
  if config is None:
    try:
      with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    except FileNotFoundError:
      raise ConfigError(f"{workdir} has no config.json: not a jaxml workdir") from None
  if "study" in config:
    raise ConfigError(f"{workdir} is a {config.study!r} study, which trains no encoder")
  algo = load_algo(config.algo)
  mesh = mesh_lib.make_mesh(config.get("num_devices", 0))
  dataset = load_dataset(config.data)
  with jax.set_mesh(mesh):
    steps = Steps.build(algo, config, dataset, mesh)
    checkpointer = Checkpointer(workdir)
    state = checkpointer.restore_latest(steps.abstract_state)
    checkpointer.close()
  if state is None:
    raise ConfigError(f"{workdir} has no readable checkpoint")
  return Encoder(config, dataset, mesh, steps, state)


def load_algo(name: str):
  available = sorted(m.name for m in pkgutil.iter_modules(_algos.__path__))
  if name not in available:
    raise ConfigError(f"unknown algorithm {name!r}; available: {', '.join(available)}")
  return importlib.import_module(f"jaxml.algos.{name}")


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` (absolute) and proves it is writable, or raises ConfigError."""
  if not workdir:
    raise ConfigError("--workdir is required")
  if "://" in workdir:
    raise ConfigError(f"workdir {workdir}: URLs are not supported; mount the bucket (e.g. "
                      "gcsfuse) or use a shared filesystem path")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
      pass
  except OSError as err:
    raise ConfigError(f"workdir {workdir} is not writable: {err.strerror or err}") from None
  return workdir


def check_config(config, mesh) -> None:
  for key in ("batch_size", "eval_batch_size"):
    mesh_lib.local_batch_size(mesh, config[key], key)
  for key in ("num_steps", "log_every", "eval_every", "checkpoint_every"):
    if config[key] <= 0:
      raise ConfigError(f"{key}={config[key]} must be positive")
  source = config.get("init_from")
  if source and not os.path.isdir(os.path.join(source, "checkpoints")):
    raise ConfigError(f"init_from={source}: not a jaxml workdir with checkpoints")
  if config.get("nonfinite", "stop") not in NONFINITE_MODES:
    raise ConfigError(f"nonfinite={config.nonfinite!r}; choose one of "
                      f"{', '.join(NONFINITE_MODES)}")


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)
