"""Config checks: the one way to say what a config value must be.

A rule maps a value to None (fine) or the phrase saying what it must be; `check_values` applies
a table of `{dotted key: rule}` and raises `ConfigError` with one line that names the key,
`optimizer.learning_rate=-0.1 must be >= 0 and finite`, before anything compiles. Algorithms
(`check_config` in `jaxml/algos/<name>.py`), the runner, the optimizer and the augmentations
state their keys' ranges with these rules, so every bad value is reported alike.
"""

from __future__ import annotations

import math
import numbers
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np

from jaxml.errors import ConfigError

Rule = Callable[[Any], str | None]


def _is_number(value) -> bool:
  # bool is an int to Python, never a count or a rate to a config.
  return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def in_range(low: float = -math.inf, high: float = math.inf, *, open_low: bool = False,
             open_high: bool = False, integer: bool = False) -> Rule:
  """A finite number (an integer with `integer`) in the interval from `low` to `high`.
  Finite always: NaN compares false with everything, so a check such as `lr < 0` lets it
  through, and the run would go on until its first NaN stop."""
  left, right = ("(" if open_low else "["), (")" if open_high else "]")
  show = lambda edge: str(int(edge)) if integer else f"{edge:g}"
  bound = ""
  if math.isinf(high) and not math.isinf(low):
    bound = f"{'>' if open_low else '>='} {show(low)}"
  elif math.isinf(low) and not math.isinf(high):
    bound = f"{'<' if open_high else '<='} {show(high)}"
  if math.isinf(low) or math.isinf(high):
    phrase = (f"must be an integer {bound}" if integer else
              f"must be {bound} and finite" if bound else "must be finite").rstrip()
  else:
    phrase = f"must be {'an integer ' if integer else ''}in {left}{show(low)}, {show(high)}{right}"

  def rule(value):
    if not _is_number(value) or not math.isfinite(value):
      return phrase
    if integer and not isinstance(value, numbers.Integral):
      return phrase
    too_low = value <= low if open_low else value < low
    too_high = value >= high if open_high else value > high
    return phrase if too_low or too_high else None

  return rule


positive = in_range(0, open_low=True)
non_negative = in_range(0)
fraction = in_range(0, 1)  # probabilities and shares, both ends allowed


def count(low: int = 1, high: float = math.inf) -> Rule:
  """An integer >= low (<= high): sizes, steps, seeds."""
  return in_range(low, high, integer=True)


def one_of(*choices) -> Rule:
  """One of `choices`, of the same type (so True is not the depth 1)."""
  phrase = f"must be one of {', '.join(str(c) for c in choices)}"
  return lambda value: None if any(type(value) is type(c) and value == c
                                   for c in choices) else phrase


def flag(value) -> str | None:
  return None if isinstance(value, (bool, np.bool_)) else "must be True or False"


def each(rule: Rule, *, allow_empty: bool = False) -> Rule:
  """A tuple whose every item passes `rule` (non-empty unless `allow_empty`)."""

  def check(value):
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
      return "must be a tuple"
    if not value and not allow_empty:
      return "must not be empty"
    for item in value:
      phrase = rule(item)
      if phrase:
        return f"holds {item!r}, which {phrase}"
    return None

  return check


def lookup(config, dotted: str, default=None):
  """`config.a.b` for "a.b", or `default` where a part is missing."""
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return default
    node = node[part]
  return node


_MISSING = object()


def check_values(config, rules: Mapping[str, Rule]) -> None:
  """Raises ConfigError, one line naming the dotted key, for the first value that breaks its
  rule. Keys the config does not have are skipped: a variant may leave a block out."""
  for key, rule in rules.items():
    value = lookup(config, key, _MISSING)
    if value is _MISSING:
      continue
    phrase = rule(value)
    if phrase:
      raise ConfigError(f"{key}={value!r} {phrase}")

