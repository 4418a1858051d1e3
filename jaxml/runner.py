"""The experiment runner: config -> mesh -> data -> algorithm -> loop -> checkpoints -> artifacts.

`run(config, workdir)` is the whole lifecycle of one experiment. Every check that can fail on
bad input happens before anything compiles. A run started again on the same workdir resumes
from the newest readable checkpoint and ends with exactly the parameters an uninterrupted run
would have (the data order and the keys are pure functions of (seed, step)). What the runner
asks of an algorithm is one written contract, `jaxml/algos/base.py`; a finished run is opened
again with `jaxml.trained.load`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import os
import pkgutil

import jax

from jaxml import algos as _algos
from jaxml.algos.base import Algorithm
from jaxml.core import checks, files, lock, rng
from jaxml.core import mesh as mesh_lib
from jaxml.core.checkpoint import Checkpointer
from jaxml.core.warm_start import warm_start
from jaxml.core import workdir as workdir_lib
from jaxml.core.metrics import MetricWriter
from jaxml.data import load_dataset
from jaxml.core.preemption import FINAL, START_UP, TRAINING, Interrupted, Signals
from jaxml.errors import ConfigError, StorageError
from jaxml.training.data import prepare_data
from jaxml.training.evaluate import evaluate_test, linear_probe
from jaxml.training.memory import check_batch_memory
from jaxml.training.loop import train_loop
from jaxml.training import few_shot, replicas
from jaxml.training.steps import Steps, skip_nonfinite

NONFINITE_MODES = ("stop", "skip")
# What the runner and the loop read; experiments/base.py defines them all.
RUNNER_SETTINGS = ("seed", "num_devices", "batch_size", "eval_batch_size", "num_steps",
                   "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                   "init_from", "nonfinite", "progress", "linear_probe", "few_shot", "data",
                   "replicas")


def run(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns a summary.

  A config with a top-level `study` key instead of `algo` (sweeps and fits over trained runs)
  is run by `jaxml.studies.run_study`, which leaves the same workdir contract. Either holds
  the workdir's lock throughout: a second launcher on it is refused (`jaxml.core.lock`).

  SIGTERM and SIGINT stop the run in any phase by raising `Interrupted` (after a checkpoint,
  in the training loop), which says where the run stopped; a storage fault raises
  `StorageError`. Either way a rerun resumes.
  """
  with Signals().installed() as signals, storage_faults(workdir):
    workdir = prepare_workdir(workdir)
    with lock.hold(workdir):
      if "study" in config:
        from jaxml import studies  # pylint: disable=import-outside-toplevel  # studies use the runner
        return studies.run_study(config, workdir)
      progress = Progress()
      try:
        return train(config, workdir, signals, progress)
      except Interrupted as stop:
        progress.describe(stop, workdir)
        if jax.process_index() == 0:  # so no one mistakes the workdir for a finished run
          write_incomplete_summary(workdir, config, stop)
        raise


def train(config, workdir: str, signals: Signals, progress: Progress) -> dict:
  """The training run's lifecycle (see `run`) in a prepared and locked workdir; `progress`
  follows its phase and checkpoints."""
  require_settings(config)
  # Before any checkpoint is touched: another config's checkpoints are not this run's.
  workdir_lib.check_same_config(workdir, config)
  mesh = mesh_lib.make_mesh(config.num_devices)
  check_config(config, mesh)
  prepare_data(config.data)
  dataset = load_dataset(config.data)
  check_batch_memory(config, dataset.fields, mesh)
  algorithm = build_algorithm(config, dataset)
  probes = few_shot.load_tasks(config, dataset, algorithm.features is not None)
  is_chief = jax.process_index() == 0
  if is_chief:
    workdir_lib.write_config(workdir, config)
    # Until this run ends the workdir holds no summary of a finished run: a run killed (-9)
    # after this point is then not mistaken for one.
    (files.as_path(workdir) / "artifacts" / "summary.json").unlink(missing_ok=True)

  # The ambient mesh lets algorithms call jax.shard_map (e.g. SupCon's all-gather).
  # Every clean-up step runs even when one before it fails (a full disk fails several).
  with jax.set_mesh(mesh), contextlib.ExitStack() as cleanup:
    # Made replicated on the mesh (every host) so the loop never transfers a key.
    init_key, train_key = jax.jit(lambda: rng.run_keys(config.seed),
                                  out_shardings=mesh_lib.replicated(mesh))()
    steps = Steps.build(algorithm, mesh)
    checkpointer = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    cleanup.callback(checkpointer.close)
    cleanup.callback(progress.note_saved, checkpointer)
    cleanup.callback(checkpointer.wait)  # an async save under way completes (or fails) first
    state = checkpointer.restore_latest(steps.abstract_state)
    if state is None:
      state = steps.init(init_key)
      if config.init_from:  # fine-tuning: a fresh run from another run's weights
        state = warm_start(state, steps.abstract_state, config.init_from)
    progress.step = int(state.step)
    writer = MetricWriter(workdir, start_step=progress.step)
    cleanup.callback(writer.close)
    writer.write_hparams({**workdir_lib.config_json(config), **algorithm.record},
                         metrics=algorithm.headline)
    progress.phase = TRAINING
    state, summary = train_loop(config, state, steps, dataset, mesh, train_key,
                                checkpointer, writer, signals, probes)
    progress.phase, progress.step = FINAL, summary["step"]
    # A run resumed from its last checkpoint runs no steps and comes straight here.
    final = evaluate_test(steps, state, dataset, mesh, config.eval_batch_size, final=True)
    if steps.features is not None and config.linear_probe.enabled:
      final.update(linear_probe(steps, state, dataset, mesh, config))
    if probes:
      final.update(few_shot.evaluate(steps, state, probes, mesh, config))
    if algorithm.final_metrics is not None:  # e.g. play in the environments
      final.update(algorithm.final_metrics(state))
    writer.write(summary["step"], final)
    summary.update(final)
  summary.update(algo=config.algo, headline=list(algorithm.headline), completed=True,
                 preempted=False, record=dict(algorithm.record))
  if is_chief:
    workdir_lib.write_artifacts(workdir, summary, writer.path)
  summary["workdir"] = workdir
  return summary


def write_incomplete_summary(workdir: str, config, stop: Interrupted) -> None:
  """artifacts/summary.json of a run a signal stopped: `completed` false and where it stopped
  (`preempted` true, for either signal, is what `jaxml.studies.runs` reads as "resume me")."""
  files.makedirs(os.path.join(workdir, "artifacts"))
  files.write_json(os.path.join(workdir, "artifacts", "summary.json"), {
      "algo": config.algo, "completed": False, "preempted": True, "signal": str(stop),
      "phase": stop.phase, "step": stop.step, "checkpoint": stop.saved}, sort_keys=True)


class Progress:
  """Where a run is, for the line that says where a signal stopped it."""

  def __init__(self):
    self.phase = START_UP
    self.step: int | None = None  # the step training starts from, then the one it ended at
    self.saved: int | None = None  # the newest committed checkpoint, once the run closed

  def note_saved(self, checkpointer) -> None:
    self.saved = max(checkpointer.all_steps(), default=None)

  def describe(self, stop: Interrupted, workdir: str) -> None:
    stop.phase = stop.phase or self.phase
    if stop.step is None and stop.phase != TRAINING:  # in training only the loop knows it
      stop.step = self.step
    stop.saved = self.saved
    stop.workdir = workdir


def storage_error(err: OSError, workdir: str) -> StorageError | None:
  """`err` as a one-line StorageError naming the path, or None if it is not a storage fault."""
  path = os.fspath(err.filename) if err.filename is not None else None
  in_workdir = path is not None and not files.is_remote(workdir) and (
      os.path.abspath(path) + os.sep).startswith(files.as_str(workdir) + os.sep)
  # ENOENT counts only for a path in the workdir: the workdir vanished under the run.
  if err.errno not in files.STORAGE_ERRNOS and not (err.errno == errno.ENOENT and in_workdir):
    return None
  return StorageError(f"{path or files.as_str(workdir)}: {err.strerror or err}; the newest "
                      "complete checkpoint is kept: fix the storage, then run the same command "
                      "again to resume")


@contextlib.contextmanager
def storage_faults(workdir: str):
  """The one place an OSError of the storage becomes a StorageError (exit 3)."""
  try:
    yield
  except OSError as err:
    fault = storage_error(err, workdir)
    if fault is None:
      raise
    raise fault from err


def build_algorithm(config, dataset) -> Algorithm:
  """`jaxml.algos.<config.algo>.build(config, dataset)`: the config checked against the
  data and the algorithm's shared set-up done, before anything compiles; then its train step
  guarded against non-finite updates (`nonfinite=skip`) and the whole trained as R replicas
  side by side (`replicas`), in that order, so a replica's bad update skips only its own."""
  weight = dataset.task.weight
  if weight is not None:  # no algorithm's loss weights examples: training would ignore them
    raise ConfigError(f"data set {dataset.name!r} has example weights (field {weight!r}), "
                      "which training does not apply: use it with jaxml.fairness, not to train")
  algorithm = load_algo(config.algo).build(config, dataset)
  if not isinstance(algorithm, Algorithm):
    raise TypeError(f"jaxml.algos.{config.algo}.build returned {type(algorithm).__name__}, "
                    "not a jaxml.algos.base.Algorithm")
  if config.get("nonfinite") == "skip":
    algorithm = dataclasses.replace(algorithm, train_step=skip_nonfinite(algorithm.train_step))
  return replicas.replicate(algorithm, replicas.spec(config), seed=config.seed,
                            batch_size=config.batch_size, num_train=len(dataset.train))


def load_algo(name: str):
  """The module `jaxml.algos.<name>` (every module there but `base` is an algorithm)."""
  available = sorted(m.name for m in pkgutil.iter_modules(_algos.__path__)
                     if m.name != "base" and not m.name.startswith("_"))
  if name not in available:
    raise ConfigError(f"unknown algorithm {name!r}; available: {', '.join(available)}")
  return importlib.import_module(f"jaxml.algos.{name}")


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` (a local path, made absolute, or a gs:// / s3:// / az:// URL, see
  BUILD.md) and proves it is writable, or raises ConfigError."""
  if not workdir:
    raise ConfigError("--workdir is required")
  return files.writable_directory(workdir, what="workdir")


def require_settings(config) -> None:
  """The runner's settings are all there and in range (before the mesh is made from them)."""
  missing = [key for key in RUNNER_SETTINGS if key not in config]
  if missing or "prefetch" not in config.data:
    raise ConfigError(f"the config lacks runner settings {missing or ['data.prefetch']}: start "
                      "it from experiments/base.py")
  checks.check_values(config, {
      "seed": checks.count(0, 2**32 - 1),  # what jax.random.key takes without wrapping
      "num_devices": checks.count(0), "batch_size": checks.count(1),
      "eval_batch_size": checks.count(1), "num_steps": checks.count(1),
      "log_every": checks.count(1), "eval_every": checks.count(1),
      "checkpoint_every": checks.count(1),
      "keep_checkpoints": checks.count(1),  # 0 would end a run with no checkpoint at all
      "nonfinite": checks.one_of(*NONFINITE_MODES), "progress": checks.flag,
      "linear_probe.enabled": checks.flag, "linear_probe.l2": checks.non_negative,
      "data.prefetch": checks.count(0)})
  replicas.spec(config)
  few_shot.check_config(config)


def check_config(config, mesh) -> None:
  """The runner's checks against the mesh and the file system, then the algorithm's checks
  that need no data: all before a dataset is built or loaded (`jaxml/algos/base.py`)."""
  for key in ("batch_size", "eval_batch_size"):
    mesh_lib.local_batch_size(mesh, config[key], key)
  source = config.init_from
  if source and not (files.as_path(source) / "checkpoints").is_dir():
    raise ConfigError(f"init_from={source}: not a jaxml workdir with checkpoints")
  load_algo(config.algo).check_config(config)

