"""The exception types the launcher turns into one line and an exit code (see `jaxml/cli.py`).

Anything the user can fix by changing the config, the command line or the data raises
`ConfigError` before compilation (exit 2). A workdir that cannot be written or read raises
`StorageError` (exit 3). A NaN/Inf metric in stop mode raises `NonFiniteError` (exit 1).
"""


class ConfigError(ValueError):
  """Bad input that the user can fix: wrong config value, unknown name, unusable path."""


class NonFiniteError(RuntimeError):
  """A metric became NaN/Inf and `config.nonfinite == "stop"`: the run stops there."""


class StorageError(RuntimeError):
  """The workdir (or a dataset directory) cannot be written or read: out of space, read-only,
  vanished. The message names the path and the OS error on one line; the newest complete
  checkpoint is left intact, so a rerun once the storage is fixed resumes."""
