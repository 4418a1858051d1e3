"""The drift algorithm's schedule (jaxml/algos/drift.py): which periods a step trains on, the
"now" its ages count from, the continual schedule's batches and meta rows. Not an algorithm
(the leading underscore keeps it out of the algorithms loaded by name)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.algos.base import BatchSampler
from jaxml.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Schedule:
  """offline: every step samples the whole training window [0, T) and ages count from T - 1.
  continual: the steps run in T consecutive stages, stage s = the first floor(s * num_steps
  / T) .. steps; stage s samples only its bucket, periods [s - bucket_periods + 1, s] (fewer
  at the start), and ages count from s (the model never sees later data, and earlier data
  only through its parameters: sequential fine-tuning, with weights inside each bucket)."""

  continual: bool
  train_periods: int
  num_steps: int
  bucket_periods: int
  meta_periods: int

  @classmethod
  def of(cls, config, train_periods: int) -> Schedule:
    block = config.drift
    schedule = cls(block.schedule == "continual", train_periods, int(config.num_steps),
                   int(block.bucket_periods), int(block.meta_periods))
    if schedule.continual and schedule.num_steps < train_periods:
      raise ConfigError(f"num_steps={schedule.num_steps}: the continual schedule needs at "
                        f"least one step per training period ({train_periods})")
    if schedule.continual and schedule.bucket_periods > train_periods:
      raise ConfigError(f"drift.bucket_periods={schedule.bucket_periods} must be <= the "
                        f"data's {train_periods} training periods")
    return schedule

  @property
  def window(self) -> int:
    """The periods a step can see: all T offline, the bucket's continual."""
    return self.bucket_periods if self.continual else self.train_periods

  def stage(self, step):
    """The period whose end is "now" at `step` (an int or a traced int32)."""
    if not self.continual:
      return self.train_periods - 1
    if isinstance(step, (int, np.integer)):
      return min(int(step) * self.train_periods // self.num_steps, self.train_periods - 1)
    stage = step.astype(jnp.int32) * self.train_periods // self.num_steps
    return jnp.minimum(stage, self.train_periods - 1)

  def first_step(self, stage: int) -> int:
    """The first step of `stage` (continual): ceil(stage * num_steps / T)."""
    return -(-stage * self.num_steps // self.train_periods)

  @property
  def restarts(self) -> tuple[int, ...]:
    """Where the optimizer's schedule starts again: every stage's first step (continual),
    none offline."""
    if not self.continual:
      return ()
    return tuple(self.first_step(s) for s in range(1, self.train_periods))


def bucket_sampler(periods: np.ndarray, schedule: Schedule, batch_size: int) -> BatchSampler:
  """The continual schedule's batches: at `step`, `batch_size` rows of its stage's bucket,
  the bucket's rows in epochs of a fresh order per (seed, stage, epoch), counted from the
  stage's first step; a pure function of (seed, step), so resume stays exact."""
  order = np.argsort(periods, kind="stable")
  starts = np.searchsorted(periods[order], np.arange(schedule.train_periods + 1))

  def sample(seed: int, step: int):
    stage = schedule.stage(step)
    lo = starts[max(stage - schedule.bucket_periods + 1, 0)]
    n = starts[stage + 1] - lo
    position = (step - schedule.first_step(stage)) * batch_size + np.arange(batch_size)
    rows = np.empty(batch_size, np.int64)
    for epoch in np.unique(position // n):
      here = position // n == epoch
      permutation = np.random.default_rng([seed, stage, int(epoch)]).permutation(n)
      rows[here] = permutation[position[here] % n]
    return order[lo + rows], None

  return BatchSampler(sample=sample, batch_size=batch_size)


def meta_rows(key, starts, now, count: int, schedule: Schedule):
  """`count` rows drawn uniformly with replacement from the meta set's periods
  [now - meta_periods + 1, now] (`starts` from `latest_examples`; offline the whole set)."""
  if not schedule.continual:
    return jax.random.randint(key, (count,), 0, int(starts[-1]))
  starts = jnp.asarray(starts)
  lo = starts[jnp.maximum(now - schedule.meta_periods + 1, 0)]
  return jax.random.randint(key, (count,), lo, starts[now + 1])
