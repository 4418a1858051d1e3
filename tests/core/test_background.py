"""A call on a background thread: one at a time, joined, its failure raised once in the joiner;
the device copy it writes from, made only where it fits."""

import threading
import time

import jax
import numpy as np
import pytest

from jaxml.core import mesh as mesh_lib
from jaxml.core.background import Background, detached, fits_a_copy


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


def _sharded_state():
  mesh = mesh_lib.make_mesh()
  w = jax.device_put(np.arange(64, dtype=np.float32).reshape(16, 4),
                     mesh_lib.data_sharding(mesh))  # 32 bytes on each of 8 devices
  return {"w": w, "count": jax.device_put(np.int32(3), mesh_lib.replicated(mesh)),
          "host": np.ones(2)}


def test_fits_a_copy_counts_each_devices_share_against_its_limit():
  state = _sharded_state()
  per_device = 32 + 4  # its rows of w, and the replicated count
  assert fits_a_copy(state)  # the CPU backend reports no memory statistics
  room = {"bytes_limit": 1000, "bytes_in_use": 900 - per_device}  # exactly 90% after a copy
  assert fits_a_copy(state, memory_stats=lambda device: room)
  full = {"bytes_limit": 1000, "bytes_in_use": 900 - per_device + 1}
  assert not fits_a_copy(state, memory_stats=lambda device: full)
  one_full = lambda device: full if device.id == 5 else room  # noqa: E731
  assert not fits_a_copy(state, memory_stats=one_full)


def test_detached_is_an_equal_copy_on_the_same_shardings_that_outlives_donation():
  state = _sharded_state()
  copy = detached(state)
  assert copy["w"].sharding == state["w"].sharding and copy["w"] is not state["w"]
  jax.jit(lambda w: w + 1, donate_argnums=0)(state["w"])  # the original's buffers are gone
  np.testing.assert_array_equal(copy["w"], np.arange(64, dtype=np.float32).reshape(16, 4))
  assert int(copy["count"]) == 3
  np.testing.assert_array_equal(copy["host"], np.ones(2))
