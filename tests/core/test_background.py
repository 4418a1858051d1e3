"""A call on a background thread: one at a time, joined, its failure raised once in the joiner."""

import threading
import time

import pytest

from jaxml.core.background import Background


def test_join_waits_for_the_call_on_another_thread():
  ran = []
  worker = Background("test-writer")
  worker.start(lambda delay: time.sleep(delay) or ran.append(threading.current_thread().name),
               0.05)
  assert worker.pending
  worker.join()
  assert ran == ["test-writer"] and not worker.pending
  worker.join()  # nothing under way: returns at once


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_the_calls_failure_is_raised_in_join_once(error):
  def fail():
    raise error

  worker = Background("test-writer")
  worker.start(fail)
  with pytest.raises(type(error)):
    worker.join()
  worker.join()
  worker.start(lambda: None)  # the next call starts clean
  worker.join()


def test_a_second_start_before_join_is_refused():
  release = threading.Event()
  worker = Background("test-writer")
  worker.start(release.wait)
  with pytest.raises(RuntimeError, match="before the previous call was joined"):
    worker.start(lambda: None)
  release.set()
  worker.join()
