"""Datasets built on first use, before the runner loads them: loading never builds.

A data config opts in with a `build` block that names the module that builds it:

  data.source = "episodes:data/minatar"
  data.build = {"enabled": True, "command": "jaxml.envs.collect", ...the builder's fields}

`prepare_data(data_config)` builds `<dir>` (the source's directory) once, with the command
module's `build_dataset(data_config, directory)`, through `files.build_once`: into a hidden
sibling renamed into place when complete, so an interrupted build leaves nothing that looks
like a dataset, and a second run (or a second launcher racing the first) reuses it. The same
module, run as `python -m <command> --out <dir>`, builds the dataset by hand.
"""

from __future__ import annotations

import importlib
import logging

from jaxml.core import files
from jaxml.errors import ConfigError

log = logging.getLogger(__name__)


def dataset_dir(data_config) -> str:
  """The directory of a `<name>:<dir>` source (or `data.dir`)."""
  return data_config.source.partition(":")[2] or data_config.get("dir", "")


def prepare_data(data_config) -> bool:
  """Builds the dataset `data_config.build` describes unless it exists; True if it built it.
  A config without an enabled `build` block is left alone."""
  build = data_config.get("build")
  if not build or not build.get("enabled", False):
    return False
  command = build.get("command")
  if not command:
    raise ConfigError("data.build.enabled needs data.build.command, the module that builds "
                      "the dataset (e.g. jaxml.envs.collect)")
  root = dataset_dir(data_config)
  if not root:
    raise ConfigError(f"data.build: source {data_config.source!r} names no directory to "
                      "build into; use '<source>:<dir>'")
  try:
    builder = importlib.import_module(command).build_dataset
  except (ImportError, AttributeError) as err:
    raise ConfigError(f"data.build.command={command!r} is not a module with "
                      f"build_dataset(data_config, directory): {err}") from None
  log.info("building the dataset at %s with %s (first use)", root, command)
  return files.build_once(root, lambda directory: builder(data_config, directory))
