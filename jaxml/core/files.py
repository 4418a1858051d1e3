"""Host files that a crash never leaves half-written: atomic writes, jsonl logs that survive a
torn last line or a damaged one, dataset manifests, and directories built once.

Paths are local or remote (`gs://`, `s3://`, `az://`, through `etils.epath`). A local write
goes to a temporary name in the same directory, is fsynced and renamed over the target, so a
reader sees the old file or the new one, never a mix, and a writer that fails leaves the old
file as it was. An object store's upload is already all-or-nothing (the object appears once
complete), so a remote write is buffered here and uploaded only when the writer succeeded.
Object stores cannot append: a remote jsonl file is rewritten whole on each append.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import re
import shutil
import uuid
from typing import Any
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from etils import epath

from jaxml.errors import ConfigError

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
# Schemes etils.epath has a backend for (hf:// is read-only, so no workdir can live there).
REMOTE_SCHEMES = ("gs", "s3", "az")


def scheme(path) -> str | None:
  """"gs" for "gs://bucket/x"; None for a local path."""
  text = os.fspath(path)
  return text.split("://", 1)[0] if "://" in text else None


def is_remote(path) -> bool:
  return scheme(path) is not None


def as_path(path) -> epath.Path:
  """`path` as an epath.Path: a local one absolute (`~` expanded), a URL as given."""
  name = scheme(path)
  if name is None:
    return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
  if name not in REMOTE_SCHEMES:
    raise ConfigError(f"{os.fspath(path)}: unsupported scheme {name}://; use a local path or "
                      f"one of {', '.join(s + '://' for s in REMOTE_SCHEMES)}")
  return epath.Path(os.fspath(path))


def as_str(path) -> str:
  """The form a summary or a message shows: an absolute local path, or the URL."""
  return os.fspath(as_path(path))


def writable_directory(path, *, what: str = "directory") -> str:
  """Creates the directory `path` and proves it writable by writing a file there; returns
  `as_str(path)`, or raises a one-line ConfigError saying why not (an unsupported scheme, a
  missing backend package, an unreachable or missing bucket, no permission)."""
  directory = as_path(path)
  probe = directory / f".write-test-{uuid.uuid4().hex[:8]}"
  try:
    # gcsfs logs a traceback for a request that ran out of retries and then raises the same
    # error, which is reported here in one line.
    with _quiet("gcsfs"):
      directory.mkdir(parents=True, exist_ok=True)
      probe.write_text("")
      probe.unlink()
  except ImportError as err:  # epath's backend for the scheme, e.g. gcsfs for gs://
    raise ConfigError(f"{what} {os.fspath(path)} needs a package that is missing ({err}); "
                      "for gs:// pip install 'jaxml[gcs]'") from None
  except Exception as err:  # pylint: disable=broad-except  # each backend raises its own
    reason = (err.strerror if isinstance(err, OSError) else None) or (
        f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}")
    raise ConfigError(f"{what} {as_str(path)} is not writable: {reason}") from None
  return as_str(path)


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
  logger = logging.getLogger(logger_name)
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    logger.setLevel(level)


# ----------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_open(path, mode: str = "w") -> Iterator[Any]:
  """A file to write `path` through ("w" text, "wb" bytes); the target changes only when the
  `with` block ends without an exception."""
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_open writes whole files (mode 'w' or 'wb'), not {mode!r}")
  path = as_path(path)
  if is_remote(path):
    buffer = io.StringIO() if mode == "w" else io.BytesIO()
    yield buffer
    if mode == "w":
      path.write_text(buffer.getvalue())
    else:
      path.write_bytes(buffer.getvalue())
    return
  target = os.fspath(path)
  # A name of its own per writer, so concurrent writers of one target never share a temp file
  # (mkstemp would give 0600 permissions; an exclusive open keeps the umask's).
  tmp = os.path.join(os.path.dirname(target),
                     f".{os.path.basename(target)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    with open(tmp, mode.replace("w", "x"), **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
  _fsync_directory(os.path.dirname(target))


def _fsync_directory(directory: str) -> None:
  # Makes the rename itself durable; some filesystems cannot open a directory for this.
  with contextlib.suppress(OSError):
    fd = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def write_text(path, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def write_bytes(path, data: bytes) -> None:
  with atomic_open(path, "wb") as f:
    f.write(data)


def write_json(path, obj: Any, *, sort_keys: bool = False) -> None:
  """`obj` as indented JSON; values JSON lacks (numpy scalars, paths) written as str."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n")


def write_npz(path, arrays: dict[str, np.ndarray], *, compressed: bool = True) -> None:
  with atomic_open(path, "wb") as f:
    (np.savez_compressed if compressed else np.savez)(f, **arrays)


def read_json(path) -> Any:
  """The JSON in `path`; FileNotFoundError if there is none."""
  return json.loads(as_path(path).read_text())


def makedirs(path) -> None:
  as_path(path).mkdir(parents=True, exist_ok=True)


# ----------------------------------------------------------------------------- jsonl


# Why a line of a jsonl file is no row, by the first check it fails.
_NOT_UTF8, _NOT_JSON, _NOT_A_ROW = "not UTF-8", "not JSON", "not a row"
DAMAGED = ".damaged"  # suffix of the file that keeps the lines a repair cut out


def _parse_jsonl(data: bytes, valid) -> tuple[list, list[bytes], list[tuple[int, str, bytes]]]:
  """(rows, their lines, damaged lines as (number, why, line)). Each line is decoded on its
  own, so one bad byte costs one line. An unterminated last line that does not parse is a row
  whose writer was killed mid-line (torn): dropped, and not counted as damage."""
  rows, kept, damaged = [], [], []
  lines = data.split(b"\n")
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row, why = json.loads(line.decode("utf-8")), None
      if valid is not None and not valid(row):
        why = _NOT_A_ROW
    except UnicodeDecodeError:
      why = _NOT_UTF8
    except ValueError:
      why = _NOT_JSON
    if why is None:
      rows.append(row)
      kept.append(line)
    elif not (number == len(lines) and why != _NOT_A_ROW):
      damaged.append((number, why, line))
  return rows, kept, damaged


def read_jsonl(path, *, repair: bool = False, valid: Callable[[Any], bool] | None = None) -> list:
  """Every row of a jsonl file ([] if there is none), never failing on its content.

  A torn last line (its writer was killed) is skipped quietly. Any other line that is not
  UTF-8, not JSON, or a value `valid` rejects is damage (a disk that filled, a hand edit):
  skipped, with one warning naming the line numbers, so a damaged log never blocks a resume.
  With `repair` the file is rewritten as its rows alone, one per line, so appends start on a
  clean line and the warning is not repeated; the damaged lines go to `<path>.damaged`
  (appended), so nothing a repair removes is lost.
  """
  path = as_path(path)
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    return []
  rows, kept, damaged = _parse_jsonl(data, valid)
  if damaged:
    where = ", ".join(f"{number} ({why})" for number, why, _ in damaged[:5])
    more = f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""
    kept_in = f"; rewritten without them, which are kept in {os.fspath(path)}{DAMAGED}"
    log.warning("%s: skipped damaged line(s) %s%s%s", os.fspath(path), where, more,
                kept_in if repair else "")
  good = b"".join(line + b"\n" for line in kept)
  if repair and good != data:
    if damaged:
      _append_bytes(as_path(os.fspath(path) + DAMAGED),
                    b"".join(line + b"\n" for _, _, line in damaged))
    write_bytes(path, good)
  return rows


def _append_bytes(path, data: bytes) -> None:
  # Written whole, so it works on object stores too; it only grows on a damaged file's repair.
  try:
    old = path.read_bytes()
  except FileNotFoundError:
    old = b""
  write_bytes(path, old + data)


def _lines(rows: Iterable) -> str:
  return "".join(json.dumps(row) + "\n" for row in rows)


def write_jsonl(path, rows: Iterable) -> None:
  """Replaces `path` by exactly `rows`, atomically."""
  write_text(path, _lines(rows))


class JsonlAppender:
  """Appends rows to one jsonl file. Opening it repairs the file (`read_jsonl`), so the first
  new row starts on its own line. A local file stays open and is flushed after every write; a remote
  one (object stores cannot append) is rewritten whole from the text held here."""

  def __init__(self, path):
    self.path = as_path(path)
    read_jsonl(self.path, repair=True)
    if is_remote(self.path):
      self._text = self.path.read_text() if self.path.exists() else ""
      self._file = None
    else:
      self._file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def write(self, rows: Iterable) -> None:
    text = _lines(rows)
    if self._file is None:
      self._text += text
      self.path.write_text(self._text)
    else:
      self._file.write(text)
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


def append_jsonl(path, rows: Iterable) -> None:
  """Appends `rows` to `path` (created if missing), after repairing it (`read_jsonl`)."""
  appender = JsonlAppender(path)
  try:
    appender.write(rows)
  finally:
    appender.close()


# ----------------------------------------------------------------------------- datasets


def write_manifest(root, manifest: dict) -> None:
  """Writes `<root>/manifest.json`. Write it last: its presence says the dataset is whole."""
  write_json(as_path(root) / MANIFEST, manifest)


def read_manifest(root, *, what: str = "dataset", hint: str = "") -> dict:
  """`<root>/manifest.json`, or a ConfigError saying there is no `what` at `root` (and `hint`:
  how to build one)."""
  try:
    return read_json(as_path(root) / MANIFEST)
  except FileNotFoundError:
    raise ConfigError(f"{os.fspath(root)} holds no {what} ({MANIFEST} missing)"
                      + (f"; {hint}" if hint else "")) from None


def _built(target: str, marker: str | None) -> bool:
  if not os.path.exists(target):
    return False
  if not os.path.isdir(target):
    raise ConfigError(f"{target} is a file, not a dataset directory")
  if marker is None:
    return bool(os.listdir(target))
  if os.path.exists(os.path.join(target, marker)):
    return True
  if os.listdir(target):
    raise ConfigError(f"{target} holds files but no {marker}: an interrupted build of an older "
                      "jaxml? Delete it and it is built again")
  return False


def build_once(target, build: Callable[[str], Any], *, marker: str | None = MANIFEST) -> bool:
  """Makes the local directory `target` by `build(directory)` unless it is built already (it
  holds `marker`; with marker None, it is not empty). Returns True if this call built it.

  The build writes into a fresh hidden sibling directory that is renamed to `target` only
  once `build` returned, so a crash, an error or Ctrl-C never leaves a half-built `target`
  (a killed process can leave the hidden sibling, `.<name>.building-*`, which is safe to
  delete). Processes racing to build the same target each build, and the first rename wins;
  the others delete their copy and use the winner's.
  """
  if is_remote(target):
    raise ConfigError(f"{os.fspath(target)}: datasets are built on a local or shared "
                      "filesystem, not in an object store")
  target = os.path.abspath(os.path.expanduser(os.fspath(target)))
  if _built(target, marker):
    return False
  parent, name = os.path.split(target)
  os.makedirs(parent, exist_ok=True)
  building = os.path.join(parent, f".{name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}")
  os.mkdir(building)
  try:
    build(building)
    if marker is not None and not os.path.exists(os.path.join(building, marker)):
      raise RuntimeError(f"the builder of {target} wrote no {marker}")
    try:
      os.rename(building, target)  # atomic; replaces an empty directory, never a full one
    except OSError:
      if not _built(target, marker):
        raise
      shutil.rmtree(building, ignore_errors=True)  # another process built it first
      return False
  except BaseException:
    shutil.rmtree(building, ignore_errors=True)
    raise
  _fsync_directory(parent)
  return True


# ----------------------------------------------------------------------------- storage faults

# OS errors that say the storage failed, not the program or the data: out of space or quota,
# read-only, no permission, a failing device or a stale network mount, a file too large.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                            errno.EIO, errno.ESTALE, errno.EFBIG})


def storage_fault(err: BaseException, errnos=STORAGE_ERRNOS) -> str | None:
  """"No space left on device (errno 28)" when an OS error with one of `errnos` is behind
  `err` (found along its __cause__/__context__ chain), else None. Orbax raises its own file
  writes' OSError, and tensorstore's failures as ValueError whose text carries the errno
  (`[os_error_code='28']`), each wrapped by whatever its background thread raised."""
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    code = err.errno if isinstance(err, OSError) else _tensorstore_errno(str(err))
    if code in errnos:
      return f"{os.strerror(code)} (errno {code})"
    err = err.__cause__ or err.__context__
  return None


def _tensorstore_errno(text: str) -> int | None:
  match = re.search(r"os_error_code='?(\d+)", text)
  return int(match.group(1)) if match else None
