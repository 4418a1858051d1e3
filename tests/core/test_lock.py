"""The workdir lock: one holder, refused in one line, stale locks taken over, always released."""

import json
import logging
import os
import socket
import subprocess

import pytest

from jaxml.core import files, lock
from jaxml.errors import ConfigError


def _dead_pid() -> int:
  proc = subprocess.Popen(["true"])
  proc.wait()
  return proc.pid


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  release = lock.acquire(str(tmp_path))
  owner = json.loads((tmp_path / lock.LOCK).read_text())
  assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
  with pytest.raises(lock.WorkdirInUse) as refused:
    lock.acquire(str(tmp_path))  # another open file of the same lock: flock refuses it too
  message = str(refused.value)
  assert isinstance(refused.value, ConfigError) and "\n" not in message
  assert f"in use by pid {os.getpid()} on host {socket.gethostname()} since " in message
  release()
  assert not (tmp_path / lock.LOCK).exists()
  lock.acquire(str(tmp_path))()  # free again


def test_a_lock_left_by_a_killed_holder_is_taken_over(tmp_path, caplog):
  dead = {"host": "elsewhere", "pid": _dead_pid(), "started": "2026-01-01T00:00:00+00:00"}
  (tmp_path / lock.LOCK).write_text(json.dumps(dead))  # its flock died with it
  with caplog.at_level(logging.WARNING):
    release = lock.acquire(str(tmp_path))
  assert f"taking over the lock of pid {dead['pid']} on host elsewhere" in caplog.text
  assert json.loads((tmp_path / lock.LOCK).read_text())["pid"] == os.getpid()
  release()


def test_a_lock_held_by_a_dead_holders_child_is_not_taken(tmp_path):
  release = lock.acquire(str(tmp_path))  # stands for a child the killed holder forked
  dead = {"host": socket.gethostname(), "pid": _dead_pid(), "started": "T"}
  (tmp_path / lock.LOCK).write_text(json.dumps(dead))
  with pytest.raises(lock.WorkdirInUse, match=f"pid {dead['pid']} .* that pid is gone, but a "
                     "process it started still holds the lock: stop it"):
    lock.acquire(str(tmp_path))
  release()


def test_hold_releases_on_exceptions_and_ctrl_c(tmp_path):
  for error in (RuntimeError, KeyboardInterrupt):
    with pytest.raises(error):
      with lock.hold(str(tmp_path), chief=True):
        assert (tmp_path / lock.LOCK).exists()
        raise error
    assert not (tmp_path / lock.LOCK).exists()


def test_only_the_chief_takes_it(tmp_path):
  with lock.hold(str(tmp_path), chief=False):
    assert not (tmp_path / lock.LOCK).exists()
  with lock.hold(str(tmp_path), chief=True):
    with lock.hold(str(tmp_path), chief=False):  # process 1 of the same run does not wait
      pass


def test_object_store_lock_by_read_back(tmp_path):
  """The gs:// protocol, run on a local path: what it can and cannot tell about a holder."""
  path = files.as_path(tmp_path) / lock.LOCK
  other_host = {"host": "other-host", "pid": 1, "started": "T"}
  path.write_text(json.dumps(other_host))
  with pytest.raises(lock.WorkdirInUse, match="pid 1 on host other-host since T; wait for it, or "
                     f"delete {tmp_path}/.jaxml-lock if that process is gone .a lock from "
                     "another host cannot be checked"):
    lock._acquire_by_read_back(str(tmp_path), path)
  alive = {**other_host, "host": socket.gethostname(), "pid": os.getpid()}
  path.write_text(json.dumps(alive))
  with pytest.raises(lock.WorkdirInUse, match="; wait for it to end or stop it"):
    lock._acquire_by_read_back(str(tmp_path), path)
  path.write_text(json.dumps({**alive, "pid": _dead_pid()}))
  release = lock._acquire_by_read_back(str(tmp_path), path)
  assert json.loads(path.read_text())["pid"] == os.getpid()
  release()
  assert not path.exists()
