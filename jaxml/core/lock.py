"""One writer per workdir: `<workdir>/.jaxml-lock`, held for the whole run.

Two launchers on one workdir interleave their checkpoints and metrics rows and lose both
runs' work, so the second one is refused in one line naming the holder (host, pid, start).

Local (and NFS) workdirs are locked with `flock` on the lock file: the kernel drops the lock
when its holder dies, however it dies, so a lock left by a SIGKILLed run is taken over (with
a warning naming the old holder) and a live holder is never mistaken for a dead one, even
after pid reuse or from another host of a shared filesystem. The file itself holds the
holder's JSON {host, pid, started}, only for the message.

Object stores (gs://, s3://, az://) have no locks and etils.epath no exclusive create: the
lock there is a write followed by a read-back, and a launcher that reads back someone else's
lock gives way. Two launchers that both write before either reads back can both go on: the
check narrows that race to a moment, it does not close it. A lock left by a killed run on the
same host is taken over when its pid is gone; one from another host cannot be checked from
here, and the message says to delete it by hand once its process is known to be gone.

A multi-host run takes the lock once, on process 0; the others learn its verdict, so every
process stops with the same line instead of the others hanging in a collective.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
from collections.abc import Iterator

from jaxml.core import files
from jaxml.errors import ConfigError

log = logging.getLogger(__name__)
LOCK = ".jaxml-lock"


class WorkdirInUse(ConfigError):
  """Another launcher holds the workdir (exit 2, like any input the user can fix)."""


def holder() -> dict:
  """What this process writes into the lock: who it is and since when."""
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def describe(workdir: str, owner: dict, *, checkable: bool) -> str:
  """The one line that refuses a workdir held by `owner`."""
  who = (f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} "
         f"since {owner.get('started', '?')}")
  lock = f"{workdir}/{LOCK}"
  if checkable:  # the holder (or a process it started) is known to be alive
    return f"workdir {workdir} is in use by {who}; wait for it to end or stop it ({lock})"
  return (f"workdir {workdir} is in use by {who}; wait for it, or delete {lock} if that "
          "process is gone (a lock from another host cannot be checked from here)")


@contextlib.contextmanager
def hold(workdir: str, *, chief: bool | None = None) -> Iterator[None]:
  """Holds the lock of `workdir` for the `with` block (released on return, on any exception
  and on KeyboardInterrupt), or raises WorkdirInUse. Only `chief` (by default process 0)
  takes it; in a multi-host run the other processes raise when process 0 was refused."""
  import jax  # pylint: disable=import-outside-toplevel  # host module; jax only for the hosts

  chief = jax.process_index() == 0 if chief is None else chief
  release, refusal = None, None
  if chief:
    try:
      release = acquire(workdir)
    except WorkdirInUse as err:
      refusal = err
  try:
    if jax.process_count() > 1:
      _agree(refusal is not None, workdir)
    if refusal is not None:
      raise refusal
    yield
  finally:
    if release is not None:
      release()


def _agree(refused: bool, workdir: str) -> None:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  if int(multihost_utils.broadcast_one_to_all(np.int32(refused))) and not refused:
    raise WorkdirInUse(f"workdir {workdir} is in use: process 0 of this run was refused "
                       "its lock (its error says by whom)")


def acquire(workdir: str):
  """Takes the lock of `workdir`; returns the function that releases it."""
  path = files.as_path(workdir) / LOCK
  if files.is_remote(path):
    return _acquire_by_read_back(workdir, path)
  try:
    import fcntl  # pylint: disable=import-outside-toplevel  # POSIX only
  except ImportError:
    return _acquire_by_read_back(workdir, path)
  return _acquire_flock(workdir, os.fspath(path), fcntl)


def _acquire_flock(workdir: str, path: str, fcntl):
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = _parse(_read_fd(fd))
      os.close(fd)
      orphans = ("; that pid is gone, but a process it started still holds the lock: stop it"
                 if _gone(owner) else "")
      raise WorkdirInUse(describe(workdir, owner, checkable=True) + orphans) from None
    except OSError:  # a filesystem without flock
      os.close(fd)
      return _acquire_by_read_back(workdir, files.as_path(path))
    # A holder that released between our open and our flock unlinked this file: lock the
    # file that now has the name instead, or two launchers would hold different files.
    if _same_file(fd, path):
      break
    os.close(fd)
  try:
    previous = _read_fd(fd)
    if previous.strip():  # a holder that never released: it was killed
      _warn_takeover(workdir, _parse(previous))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder()).encode(), 0)
    os.fsync(fd)
  except BaseException:  # e.g. a full disk: the lock is not held past this call
    os.close(fd)
    raise

  def release() -> None:
    try:
      if _same_file(fd, path):  # unlinked while still locked, so no one locks a dead file
        os.unlink(path)
    finally:
      os.close(fd)

  return release


def _acquire_by_read_back(workdir: str, path):
  if path.exists():
    owner = _parse(path.read_bytes().decode("utf-8", errors="replace"))
    if not _gone(owner):
      raise WorkdirInUse(describe(workdir, owner,
                                  checkable=owner.get("host") == socket.gethostname()))
    _warn_takeover(workdir, owner)
  mine = json.dumps(holder())
  path.write_text(mine)
  found = path.read_text()
  if found != mine:  # another launcher wrote after us: it has the workdir
    raise WorkdirInUse(describe(workdir, _parse(found), checkable=False))

  def release() -> None:
    with contextlib.suppress(FileNotFoundError):
      if path.read_text() == mine:
        path.unlink()

  return release


def _gone(owner: dict) -> bool:
  """True only when `owner` is known to be dead: a process of this host that no longer
  exists. Another host's process cannot be checked, so it counts as alive."""
  if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
    return False
  try:
    os.kill(owner["pid"], 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # alive, owned by another user
    return False
  return False


def _warn_takeover(workdir: str, owner: dict) -> None:
  log.warning("workdir %s: taking over the lock of pid %s on host %s (since %s), which is "
              "gone; its run resumes from its newest checkpoint", workdir, owner.get("pid", "?"),
              owner.get("host", "?"), owner.get("started", "?"))


def _same_file(fd: int, path: str) -> bool:
  try:
    return os.path.samestat(os.fstat(fd), os.stat(path))
  except FileNotFoundError:
    return False


def _read_fd(fd: int) -> str:
  return os.pread(fd, 4096, 0).decode("utf-8", errors="replace")


def _parse(text: str) -> dict:
  # A lock being written, or edited by hand, still yields a message, with '?' for the unknown.
  try:
    owner = json.loads(text)
  except ValueError:
    return {}
  return owner if isinstance(owner, dict) else {}
