"""Fine-tuning: a fresh run's state with the model taken from another run's newest checkpoint
(`--config.init_from=<workdir>`)."""

from __future__ import annotations

import logging
from typing import Any

import orbax.checkpoint as ocp

from jaxml.core import files
from jaxml.core.checkpoint import difference
from jaxml.errors import ConfigError

log = logging.getLogger(__name__)

WARM_START_FIELDS = ("params", "model_state")


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
    differ = difference({name: saved.get(name) for name in WARM_START_FIELDS}, item)
    if differ:
      raise ConfigError(f"init_from={source_workdir}: its model does not match this config's "
                        f"({differ})")
    restored = manager.restore(steps[0], args=ocp.args.PyTreeRestore(
        item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True))
  finally:
    manager.close()
  log.info("warm start from %s, step %d", directory, steps[0])
  return state.replace(**restored)
