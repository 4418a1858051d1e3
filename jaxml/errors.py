"""The one exception type for bad user input.

Anything the user can fix by changing the config, the command line or the data raises
`ConfigError` before compilation; the launcher prints its message on one line and exits 2.
"""


class ConfigError(ValueError):
  """Bad input that the user can fix: wrong config value, unknown name, unusable path."""


class NonFiniteError(RuntimeError):
  """A metric became NaN/Inf and `config.nonfinite == "stop"`: the run stops there."""
