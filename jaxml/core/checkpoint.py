"""The one checkpoint path: Orbax `CheckpointManager`, async, keep N, atomic commits, and a
recovery that never throws a good step away.

What a `checkpoints/` directory can hold, and what becomes of it:

- A committed step sealed with `jaxml-checksums.json` (the sha256 of each of its files,
  written by process 0 once Orbax has finalized the step): verified before it is restored,
  because Orbax loads a flipped bit in array data silently. Local directories only: an
  object store keeps checksums of its objects itself.
- A committed step without that manifest (saved by an older jaxml, or the process was killed
  between Orbax's commit and the manifest): restored if it restores, and sealed then.
- A step directory that is empty or lacks Orbax's `default/` item (a stray `mkdir`, a copy
  that stopped early): set aside when the Checkpointer opens, before Orbax lists it as a step.
- The leftovers of a killed save, `<step>.orbax-checkpoint-tmp*`: never a step; deleted
  before the writer's first save.

"Set aside" moves that one step to `checkpoints_corrupt/<step>` with a warning; the newest
step that verifies and restores is restored. A step whose saved shapes differ from this
config's state is another run's, not a damaged one: ConfigError, nothing moved.

Single-process, the whole write of a step (Orbax's host copy and files, then the checksums)
runs on a background thread (`jaxml/core/background.py`) from a device copy of the state, so
the training thread only pays that copy and the next step may donate the state; multi-host,
`save` starts Orbax's async save on the calling thread, in step with the other hosts.

A storage fault while saving (out of space, read-only, vanished directory) raises
`StorageError` with one line naming the directory and the OS error, at the next `save` or
`wait` (multi-host: at `save` for a fault in starting the save). The failed
step's temporary directory is removed and the older steps stay as they were. Orbax's own
multi-line logs of a fault reported that way, and the tracebacks its abandoned writes print
as they land, are dropped. Nothing waits on a fault: step
directories are made by the calling thread (made asynchronously, Orbax's writer threads
waited 300 s for a directory a read-only disk never gave), and Orbax's threads are stopped
before the error is raised, so none is left for the exit to join. A temporary directory
that a read-only disk keeps is deleted before the next run's first save.

Sealing hashes the step once more, right after it was written (locally from the page cache),
on the writer thread (multi-host: in `save` for the previous step or in `wait`).

The workdir may be remote (`gs://...`): Orbax reads and writes epath paths, arrays through
tensorstore's own gcs driver.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxml.core import files
from jaxml.core import background
from jaxml.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

CHECKSUMS = "jaxml-checksums.json"
ITEM = "default"  # the directory of Orbax's single (default) item inside a step
ORBAX_TMP = ".orbax-checkpoint-tmp"
# OS errors that mean the storage failed, not the data: writing, a full or read-only disk or
# a directory removed under the writer; reading, no permission or a failing device. (A file
# missing from a step on read is damage to that step, not a storage fault.)
WRITE_FAULTS = files.STORAGE_ERRNOS | {errno.ENOENT}
READ_FAULTS = frozenset({errno.EACCES, errno.EPERM, errno.EIO, errno.ESTALE})
_CHUNK = 1 << 20
_SETTLE_ROUNDS, _SETTLE_SECONDS = 20, 0.1


class Checkpointer:
  """Saves and restores the train state under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3, use_async: bool = True):
    if max_to_keep < 1:  # Orbax would delete every step it writes
      raise ConfigError(f"keep_checkpoints={max_to_keep} must be at least 1: a run keeps its "
                        "newest checkpoint to resume from")
    self.directory = files.as_path(workdir) / "checkpoints"
    self.quarantine = files.as_path(workdir) / "checkpoints_corrupt"
    self._in_flight: int | None = None  # the step whose async save is not yet waited for
    self._fault: StorageError | None = None  # raised once; this Checkpointer saves no more
    self._saved_before = False
    self._writer = (background.Background("jaxml-checkpoint-writer")
                    if use_async and jax.process_count() == 1 else None)
    _drop_fault_noise()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=use_async, create=True,
        # Made by the caller's thread, so a read-only or full disk raises in `save`; made
        # asynchronously, Orbax's writer threads wait 300 s for a directory that never comes.
        async_options=ocp.AsyncOptions(create_directories_asynchronously=False))
    try:
      self._set_aside_incomplete()
      # One unnamed item, stated here: else Orbax infers it from the first step it reads,
      # and a step without `default/` turns every later save and restore into an error.
      self._manager = ocp.CheckpointManager(
          self.directory, item_handlers=ocp.StandardCheckpointHandler(), options=options)
    except Exception as err:  # pylint: disable=broad-except
      reason = files.storage_fault(err, WRITE_FAULTS)
      if reason is None:
        raise
      raise StorageError(f"cannot open the checkpoint directory {files.as_str(self.directory)}"
                         f": {reason}") from None

  # ----------------------------------------------------------------------------- restore

  def restore_latest(self, abstract_state: Any) -> Any | None:
    """The newest readable state (shaped and sharded like `abstract_state`), or None.

    Newer steps that fail their checksums or cannot be read are set aside one by one; one
    saved from a state of other shapes raises ConfigError, and a permission or device error
    StorageError, neither moving anything."""
    for step in sorted(self._manager.all_steps(), reverse=True):
      damage = self._agreed(lambda step=step: _damage(self._path(step)))
      if damage:
        self._set_aside(step, damage)
        continue
      try:
        state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
      except Exception as err:  # pylint: disable=broad-except  # any unreadable step
        self._raise_unless_unreadable(step, err, abstract_state)
        self._set_aside(step, _first_line(err))
        continue
      self._seal(step, unless_sealed=True)
      return state
    return None

  def _raise_unless_unreadable(self, step: int, err: Exception, abstract_state: Any) -> None:
    """Raises what a failed restore of `step` means when the step is not at fault: a
    StorageError for a permission or device error, a ConfigError when the step holds a
    state of other shapes (another config's run). Orbax casts a differing dtype silently
    and refuses differing shapes or tree paths, so this is asked only after a failure."""
    path = files.as_str(self._path(step))
    reason = files.storage_fault(err, READ_FAULTS)
    if reason is not None:
      raise StorageError(f"cannot read checkpoint {path}: {reason}") from None
    try:
      saved = self._manager.item_metadata(step).tree
    except Exception:  # pylint: disable=broad-except  # no readable metadata: damaged
      return
    differ = difference(saved, abstract_state)
    if differ:
      raise ConfigError(
          f"checkpoint {path} holds a state of another shape than this config's ({differ}): "
          "start a new --workdir, or fine-tune from this run with "
          "--config.init_from=<its workdir>") from None

  def _agreed(self, probe) -> str:
    """`probe()` run on process 0 (it reads every file of a step once), its verdict shared,
    so that all hosts set aside the same steps."""
    verdict = probe() if jax.process_index() == 0 else ""
    if jax.process_count() > 1 and multihost_utils.broadcast_one_to_all(
        np.asarray(bool(verdict))):
      verdict = verdict or "damaged, see process 0's log"
    return verdict

  # ----------------------------------------------------------------------------- set aside

  def _set_aside_incomplete(self) -> None:
    """Moves aside every step directory Orbax would list as a step but could not read. Only
    local ones: in an object store Orbax lists only steps with its commit marker, and a
    step without it may be a live run's save in flight."""
    local = not files.is_remote(self.directory)
    if local and jax.process_index() == 0 and self.directory.is_dir():
      for path in sorted(self.directory.iterdir()):
        reason = _incomplete(path) if path.name.isdigit() else None
        if reason:
          self._move_aside(int(path.name), reason)
    if jax.process_count() > 1:  # no host may list the steps before process 0 moved them
      multihost_utils.sync_global_devices("jaxml-set-aside-incomplete")

  def _set_aside(self, step: int, reason: str) -> None:
    if jax.process_index() == 0:
      self._move_aside(step, reason)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"jaxml-quarantine-{step}")
    self._manager.reload()

  def _move_aside(self, step: int, reason: str) -> None:
    log.warning("checkpoint at step %d is unreadable (%s); moving it to %s and using an older "
                "one", step, reason, files.as_str(self.quarantine))
    self.quarantine.mkdir(parents=True, exist_ok=True)
    target = self.quarantine / str(step)
    if target.exists():  # the same step was set aside before: keep the newest copy
      target.rmtree() if target.is_dir() else target.unlink()
    self._path(step).rename(target)

  # ----------------------------------------------------------------------------- save

  def save(self, step: int, state: Any) -> None:
    """Starts an async save of `state` at `step` (a no-op if that step is already saved),
    after finishing the previous one (as `wait` does)."""
    self._finish()
    if step in self._manager.all_steps():
      return
    if not self._saved_before and jax.process_index() == 0:
      self._remove_leftovers()
    self._saved_before = True
    if self._writer is not None and background.fits_a_copy(state):
      self._writer.start(self._write, step, background.detached(state))
    else:  # multi-host, or no room on a device for a second copy: Orbax's own async save
      self._start(step, state)

  def _write(self, step: int, state: Any) -> None:
    """The writer thread's whole save of `step`: started, finished, sealed."""
    self._start(step, state)
    self._in_flight = None
    self._complete(step)

  def _start(self, step: int, state: Any) -> None:
    self._in_flight = step
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as err:
      self._raise_storage_fault(step, err)
      raise

  def wait(self) -> None:
    """Waits for the save in flight and seals its step with checksums; a storage fault in it
    raises StorageError (once: after that, saving raises it again, and waiting and closing
    do nothing)."""
    if self._fault is None or self._unreported():
      self._finish()

  def close(self) -> None:
    """`wait`, then stops Orbax's threads."""
    if self._fault is None or self._unreported():
      try:
        self._finish()
      finally:
        if self._fault is None:  # a fault closed it already
          self._manager.close()

  def reached_preemption(self, step: int) -> bool:
    """True on every host once any host received a preemption notice (multi-host)."""
    return self._manager.reached_preemption(step)

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def _unreported(self) -> bool:
    """The writer thread's save is not joined yet: a fault it met is still to be raised."""
    return self._writer is not None and self._writer.pending

  def _finish(self) -> None:
    if self._writer is not None:
      self._writer.join()  # raises the write's failure (a StorageError, once)
    if self._fault is not None:
      raise self._fault
    step, self._in_flight = self._in_flight, None
    self._complete(step)

  def _complete(self, step: int | None) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as err:
      self._raise_storage_fault(step, err)
      raise
    if step is not None and step in self._manager.all_steps():
      self._seal(step, saving=True)

  def _raise_storage_fault(self, step: int | None, err: BaseException) -> None:
    """If storage is at fault for the failed save of `step`: stops Orbax's threads (the first
    failure surfaces while other writes of the step still run), removes what the save left,
    and raises the StorageError that says so. Else returns, and the caller re-raises."""
    self._in_flight = None
    reason = files.storage_fault(err, WRITE_FAULTS)
    if reason is None:
      return
    older = [s for s in self._manager.all_steps() if s != step]
    with contextlib.suppress(Exception):  # the same fault, again, from the other writes
      self._manager.close()
    if step is not None and jax.process_index() == 0:
      self._remove_failed(step)
    kept = (f"the newest complete checkpoint, step {max(older)}, is intact; fix the storage "
            "and run the same command again to resume") if older else "no checkpoint yet"
    what = f"checkpoint step {step}" if step is not None else "a checkpoint"
    self._fault = StorageError(f"cannot write {what} to {files.as_str(self.directory)}: "
                               f"{reason}; {kept}")
    raise self._fault from None

  def _remove_leftovers(self) -> None:
    """Deletes the temporary directories of saves killed mid-way, before this writer's first
    save. (Not on opening, as Orbax's `cleanup_tmp_directories` would: a reader such as
    `jaxml.trained.load` opening a live run's directory would delete its save in flight.)"""
    for path in self.directory.glob(f"*{ORBAX_TMP}*"):
      with contextlib.suppress(OSError):  # Orbax never lists them as steps
        path.rmtree()

  def _remove_failed(self, step: int) -> None:
    """Removes what a failed save of `step` wrote. Orbax gives up at the first failed write
    and does not wait for tensorstore's others, which recreate their directories as they
    land, so this removes until the directory stays clean for a moment (at most ~2 s; on a
    read-only disk it cannot, and the next writer deletes them)."""
    clean = 0
    for _ in range(_SETTLE_ROUNDS):
      left = [self._path(step), *self.directory.glob(f"{step}{ORBAX_TMP}*")]
      left = [path for path in left if path.exists()]
      clean = 0 if left else clean + 1
      if clean == 2:
        return
      for path in left:
        with contextlib.suppress(OSError):
          path.rmtree()
      time.sleep(_SETTLE_SECONDS)

  def _seal(self, step: int, *, unless_sealed: bool = False, saving: bool = False) -> None:
    """Writes the step's checksum manifest (process 0, local directories: an object store
    keeps checksums of its objects itself). A step without one is still restored, so a
    failure here only warns (e.g. a read-only archive being loaded) -- except a storage
    fault while `saving`, which ends the run's saving as any other (one StorageError line;
    the step itself is complete)."""
    if (jax.process_index() != 0 or files.is_remote(self.directory)
        or (unless_sealed and _recorded(self._path(step)))):
      return
    try:
      files.write_json(self._path(step) / CHECKSUMS, _manifest(checksums(self._path(step))))
    except Exception as err:  # pylint: disable=broad-except  # each storage backend its own
      reason = files.storage_fault(err, WRITE_FAULTS) if saving else None
      if reason is None:
        log.warning("no checksums written for checkpoint step %d: %s", step, _first_line(err))
        return
      with contextlib.suppress(Exception):
        self._manager.close()
      self._fault = StorageError(
          f"cannot write the checksums of checkpoint step {step} to "
          f"{files.as_str(self.directory)}: {reason}; the step itself is complete: fix the "
          "storage and run the same command again to resume")
      raise self._fault from None

  def _path(self, step: int):
    return self.directory / str(step)


# ----------------------------------------------------------------------------- checksums


def checksums(step_dir) -> dict[str, str]:
  """{path relative to `step_dir`: sha256} of every file of a step but the manifest."""
  root = files.as_path(step_dir)
  sums = {}
  for directory, _, names in root.walk():
    for name in names:
      if not name.startswith((CHECKSUMS, f".{CHECKSUMS}")):  # the manifest, its temp files
        path = directory / name
        sums[os.fspath(path)[len(os.fspath(root)) + 1:]] = _sha256(path)
  return dict(sorted(sums.items()))


def _sha256(path) -> str:
  digest = hashlib.sha256()
  with path.open("rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _manifest(sums: dict[str, str]) -> dict:
  # Its own hash, so a damaged manifest is told apart from damaged data (and ignored).
  return {"sha256": sums, "self": _digest_of(sums)}


def _digest_of(sums: dict[str, str]) -> str:
  return hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()


def _recorded(step_dir, *, warn: bool = False) -> dict[str, str] | None:
  """The checksums in the step's manifest; None if it has none, or one that is itself
  damaged (its own hash differs): then the step is judged by restoring it."""
  try:
    manifest = files.read_json(step_dir / CHECKSUMS)
    sums = manifest["sha256"]
    if manifest["self"] != _digest_of(sums):
      raise ValueError("its own checksum differs")
  except FileNotFoundError:
    return None
  except (ValueError, KeyError, TypeError) as err:
    if warn:
      log.warning("%s is damaged (%s); judging the step by restoring it",
                  step_dir / CHECKSUMS, _first_line(err))
    return None
  return sums


def _damage(step_dir) -> str:
  """Which file of the step differs from its manifest ("" if none, or if no manifest)."""
  for name, digest in (_recorded(step_dir, warn=True) or {}).items():
    path = step_dir / name
    if not path.exists():
      return f"{name} is missing"
    if _sha256(path) != digest:
      return f"{name} differs from its checksum"
  return ""


def _incomplete(path) -> str:
  """Why a step directory cannot hold a checkpoint ("" if it may)."""
  if not path.is_dir():
    return "not a directory"
  names = {p.name for p in path.iterdir()}
  if not names:
    return "empty directory"
  if ITEM not in names or not (path / ITEM).is_dir():
    return f"no {ITEM}/ item in it"
  return ""


# ----------------------------------------------------------------------------- storage faults


class _ReportedFaults(logging.Filter):
  """Drops Orbax's logged tracebacks of a storage fault (dozens of lines from each of its
  threads): the Checkpointer raises that fault as one StorageError line instead."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not (error is not None and f"{os.sep}orbax{os.sep}" in record.pathname
                and files.storage_fault(error) is not None)


_REPORTED_FAULTS = _ReportedFaults()


def _drop_fault_noise() -> None:
  """Installs, once, the log filter above and an unraisable-exception hook that drops what
  the writes Orbax abandoned at a fault raise as they land ("Event loop is closed") or as
  their coroutines are collected at exit: Python would print a traceback for each."""
  logging.getLogger("absl").addFilter(_REPORTED_FAULTS)  # adding it twice keeps one
  if getattr(sys.unraisablehook, "drops_abandoned_writes", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    error, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
    if not ((isinstance(error, RuntimeError) and str(error) == "Event loop is closed")
            or (code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename)):
      previous(unraisable)

  hook.drops_abandoned_writes = True
  sys.unraisablehook = hook


def _first_line(err: BaseException) -> str:
  return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"


# ----------------------------------------------------------------------------- shapes


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings: what restore fills in."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _key_name(key) -> str:
  for field in ("key", "name", "idx"):
    if hasattr(key, field):
      return str(getattr(key, field))
  return str(key)


def _shapes(tree) -> dict[tuple[str, ...], tuple]:
  """{path: (shape, dtype)} of a tree of arrays or array metadata, paths as plain names."""
  return {tuple(_key_name(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def difference(saved: Any, wanted: Any) -> str:
  """How the arrays of `saved` (a checkpoint's metadata) differ from `wanted`'s, in a
  phrase naming the first differing one ("" if they match in paths, shapes and dtypes)."""
  have, want = _shapes(saved), _shapes(wanted)
  differ = sorted(p for p in want.keys() | have.keys() if want.get(p) != have.get(p))
  if not differ:
    return ""
  path = differ[0]
  return (f"{len(differ)} arrays differ, e.g. {'/'.join(path)}: {have.get(path, 'missing')} "
          f"saved, {want.get(path, 'missing')} here")
