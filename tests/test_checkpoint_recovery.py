"""Storage faults while checkpointing: a full, read-only or vanishing disk is one StorageError
line naming the checkpoint directory and the OS error; the older steps stay intact, no
half-written step is left, and once the storage is fixed the next save works.

Each fault is injected (an OSError from a file write, always run) and, where this machine
lets the test mount a small tmpfs (root), also made real.
"""

import errno
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from jaxml.core.checkpoint import CHECKSUMS, Checkpointer, checksums
from jaxml.core.files import storage_fault
from jaxml.errors import StorageError

N = 4096  # floats per state: 16 KiB of random data, which does not compress


def _state(step):
  w = jax.random.normal(jax.random.key(step), (N,), jnp.float32)
  return {"w": w, "step": jnp.int32(step)}


def _abstract():
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one),
                      _state(0))


def _listing(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def _assert_fault_reported(err, workdir, oserror):
  message = str(err)
  assert "\n" not in message
  assert f"cannot write checkpoint step 2 to {os.path.join(workdir, 'checkpoints')}: " \
      in message
  assert oserror in message and "step 1, is intact" in message


def _assert_step_1_intact_and_saving_works(workdir):
  """After the fault: only step 1 on disk, sealed and restorable; a new save works."""
  assert _listing(workdir) == ["1"]
  checkpointer = Checkpointer(str(workdir))
  state = checkpointer.restore_latest(_abstract())
  np.testing.assert_array_equal(state["w"], _state(1)["w"])
  checkpointer.save(2, _state(2))
  checkpointer.close()
  assert _listing(workdir) == ["1", "2"]
  step_2 = os.path.join(workdir, "checkpoints", "2")
  assert os.path.exists(os.path.join(step_2, CHECKSUMS)) and checksums(step_2)


def _save_1_then_2(workdir, between=lambda: None):
  """Saves step 1, runs `between`, saves step 2 and waits: returns the StorageError."""
  checkpointer = Checkpointer(str(workdir), use_async=True)
  checkpointer.save(1, _state(1))
  checkpointer.wait()
  between()
  with pytest.raises(StorageError) as err:
    checkpointer.save(2, _state(2))
    checkpointer.wait()  # a fault in the background writer surfaces here at the latest
  checkpointer.wait()  # reported once: waiting and closing after it neither raise nor hang
  checkpointer.close()
  return err.value


def _fail_writes(monkeypatch, code, where):
  """Makes epath writes (Orbax's step metadata) or directory creation inside a checkpoint
  being written raise OSError(`code`)."""
  cls = type(epath.Path("/"))
  original = getattr(cls, where)

  def failing(self, *args, **kwargs):
    if ".orbax-checkpoint-tmp" in os.fspath(self):
      raise OSError(code, os.strerror(code), os.fspath(self))
    return original(self, *args, **kwargs)

  monkeypatch.setattr(cls, where, failing)


@pytest.mark.parametrize("code, where", [
    (errno.ENOSPC, "write_text"),  # fails in Orbax's background writer
    (errno.EROFS, "mkdir"),  # fails in `save` itself
    (errno.ENOENT, "mkdir")])  # the directory vanished
def test_injected_fault_is_one_line_and_leaves_the_older_step(tmp_path, monkeypatch, caplog,
                                                              code, where):
  printed = []  # tracebacks Python would print for exceptions raised in Orbax's threads
  monkeypatch.setattr(sys, "unraisablehook", printed.append)
  err = _save_1_then_2(tmp_path, lambda: _fail_writes(monkeypatch, code, where))
  _assert_fault_reported(err, tmp_path, f"{os.strerror(code)} (errno {code})")
  assert not [r for r in caplog.records if r.exc_info]  # no Orbax traceback flood
  assert not printed, [str(u.exc_value) for u in printed]
  monkeypatch.undo()
  _assert_step_1_intact_and_saving_works(tmp_path)


def _raised_from(cause):
  try:
    try:
      raise cause
    except Exception as err:
      raise RuntimeError("Save Finalize thread failed") from err
  except RuntimeError as err:
    return err


def test_the_os_error_is_found_behind_orbax_and_tensorstore_wrappers():
  tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database: Failed '
                           "writing: No space left on device [os_error_code='28']")
  assert storage_fault(_raised_from(tensorstore)) == "No space left on device (errno 28)"
  assert storage_fault(_raised_from(PermissionError(errno.EACCES, "denied"))) == \
      "Permission denied (errno 13)"
  assert storage_fault(_raised_from(ValueError("Requested shape: (8, 4) is not..."))) is None
  assert storage_fault(FileNotFoundError(errno.ENOENT, "gone"), {errno.EIO}) is None


def test_a_step_that_cannot_be_read_for_permission_is_not_set_aside(tmp_path, monkeypatch):
  checkpointer = Checkpointer(str(tmp_path), use_async=False)
  checkpointer.save(1, _state(1))
  checkpointer.close()

  def denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", "checkpoints/1/default")

  monkeypatch.setattr(ocp.CheckpointManager, "restore", denied)
  checkpointer = Checkpointer(str(tmp_path))
  with pytest.raises(StorageError, match=r"cannot read checkpoint .*checkpoints/1: "
                                         r"Permission denied \(errno 13\)$"):
    checkpointer.restore_latest(_abstract())
  checkpointer.close()
  assert _listing(tmp_path) == ["1"] and not os.path.exists(tmp_path / "checkpoints_corrupt")


@pytest.fixture
def small_disk(tmp_path):
  """A 1 MiB tmpfs, mounted for the test; skipped where mounting is not permitted."""
  mount = tmp_path / "disk"
  mount.mkdir()
  if shutil.which("mount") is None:
    pytest.skip("no mount command")
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
  try:
    yield mount
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path):
  """Writes `path` until the disk is full."""
  fd = os.open(path, os.O_WRONLY | os.O_CREAT)
  try:
    while True:
      os.write(fd, b"\0" * 65536)
  except OSError as err:
    assert err.errno == errno.ENOSPC
  finally:
    os.close(fd)


def test_full_disk(small_disk, caplog):
  workdir = small_disk / "run"
  err = _save_1_then_2(workdir, lambda: _fill(small_disk / "filler"))
  _assert_fault_reported(err, workdir, f"No space left on device (errno {errno.ENOSPC})")
  assert not [r for r in caplog.records if r.exc_info]
  os.remove(small_disk / "filler")
  _assert_step_1_intact_and_saving_works(workdir)


def test_read_only_disk(small_disk):
  workdir = small_disk / "run"

  def remount(mode):
    subprocess.run(["mount", "-o", f"remount,{mode}", str(small_disk)], check=True)

  err = _save_1_then_2(workdir, lambda: remount("ro"))
  _assert_fault_reported(err, workdir, f"Read-only file system (errno {errno.EROFS})")
  remount("rw")
  _assert_step_1_intact_and_saving_works(workdir)
