"""Optimizers and learning-rate schedules from a config block.

`optimizer.name` is an optax constructor (`sgd`, `adamw`, `lars`, ...); the schedule is linear
warmup then cosine (or constant) decay over the run, or over each segment of it between
restarts.
"""

from __future__ import annotations

from collections.abc import Sequence

import optax

from jaxml.core import checks
from jaxml.errors import ConfigError

SCHEDULES = ("cosine", "constant")


def check_optimizer(opt_config) -> None:
  """ConfigError, one line naming `optimizer.<key>`, for a value the optimizer cannot use.

  A learning rate of 0 is allowed (it freezes the weights: a run that only evaluates, or a
  test that the weights come through unchanged); a negative one would silently train uphill.
  """
  name = opt_config.get("name", None)
  if not isinstance(name, str) or not callable(getattr(optax, name, None)):
    raise ConfigError(f"optimizer.name={name!r} is not an optax optimizer (e.g. sgd, adamw)")
  checks.check_values({"optimizer": opt_config}, {
      "optimizer.learning_rate": checks.non_negative,
      "optimizer.warmup_steps": checks.count(0),
      "optimizer.schedule": checks.one_of(*SCHEDULES),
      "optimizer.weight_decay": checks.non_negative,
      "optimizer.momentum": checks.in_range(0, 1, open_high=True),
      "optimizer.clip_global_norm": checks.non_negative,
  })


def make_schedule(opt_config, num_steps: int, restarts: Sequence[int] = ()) -> optax.Schedule:
  """Warmup then `optimizer.schedule` over `num_steps`; with `restarts` (increasing steps in
  (0, num_steps)), the same schedule run afresh over each segment between them (e.g. one
  per stage of a continual run, so that every stage starts at the full rate)."""
  if restarts:
    bounds = [0, *restarts, num_steps]
    if any(b <= a for a, b in zip(bounds, bounds[1:])):
      raise ValueError(f"restarts={list(restarts)} must increase within (0, {num_steps})")
    return optax.join_schedules([make_schedule(opt_config, b - a)
                                 for a, b in zip(bounds, bounds[1:])], list(restarts))
  lr = float(opt_config.learning_rate)
  warmup = int(opt_config.get("warmup_steps", 0))
  name = opt_config.get("schedule", "cosine")
  if name not in SCHEDULES:
    raise ConfigError(f"optimizer.schedule={name!r} must be one of {', '.join(SCHEDULES)}")
  if name == "constant":
    after = optax.constant_schedule(lr)
  else:
    after = optax.cosine_decay_schedule(lr, decay_steps=max(num_steps - warmup, 1))
  if warmup <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(opt_config, num_steps: int,
                   restarts: Sequence[int] = ()) -> optax.GradientTransformation:
  """`optimizer.name` with the schedule (restarted at `restarts`: `make_schedule`), plus
  optional global-norm clipping of updates."""
  check_optimizer(opt_config)
  name = opt_config.name
  constructor = getattr(optax, name)
  kwargs = {"learning_rate": make_schedule(opt_config, num_steps, restarts)}
  if name in ("sgd", "lars") and opt_config.get("momentum", 0.0):
    kwargs["momentum"] = float(opt_config.momentum)
  weight_decay = float(opt_config.get("weight_decay", 0.0))
  decoupled = name in ("adamw", "lars", "lamb")  # these take weight_decay themselves
  if decoupled:
    kwargs["weight_decay"] = weight_decay
  tx = constructor(**kwargs)
  if weight_decay and not decoupled:  # L2 added to the gradient, e.g. SGD's usual recipe
    tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
  if opt_config.get("clip_global_norm", 0.0):
    tx = optax.chain(optax.clip_by_global_norm(float(opt_config.clip_global_norm)), tx)
  return tx
