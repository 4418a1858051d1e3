"""One call at a time on a background thread, its failure raised in the thread that joins it.

The checkpointer writes each step this way (`jaxml/core/checkpoint.py`): the training thread
only starts the write, and joins it at the next save or at the end of the run, so Orbax's
host copy, thread starts, directory creation, file writes and the checksums never hold up a
training step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background:
  """Runs `start`ed calls on a thread of their own, one at a time; `join` waits for the call
  and raises what it raised (BaseException included), once."""

  def __init__(self, name: str):
    self.name = name
    self._thread: threading.Thread | None = None
    self._error: BaseException | None = None

  @property
  def pending(self) -> bool:
    """A started call has not been joined yet (it may have finished)."""
    return self._thread is not None

  def start(self, fn: Callable, *args) -> None:
    if self._thread is not None:
      raise RuntimeError(f"{self.name}: start called before the previous call was joined")
    self._error = None
    # Not a daemon: an interpreter that exits waits for the write rather than cutting it off.
    self._thread = threading.Thread(target=self._run, args=(fn, args), name=self.name)
    self._thread.start()

  def _run(self, fn: Callable, args: tuple) -> None:
    try:
      fn(*args)
    except BaseException as err:  # pylint: disable=broad-except  # raised again in `join`
      self._error = err

  def join(self) -> None:
    """Waits for the call under way (none: returns at once). A signal handler that raises
    interrupts the wait and leaves the call pending, so a later `join` waits again."""
    if self._thread is None:
      return
    self._thread.join()
    self._thread = None
    error, self._error = self._error, None
    if error is not None:
      raise error
