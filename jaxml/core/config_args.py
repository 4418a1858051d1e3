"""Strict parsing of the `:variant` string after a config file name.

`get_config("smoke,seed=3")` style: comma-separated items, each either a bare flag name
(sets that bool option to True) or `key=value` (converted to the type of the default).
Unknown names, repeated names and unconvertible values are errors, never silently ignored.
"""

from __future__ import annotations

import ml_collections

from jaxml.errors import ConfigError


def _convert(key: str, raw: str, default):
  if isinstance(default, bool):
    if raw.lower() in ("1", "true", "yes"):
      return True
    if raw.lower() in ("0", "false", "no"):
      return False
    raise ConfigError(f"variant option {key}={raw!r}: expected true/false")
  try:
    return type(default)(raw)
  except (TypeError, ValueError):
    raise ConfigError(f"variant option {key}={raw!r}: expected {type(default).__name__}") from None


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses `arg` against `defaults` (name -> default value, which fixes the type)."""
  options = dict(defaults)
  seen = set()
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, has_value, raw = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f"unknown config variant {key!r}; known: {', '.join(sorted(defaults))}")
    if key in seen:
      raise ConfigError(f"config variant {key!r} given twice")
    seen.add(key)
    if not has_value:
      if not isinstance(defaults[key], bool):
        raise ConfigError(f"config variant {key!r} needs a value: {key}=...")
      options[key] = True
    else:
      options[key] = _convert(key, raw.strip(), defaults[key])
  return ml_collections.ConfigDict(options)


def one_of(options: ml_collections.ConfigDict, *names: str) -> str | None:
  """The single bool variant among `names` that is set (None if none); two is an error."""
  chosen = [n for n in names if options[n]]
  if len(chosen) > 1:
    raise ConfigError(f"config variants {' and '.join(chosen)} exclude each other")
  return chosen[0] if chosen else None
