"""The one checkpoint path: Orbax `CheckpointManager`, async, keep N, atomic commits.

Orbax writes each step into a temporary directory and renames it on commit, so a process
killed mid-save leaves no half-written step that looks finished. A step that *was* committed
but cannot be read back (disk corruption, a truncated copy) is moved aside with a warning and
the previous step is restored instead.

The workdir may be remote (`gs://...`): Orbax reads and writes epath paths, arrays through
tensorstore's own gcs driver.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxml.core import files
from jaxml.errors import ConfigError

log = logging.getLogger(__name__)


class Checkpointer:
  """Saves and restores the train state under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3, use_async: bool = True):
    self.directory = files.as_path(workdir) / "checkpoints"
    self.quarantine = files.as_path(workdir) / "checkpoints_corrupt"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=use_async, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def restore_latest(self, abstract_state: Any) -> Any | None:
    """The newest readable state (shaped and sharded like `abstract_state`), or None."""
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
      except Exception as err:  # pylint: disable=broad-except  # any unreadable step
        log.warning("checkpoint at step %d is unreadable (%s: %s); moving it to %s and "
                    "trying the previous one", step, type(err).__name__,
                    str(err).splitlines()[0][:200] if str(err) else "", self.quarantine)
        self._quarantine(step)
    return None

  def _quarantine(self, step: int) -> None:
    if jax.process_index() == 0:
      self.quarantine.mkdir(parents=True, exist_ok=True)
      target = self.quarantine / str(step)
      if target.exists():
        target.rmtree()
      (self.directory / str(step)).rename(target)
    if jax.process_count() > 1:  # no host may list the steps before process 0 moved it
      multihost_utils.sync_global_devices(f"jaxml-quarantine-{step}")
    self._manager.reload()

  def save(self, step: int, state: Any) -> None:
    """Starts an async save of `state` at `step` (a no-op if that step is already saved)."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def reached_preemption(self, step: int) -> bool:
    """True on every host once any host received a preemption notice (multi-host)."""
    return self._manager.reached_preemption(step)

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings: what restore fills in."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


WARM_START_FIELDS = ("params", "model_state")


def _key_name(key) -> str:
  for field in ("key", "name", "idx"):
    if hasattr(key, field):
      return str(getattr(key, field))
  return str(key)


def _shapes(tree) -> dict[tuple[str, ...], tuple]:
  """{path: (shape, dtype)} of a tree of arrays or array metadata, paths as plain names."""
  return {tuple(_key_name(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def warm_start(state: Any, abstract_state: Any, source_workdir: str) -> Any:
  """`state` with its params and model state replaced by those of the newest checkpoint in
  `source_workdir` (another run's workdir), for fine-tuning. The optimizer state and step
  stay fresh; the model must have the same parameter names and shapes."""
  directory = files.as_path(source_workdir) / "checkpoints"
  manager = ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler(),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise ConfigError(f"init_from={source_workdir}: no checkpoint under {directory}")
    item = {name: getattr(abstract_state, name) for name in WARM_START_FIELDS}
    # Orbax would read the saved shapes into the target's, so compare them first.
    saved = manager.item_metadata(steps[0]).tree
    want = _shapes(item)
    have = _shapes({name: saved.get(name) for name in WARM_START_FIELDS})
    differ = sorted(p for p in want.keys() | have.keys() if want.get(p) != have.get(p))
    if differ:
      path = differ[0]
      raise ConfigError(
          f"init_from={source_workdir}: its model does not match this config's ({len(differ)} "
          f"parameters differ, e.g. {'/'.join(path)}: {have.get(path, 'missing')} there, "
          f"{want.get(path, 'missing')} here)")
    restored = manager.restore(steps[0], args=ocp.args.PyTreeRestore(
        item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True))
  finally:
    manager.close()
  log.info("warm start from %s, step %d", directory, steps[0])
  return state.replace(**restored)
