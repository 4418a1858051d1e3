"""The drift algorithm's continual schedule (jaxml/algos/_drift_schedule.py): stages, restarts,
the bucket sampler and the meta rows, against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.algos._drift_schedule import Schedule, bucket_sampler, meta_rows


def test_schedule_stages_and_bucket_sampler():
  """Stage s holds the steps with floor(step * T / num_steps) = s, traced or not; a batch
  holds rows of its stage's bucket only, in epochs over the bucket (each row once per
  epoch), as a pure function of (seed, step); the meta batch comes from the stage's period."""
  schedule = Schedule(True, train_periods=4, num_steps=20, bucket_periods=2,
                            meta_periods=1)
  stages = [schedule.stage(step) for step in range(20)]
  assert stages == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
  assert [int(schedule.stage(jnp.int32(step))) for step in range(20)] == stages
  assert [schedule.first_step(s) for s in range(4)] == [0, 5, 10, 15]
  assert schedule.restarts == (5, 10, 15)  # the learning-rate schedule restarts per stage
  assert Schedule(False, 4, 20, 2, 1).restarts == ()
  assert Schedule(False, 4, 20, 2, 1).stage(7) == 3  # offline: always the last period
  odd = Schedule(True, train_periods=4, num_steps=10, bucket_periods=1, meta_periods=1)
  for s in range(1, 4):
    assert odd.stage(odd.first_step(s)) == s and odd.stage(odd.first_step(s) - 1) == s - 1

  periods = np.random.default_rng(0).permutation(np.repeat(np.arange(4), 5))  # 5 rows each
  sampler = bucket_sampler(periods, schedule, batch_size=4)
  for stage in range(4):
    steps = range(schedule.first_step(stage), schedule.first_step(stage + 1))
    rows = np.concatenate([sampler.sample(7, step)[0] for step in steps])
    bucket = np.flatnonzero((periods >= stage - 1) & (periods <= stage))
    n = len(bucket)  # 5 (stage 0) or 10 rows; 20 positions: 4 or 2 whole epochs
    for epoch in range(len(rows) // n):
      np.testing.assert_array_equal(np.sort(rows[epoch * n:(epoch + 1) * n]), bucket)
  np.testing.assert_array_equal(sampler.sample(7, 12)[0], sampler.sample(7, 12)[0])
  assert not np.array_equal(sampler.sample(7, 12)[0], sampler.sample(8, 12)[0])

  starts = np.array([0, 5, 10, 15, 20], np.int32)  # the meta set, sorted by period
  rows = meta_rows(jax.random.key(0), starts, jnp.int32(2), 256, schedule)
  assert 10 <= int(rows.min()) and int(rows.max()) < 15 and len(np.unique(rows)) == 5
