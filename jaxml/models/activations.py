"""Activation functions, and the one parser of `model.activation` specs.

Smooth activations make replicas of a model trained on the same data disagree less than ReLU
does (Shamir, Lin & Coviello; Shamir & Lin 2022): ReLU's gradient jumps from 0 to 1 at 0, so
the order of updates decides which side of the kink a unit ends on. SmeLU keeps ReLU's flat
zero and slope-one regions and joins them with a quadratic, so its gradient is continuous and
it costs no exp or log.

A spec names a function and its parameters; there is one way to spell each:

  relu                                     jax.nn.relu
  gelu                                     jax.nn.gelu (its default tanh approximation)
  smelu:<beta>                             smelu(x, beta), beta > 0
  swish:<beta>                             x * sigmoid(beta * x), beta > 0; swish:1.0 is SiLU
  softplus:<beta>                          log(1 + exp(beta * x)) / beta, beta > 0
  gsmelu:alpha=<a>,beta=<b>,left=<g->,right=<g+>
                                           generalized_smelu(x, a, b, g-, g+): every key once,
                                           in any order; a, b >= 0, a + b > 0

`parse(spec)` returns an `Activation`: a frozen dataclass, equal and hashable by value, so a
model holding one keeps it as static structure (`nnx.split` puts it in the graphdef) and two
models built from the same spec have equal graphdefs.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxml.errors import ConfigError


def relu(x: jax.Array) -> jax.Array:
  return jax.nn.relu(x)


def gelu(x: jax.Array) -> jax.Array:
  # The tanh approximation, jax.nn.gelu's default: what the decision transformer has used.
  return jax.nn.gelu(x)


def smelu(x: jax.Array, beta: float) -> jax.Array:
  """Smooth ReLU: 0 for x <= -beta, (x + beta)^2 / (4 beta) for |x| <= beta, x for x >= beta.
  Value and first derivative are continuous at -beta and beta (the derivative is 0, then
  (x + beta) / (2 beta), then 1)."""
  quadratic = jnp.square(x + beta) / (4.0 * beta)
  return jnp.where(x <= -beta, jnp.zeros_like(x), jnp.where(x >= beta, x, quadratic))


def generalized_smelu(x: jax.Array, alpha: float, beta: float, g_left: float = 0.0,
                      g_right: float = 1.0) -> jax.Array:
  """Generalized SmeLU (Shamir & Lin 2022): slope g_left left of -alpha, slope g_right right
  of beta, a quadratic over the transition [-alpha, beta]:

    y = g_right * x                   for x >= beta
    y = a x^2 + b x + c               for -alpha <= x <= beta
    y = g_left * x + t                for x <= -alpha
    a = (g_right - g_left) / (2 (alpha + beta)),  b = (alpha g_right + beta g_left) / (alpha + beta)
    c = a beta^2,                                 t = a alpha^2 - b alpha + c + g_left alpha

  The quadratic's slope 2 a x + b is g_left at -alpha and g_right at beta, and c and t make
  the pieces meet, so the value and first derivative are continuous. With alpha = beta,
  g_left = 0, g_right = 1: a = 1/(4 beta), b = 1/2, c = beta/4, t = 0, and
  a x^2 + b x + c = (x + beta)^2 / (4 beta): SmeLU.
  """
  width = alpha + beta
  a = (g_right - g_left) / (2.0 * width)
  b = (alpha * g_right + beta * g_left) / width
  c = a * beta**2
  t = a * alpha**2 - b * alpha + c + g_left * alpha
  middle = (a * x + b) * x + c
  return jnp.where(x <= -alpha, g_left * x + t, jnp.where(x >= beta, g_right * x, middle))


def swish(x: jax.Array, beta: float) -> jax.Array:
  """x * sigmoid(beta x); beta = 1 is SiLU, larger beta approaches ReLU."""
  return x * jax.nn.sigmoid(beta * x)


def softplus(x: jax.Array, beta: float) -> jax.Array:
  """log(1 + exp(beta x)) / beta, through jax.nn.softplus (log-add-exp, stable for large |x|);
  larger beta approaches ReLU."""
  return jax.nn.softplus(beta * x) / beta


# name -> (function, its parameters in the order a call takes them, keyed in the spec?)
_FUNCTIONS = {
    "relu": (relu, (), False),
    "gelu": (gelu, (), False),
    "smelu": (smelu, ("beta",), False),
    "swish": (swish, ("beta",), False),
    "softplus": (softplus, ("beta",), False),
    "gsmelu": (generalized_smelu, ("alpha", "beta", "left", "right"), True),
}
NAMES = tuple(_FUNCTIONS)


@dataclasses.dataclass(frozen=True)
class Activation:
  """A parsed spec: `name` and its parameters in the function's order; call it on an array."""

  name: str
  params: tuple[float, ...] = ()

  def __call__(self, x: jax.Array) -> jax.Array:
    return _FUNCTIONS[self.name][0](x, *self.params)

  def __str__(self) -> str:
    _, keys, keyed = _FUNCTIONS[self.name]
    if not keys:
      return self.name
    if keyed:
      return f"{self.name}:" + ",".join(f"{k}={v!r}" for k, v in zip(keys, self.params))
    return f"{self.name}:{self.params[0]!r}"


def _number(name: str, key: str, raw: str) -> float:
  try:
    value = float(raw)
  except ValueError:
    raise ConfigError(f"{name}'s {key} must be a number, got {raw!r}") from None
  if not math.isfinite(value):
    raise ConfigError(f"{name}'s {key} must be finite, got {raw!r}")
  return value


def _values(name: str, keys: tuple[str, ...], keyed: bool, args: str | None) -> tuple[float, ...]:
  """The spec's numbers after the colon, in `keys` order (a bare number or key=value pairs)."""
  if not keys:
    if args is not None:
      raise ConfigError(f"{name} takes no parameters, got {args!r}")
    return ()
  if not keyed:
    if not args:
      raise ConfigError(f"{name} needs its {keys[0]}, e.g. {name}:1.0")
    if "," in args or "=" in args:
      raise ConfigError(f"{name} takes one number, its {keys[0]}, e.g. {name}:1.0")
    return (_number(name, keys[0], args),)
  given = {}
  for item in (args or "").split(","):
    key, has_value, raw = item.partition("=")
    if not has_value or key not in keys:
      raise ConfigError(f"{name} takes {', '.join(k + '=<number>' for k in keys)}; got {item!r}")
    if key in given:
      raise ConfigError(f"{name}'s {key} is given twice")
    given[key] = _number(name, key, raw)
  missing = [k for k in keys if k not in given]
  if missing:
    raise ConfigError(f"{name} needs {', '.join(missing)}")
  return tuple(given[k] for k in keys)


def _check_range(name: str, values: dict[str, float]) -> None:
  if name in ("smelu", "swish", "softplus") and values["beta"] <= 0:
    raise ConfigError(f"{name}'s beta must be > 0, got {values['beta']!r}")
  if name == "gsmelu":
    if values["alpha"] < 0 or values["beta"] < 0:
      raise ConfigError(f"gsmelu's alpha and beta must be >= 0, got {values['alpha']!r} and "
                        f"{values['beta']!r}")
    if values["alpha"] + values["beta"] <= 0:
      raise ConfigError("gsmelu's transition alpha + beta must be > 0")


def _parse(spec) -> Activation:
  """The Activation `spec` names; ConfigError saying what is wrong (without the spec)."""
  if not isinstance(spec, str):
    raise ConfigError(f"got a {type(spec).__name__}, not a string")
  name, has_args, args = spec.partition(":")
  if name not in _FUNCTIONS:
    raise ConfigError(f"unknown activation {name!r}; known: {', '.join(NAMES)}")
  _, keys, keyed = _FUNCTIONS[name]
  values = _values(name, keys, keyed, args if has_args else None)
  _check_range(name, dict(zip(keys, values)))
  return Activation(name, values)


def parse(spec: str) -> Activation:
  """The activation `spec` names (see the module docstring); ConfigError naming the spec and
  what is wrong with it otherwise."""
  try:
    return _parse(spec)
  except ConfigError as error:
    raise ConfigError(f"activation {spec!r}: {error}") from None


def rule(spec) -> str | None:
  """A `jaxml.core.checks` rule: None for a good spec ("" too: the model's own), else what it
  must be."""
  if spec == "":
    return None
  try:
    _parse(spec)
  except ConfigError as error:
    return f"must be an activation such as relu or smelu:1.0: {error}"
  return None


def check(spec, key: str = "model.activation") -> None:
  """ConfigError `<key>=<spec> must be ...` for a bad spec, as `checks.check_values` says it."""
  phrase = rule(spec)
  if phrase:
    raise ConfigError(f"{key}={spec!r} {phrase}")


# What the models default to, as the functions they used before `model.activation` existed.
RELU = Activation("relu")
GELU = Activation("gelu")
SILU = Activation("swish", (1.0,))


def from_config(model_config, default: Activation = RELU) -> Activation:
  """The activation `model_config.activation` names; `default`, the model's own, where it is
  "" or absent. Configs declare "" so that a run started before the key existed (its
  config.json lacks it) is the same config, and resumes."""
  spec = model_config.get("activation", None)
  return default if not spec else parse(spec)
