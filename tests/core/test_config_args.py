"""Strict variant parsing."""

import pytest

from jaxml.core.config_args import one_of, parse_arg
from jaxml.errors import ConfigError


def test_defaults_flags_and_typed_values():
  opts = parse_arg("smoke,seed=3,lr=0.5,name=x", smoke=False, seed=0, lr=0.1, name="")
  assert (opts.smoke, opts.seed, opts.lr, opts.name) == (True, 3, 0.5, "x")
  assert parse_arg(None, smoke=False).smoke is False
  assert parse_arg("", seed=1).seed == 1
  assert parse_arg("flag=false", flag=True).flag is False


@pytest.mark.parametrize("arg,match", [
    ("bogus", "unknown config variant 'bogus'"),
    ("seed=x", "expected int"),
    ("seed", "needs a value"),
    ("smoke,smoke", "given twice"),
    ("smoke=maybe", "expected true/false"),
])
def test_rejects(arg, match):
  with pytest.raises(ConfigError, match=match):
    parse_arg(arg, smoke=False, seed=0)


def test_one_of():
  assert one_of(parse_arg("a", a=False, b=False), "a", "b") == "a"
  assert one_of(parse_arg("", a=False, b=False), "a", "b") is None
  with pytest.raises(ConfigError, match="exclude each other"):
    one_of(parse_arg("a,b", a=False, b=False), "a", "b")
