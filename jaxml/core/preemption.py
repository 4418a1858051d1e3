"""SIGTERM as a preemption notice: finish the step, checkpoint, exit cleanly.

Single process: a Python signal handler raises a flag that the loop polls between steps.
Multi-host: JAX's preemption service (started by `jax.distributed.initialize`) catches the
signal on whichever host gets it and picks a step at which *all* hosts save together; Orbax's
`reached_preemption` reports it.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import jax


class Preemption:

  def __init__(self, checkpointer):
    self._checkpointer = checkpointer
    self._flag = threading.Event()

  def _handler(self, signum, frame):
    del signum, frame
    self._flag.set()

  def requested(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self._checkpointer.reached_preemption(step)
    return self._flag.is_set()

  @contextlib.contextmanager
  def installed(self):
    """Installs the SIGTERM handler for the duration (main thread, single process only)."""
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
      yield self
      return
    previous = signal.signal(signal.SIGTERM, self._handler)
    try:
      yield self
    finally:
      signal.signal(signal.SIGTERM, previous)
