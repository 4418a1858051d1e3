"""How every command line fails on bad input: `error: <one line>` on stderr and exit status 2.

The launcher (`launch/main.py`) and the dataset commands (`python -m jaxml.envs.collect`,
`python -m jaxml.envs.babyai`) share it. Nothing here imports JAX, so `--help` and a bad
flag answer before anything heavy loads.
"""

from __future__ import annotations

import sys
from typing import NoReturn
from collections.abc import Callable

from absl import app, flags

from jaxml.errors import ConfigError

# The launcher's exit codes (README and BUILD.md list them): 0 finished or preempted (a rerun
# resumes), 1 a failed run (e.g. NaN/Inf in stop mode), 2 bad input refused before anything
# compiled, 3 a storage fault (out of space, read-only or vanished workdir), 130 Ctrl-C.
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_STORAGE = 3
EXIT_INTERRUPTED = 130


def one_line(err: BaseException) -> str:
  """The line of an exception's message that says what is wrong (absl and ml_collections put
  it last, after context)."""
  text = str(err).strip().strip('"').strip("'")
  return text.splitlines()[-1] if text else type(err).__name__


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
  """Prints `error: message` as one line on stderr and exits with `code`."""
  text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
  print(f"error: {text}", file=sys.stderr)
  sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with a bad flag reported as one line (absl's own parser prints a usage
  block and exits 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as err:
    fail(one_line(err))


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)` for a command: bad flags, stray arguments and a ConfigError raised by
  `main` exit 2 with one line."""

  def guarded(argv):
    if len(argv) > 1:
      fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
      main(argv)
    except ConfigError as err:
      fail(str(err))

  app.run(guarded, flags_parser=parse_flags)
