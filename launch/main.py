"""The command-line entry point: parse flags, join the hosts, hand over to the runner.

  python -m launch.main --config experiments/<name>.py[:<variant>] --workdir DIR \
      [--config.key=value ...] [--multihost | --coordinator_address=H:P --num_processes=N
      --process_id=I]

Bad input (unknown config key or variant, wrong type, unknown algorithm or dataset,
unwritable workdir, ...) prints one line on stderr and exits 2 before anything compiles. Every
other way a run ends is one line too, with the exit codes of `jaxml/cli.py`: 0 finished, or
preempted by SIGTERM (the line says how to resume); 1 a failed run (NaN/Inf); 3 a storage
fault; 130 Ctrl-C (SIGINT).
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
import threading
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
  try:
    train()
  except KeyboardInterrupt:  # Ctrl-C before the run's own handler was in place
    cli.fail("interrupted before the run started; nothing to resume",
             code=cli.EXIT_INTERRUPTED)


def train() -> None:
  # Orbax logs every failed background write with its traceback (hundreds of lines on a full
  # disk); the launcher reports the fault itself, in one line. (Set here: absl resets its
  # logger's level when app.run parses the flags.)
  std_logging.getLogger("absl").setLevel(std_logging.CRITICAL)
  # Likewise asyncio's "Task exception was never retrieved" for a write that failed in the
  # same fault, whenever the task happens to be garbage-collected.
  std_logging.getLogger("asyncio").addFilter(_not_a_storage_fault)
  # Imports after flag parsing so `--help` and bad flags answer without loading JAX.
  import jax  # pylint: disable=import-outside-toplevel
  from jaxml import runner  # pylint: disable=import-outside-toplevel
  from jaxml.core.preemption import Interrupted  # pylint: disable=import-outside-toplevel

  try:
    if _COORDINATOR.value:
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    elif _MULTIHOST.value:
      jax.distributed.initialize()  # auto-detects TPU VM slices, SLURM, ...
  except (ValueError, RuntimeError) as err:
    cli.fail(f"cannot join the multi-host run: {cli.one_line(err)}")
  held = HeldTracebacks()
  try:
    with held:
      summary = runner.run(_CONFIG.value, _WORKDIR.value)
  except errors.ConfigError as err:
    cli.fail(str(err))
  except errors.NonFiniteError as err:
    cli.fail(str(err), code=cli.EXIT_FAILED)
  except errors.StorageError as err:
    # Exits at once: a failed async save can leave Orbax threads and coroutines behind that
    # the interpreter's shutdown would wait for, or report in hundreds of lines.
    print(f"error: {cli.one_line(err)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(cli.EXIT_STORAGE)  # pylint: disable=protected-access
  except Interrupted as stop:
    if jax.process_index() == 0:
      print(stopped_line(stop), flush=True)
    sys.exit(0 if stop.preempted else cli.EXIT_INTERRUPTED)
  except BaseException:
    held.release()  # a bug: every traceback may help
    raise
  held.release()
  if jax.process_index() == 0:
    _report(summary)


class HeldTracebacks:
  """Holds the tracebacks of background threads during the run, printing them only if it
  ends in neither a clean stop nor a reported fault. On a full or read-only disk Orbax's save
  threads, tensorstore's callbacks and tensorboardX's writer each print their own; the run
  then reports the one fault in one line."""

  def __init__(self):
    self.held: list[str] = []

  def __enter__(self):
    self._hooks = threading.excepthook, sys.excepthook
    threading.excepthook = self._thread_hook
    sys.excepthook = self._hook  # how C++ callbacks (tensorstore) print a Python error
    return self

  def __exit__(self, *exc):
    threading.excepthook, sys.excepthook = self._hooks

  def _thread_hook(self, args):
    self.held.append(f"Exception in thread {args.thread.name if args.thread else '?'}:\n"
                     + "".join(traceback.format_exception(args.exc_value)))

  def _hook(self, exc_type, value, tb):
    if threading.current_thread() is threading.main_thread():
      self._hooks[1](exc_type, value, tb)
    else:
      self.held.append("".join(traceback.format_exception(exc_type, value, tb)))

  def release(self) -> None:
    sys.stderr.write("".join(self.held))
    self.held = []


def stopped_line(stop) -> str:
  """The one line that says where a signal stopped the run and how to go on."""
  where = {"start-up": "before training began",
           "training": f"at step {stop.step}" if stop.step is not None else "during training",
           "final evaluation": f"during the final evaluation (training ended at step "
                               f"{stop.step})"}.get(stop.phase)
  parts = [" ".join(filter(None, ["preempted" if stop.preempted else "interrupted", where]))]
  if stop.saved is not None:
    parts.append(f"checkpoint at step {stop.saved} saved in {stop.workdir}/checkpoints")
  elif stop.phase in ("training", "final evaluation"):
    parts.append("no checkpoint saved yet")
  return "; ".join(parts + ["run the same command again to resume"])


def _not_a_storage_fault(record: std_logging.LogRecord) -> bool:
  """Logging filter: False for a record whose exception is a storage fault (the launcher
  reports that fault itself, once)."""
  from jaxml.core import files  # pylint: disable=import-outside-toplevel
  err = record.exc_info[1] if record.exc_info else None
  return err is None or files.storage_fault(err) is None


def _report(summary: dict) -> None:
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
