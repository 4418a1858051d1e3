"""SIGTERM (preemption) and SIGINT (Ctrl-C) in every phase of a run: stop cleanly, save what
there is to save, say how to resume.

One handler serves the whole run (`Signals.installed()`, main thread). Inside the training loop
(`Signals.deferred()`) the first signal only raises a flag: the loop finishes its step, saves a
checkpoint and raises `Interrupted`, so the work done so far survives. Anywhere else (data
preparation, building, compiling, restoring, the final evaluation or play) there is nothing
new to save, so the handler raises `Interrupted` at once, as Python's own Ctrl-C does. A second
signal while the loop is saving also stops at once: Orbax commits a step atomically, so the
save either completes (the runner waits for it on the way out) or leaves no step behind.

Multi-host: JAX's preemption service (started by `jax.distributed.initialize`) catches SIGTERM
on whichever host gets it and picks a step at which *all* hosts save together; Orbax's
`reached_preemption` reports it. A flag raised on one host alone would make it save alone and
wait for the others forever, so there SIGINT is never deferred and SIGTERM is left to JAX.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import jax

# What the launcher's line calls each phase of a run (jaxml.runner sets them).
START_UP = "start-up"
TRAINING = "training"
FINAL = "final evaluation"


class Interrupted(BaseException):
  """A SIGTERM or SIGINT stopped the run. A BaseException, like KeyboardInterrupt, so that no
  `except Exception` on the way (a checkpoint fallback, a retry) mistakes it for a failure.

  The runner fills in where the run was: `phase`, `step` (the step training reached, None
  before it began), `saved` (the newest checkpoint's step, None if there is none), `workdir`.
  """

  def __init__(self, signum: int, step: int | None = None):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum
    self.step = step
    self.phase: str | None = None
    self.saved: int | None = None
    self.workdir: str | None = None

  @property
  def preempted(self) -> bool:
    """SIGTERM: a scheduler's notice, a normal end for a resumable run (exit 0)."""
    return self.signum == signal.SIGTERM


class Signals:
  """The run's SIGTERM/SIGINT handler; see the module docstring."""

  def __init__(self):
    self.received: int | None = None  # the first signal, once one came
    self._deferring = False

  def _handler(self, signum, frame):
    del frame
    first = self.received is None
    if first:
      self.received = signum
    if not (first and self._deferring):
      raise Interrupted(signum)

  @contextlib.contextmanager
  def installed(self):
    """Handles SIGINT (and, single-process, SIGTERM) for the duration; restores the previous
    handlers after. Outside the main thread Python cannot install handlers: a no-op there."""
    if threading.current_thread() is not threading.main_thread():
      yield self
      return
    signums = (signal.SIGINT,) if jax.process_count() > 1 else (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, self._handler) for s in signums}
    try:
      yield self
    finally:
      for signum, handler in previous.items():
        signal.signal(signum, handler)

  @contextlib.contextmanager
  def deferred(self):
    """The training loop: a first signal sets `received` for `requested` to report. (One
    that came after the loop's last look is still in `received` when this ends.)"""
    self._deferring = jax.process_count() == 1
    try:
      yield self
    finally:
      self._deferring = False

  def requested(self, step: int, checkpointer) -> int | None:
    """The signal to stop for after `step` (SIGTERM or SIGINT), or None to go on."""
    if jax.process_count() > 1:
      return signal.SIGTERM if checkpointer.reached_preemption(step) else None
    return self.received
