"""The command-line entry point: parse flags, join the hosts, hand over to the runner.

  python -m launch.main --config experiments/<name>.py[:<variant>] --workdir DIR \
      [--config.key=value ...] [--multihost | --coordinator_address=H:P --num_processes=N
      --process_id=I]

Bad input (unknown config key or variant, wrong type, unknown algorithm or dataset,
unwritable workdir, ...) prints one line on stderr and exits 2 before anything compiles.
"""

from __future__ import annotations

import os
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from jaxml import cli, errors  # bad input: one `error:` line and exit 2, as every command

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, optionally with ':variant'.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, artifacts.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() with cluster auto-detection "
    "(TPU VM slices, SLURM, ...).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for an explicit multi-host launch.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")

def parse_flags(argv):
  """absl flag parsing, with every config problem reported as one line and exit code 2; a
  config file that raises or does not parse is reported as `file:line: message`."""
  try:
    rest = flags.FLAGS(argv)
    config = _CONFIG.value  # loading errors in the config file surface here
    if config is None:
      cli.fail("--config is required, e.g. --config experiments/classifier.py:smoke")
    # A deferred load error raises here; a study config names a study instead of an algo.
    config.study if "study" in config else config.algo  # noqa: B018  # pylint: disable=pointless-statement
  except Exception as err:  # pylint: disable=broad-except  # narrowed below, else re-raised
    from_file = _config_file_error(err, _config_path(argv))
    if from_file:
      cli.fail(from_file)
    if isinstance(err, flags.Error):
      cli.fail(cli.one_line(err))
    if isinstance(err, (AttributeError, KeyError)):
      cli.fail(f"unknown config key: {cli.one_line(err)}")
    if isinstance(err, (ValueError, TypeError, ImportError, OSError)):
      cli.fail(cli.one_line(err))
    raise
  if not _WORKDIR.value:
    cli.fail("--workdir is required")
  return rest


def _config_path(argv) -> str | None:
  """The config file named by `--config[=]PATH[:variant]`, or None."""
  for i, arg in enumerate(argv):
    if arg.startswith(("--config=", "-config=")):
      return arg.split("=", 1)[1].split(":", 1)[0]
    if arg in ("--config", "-config") and i + 1 < len(argv):
      return argv[i + 1].split(":", 1)[0]
  return None


def _config_file_error(err: BaseException, path: str | None) -> str | None:
  """What the config file's own code raised, as one line: a ConfigError's message (e.g. an
  unknown variant), `file:line: SyntaxError: ...`, or `file:line: Type: message` at the file's
  last frame in the traceback. ml_collections and absl re-raise it wrapped, with the trace
  flattened into the message, so it is dug out of the exception chain, innermost first. None
  when the error did not come from the file (an unknown key on the command line, ...)."""
  chain = []
  while err is not None and not any(err is seen for seen in chain):
    chain.append(err)
    err = err.__cause__ or err.__context__
  target = os.path.realpath(path) if path else None
  for exc in reversed(chain):
    if isinstance(exc, errors.ConfigError) and not str(exc).startswith("Error whilst parsing"):
      return cli.one_line(exc)
    if isinstance(exc, SyntaxError) and exc.filename:
      return f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if target and os.path.realpath(f.filename) == target]
    if frames:
      return f"{frames[-1].filename}:{frames[-1].lineno}: {type(exc).__name__}: {exc}"
  return None


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imports after flag parsing so `--help` and bad flags answer without loading JAX.
  import jax  # pylint: disable=import-outside-toplevel
  from jaxml import errors, runner  # pylint: disable=import-outside-toplevel

  try:
    if _COORDINATOR.value:
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    elif _MULTIHOST.value:
      jax.distributed.initialize()  # auto-detects TPU VM slices, SLURM, ...
  except (ValueError, RuntimeError) as err:
    cli.fail(f"cannot join the multi-host run: {cli.one_line(err)}")
  try:
    summary = runner.run(_CONFIG.value, _WORKDIR.value)
  except errors.ConfigError as err:
    cli.fail(str(err))
  except errors.NonFiniteError as err:
    cli.fail(str(err), code=1)
  if jax.process_index() == 0:
    _report(summary)


def _report(summary: dict) -> None:
  if summary.get("preempted"):
    print(f"preempted at step {summary['step']}; checkpoint saved in "
          f"{summary['workdir']}/checkpoints. Run the same command again to resume.")
    return
  # The algorithm's (or study's) headline metrics, in its order; those a run did not compute
  # (e.g. play with play.envs=0) are left out.
  scores = [(k, summary[k]) for k in summary["headline"] if isinstance(summary.get(k), float)]
  print("final " + "  ".join(f"{k}={v:.4f}" for k, v in scores))
  outputs = summary.get("outputs", "metrics.jsonl, config.json, checkpoints/, "
                        "artifacts/metrics.png, TensorBoard events")
  print(f"outputs: {summary['workdir']} ({outputs})")


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main, flags_parser=parse_flags)
