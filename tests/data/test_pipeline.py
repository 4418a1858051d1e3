"""The batching pipeline: order is a pure function of (seed, step); eval tails are masked."""

import threading
import time

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxml.core import mesh as mesh_lib
from jaxml.data import pipeline
from jaxml.data.base import ArraySplit


def _split(n):
  return ArraySplit({"x": np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
                     "label": np.arange(n, dtype=np.int32)})


def test_each_epoch_visits_every_example_once():
  n, batch = 50, 10
  seen = np.concatenate([pipeline.batch_indices(3, s, batch, n) for s in range(5)])
  np.testing.assert_array_equal(np.sort(seen), np.arange(n))


def test_batches_cross_epoch_boundaries_and_reshuffle():
  n, batch = 7, 4  # 28 positions: 4 full epochs, batches straddle their boundaries
  stream = np.concatenate([pipeline.batch_indices(0, s, batch, n) for s in range(7)])
  epochs = stream.reshape(4, n)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
  assert len({tuple(e) for e in epochs}) > 1  # a different order each epoch


def test_order_is_a_pure_function_of_seed_and_step():
  a = pipeline.batch_indices(5, 123, 32, 1000)
  pipeline.epoch_order.cache_clear()
  np.testing.assert_array_equal(a, pipeline.batch_indices(5, 123, 32, 1000))
  assert not np.array_equal(a, pipeline.batch_indices(6, 123, 32, 1000))


def test_train_batch_is_sharded_on_data_axis():
  mesh = mesh_lib.make_mesh()
  batch = pipeline.train_batch(_split(100), mesh, seed=0, step=2, batch_size=16)
  assert batch["x"].shape == (16, 3)
  assert batch["x"].sharding == mesh_lib.data_sharding(mesh)
  expected = pipeline.batch_indices(0, 2, 16, 100)
  np.testing.assert_array_equal(np.asarray(batch["label"]), expected)


def test_eval_batches_pad_tail_with_mask():
  mesh = mesh_lib.make_mesh()
  batches = list(pipeline.eval_batches(_split(21), mesh, 16))
  assert len(batches) == 2
  labels = np.concatenate([np.asarray(b["label"]) for b in batches])
  mask = np.concatenate([np.asarray(b["mask"]) for b in batches])
  assert mask.sum() == 21 and mask[:21].all() and not mask[21:].any()
  np.testing.assert_array_equal(labels[:21], np.arange(21))


@pytest.mark.parametrize("depth, probe", [(0, 8), (2, 1), (2, 8)])
def test_prefetcher_yields_in_order_and_propagates_errors(depth, probe):
  made = []
  p = pipeline.Prefetcher(lambda s: made.append(s) or {"s": s}, 3, 8, depth=depth, probe=probe)
  assert [p.next(s)["s"] for s in range(3, 8)] == [3, 4, 5, 6, 7]
  assert made == [3, 4, 5, 6, 7] and p.wait_seconds >= 0
  assert p.threaded == (probe == 1 and depth > 0)  # one probed batch: no step to weigh it
  p.close()

  def boom(step):
    if step == 1:
      raise RuntimeError("bad record")
    return {}

  p = pipeline.Prefetcher(boom, 0, 5, depth=depth, probe=probe)
  p.next(0)
  with pytest.raises(RuntimeError, match="bad record"):
    p.next(1)
  p.close()


def _consume(prefetcher, steps, step_seconds):
  """The steps' batches, each followed by a step of `step_seconds`; and who built each."""
  out = []
  for step in steps:
    out.append(prefetcher.next(step))
    time.sleep(step_seconds)
  prefetcher.close()
  return [b["s"] for b in out], [b["by"] for b in out]


def _batch(seconds):
  return lambda s: time.sleep(seconds) or {"s": s, "by": threading.current_thread().name}


def test_batches_much_cheaper_than_a_step_stay_inline():
  p = pipeline.Prefetcher(_batch(0.0), 0, 20, depth=2, probe=4)
  order, built_by = _consume(p, range(20), step_seconds=0.01)
  assert order == list(range(20)) and not p.threaded
  assert set(built_by) == {threading.current_thread().name}


def test_batches_that_cost_a_step_move_to_a_thread_after_the_probe():
  p = pipeline.Prefetcher(_batch(0.01), 5, 25, depth=2, probe=4)
  order, built_by = _consume(p, range(5, 25), step_seconds=0.001)
  assert order == list(range(5, 25)) and p.threaded
  main = threading.current_thread().name
  assert built_by[:4] == [main] * 4 and main not in built_by[4:]  # the same batches, in order


@pytest.mark.parametrize("depth, probe, probed", [(2, 3, 3), (0, 3, 0)])
def test_probing_lasts_for_the_probed_batches_only(depth, probe, probed):
  p = pipeline.Prefetcher(_batch(0.0), 0, 10, depth=depth, probe=probe)
  seen = []
  for step in range(6):
    seen.append(p.probing)  # asked before each batch, as the loop asks after each step
    p.next(step)
  p.close()
  assert seen == [True] * probed + [False] * (6 - probed)


def test_batch_size_must_divide_devices():
  from jaxml.errors import ConfigError
  mesh = mesh_lib.make_mesh()
  with pytest.raises(ConfigError, match="not divisible by the device count"):
    mesh_lib.local_batch_size(mesh, 12)
  assert mesh_lib.local_batch_size(mesh, 16) == 16  # one process holds the whole batch
  assert jax.device_count() == 8


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), batch=st.integers(1, 17), seed=st.integers(0, 2**31 - 1),
       epochs=st.integers(1, 4))
def test_stream_is_concatenated_epoch_permutations(n, batch, seed, epochs):
  """Whatever the sizes, the batches tile a sequence of per-epoch permutations."""
  steps = -(-epochs * n // batch)
  stream = np.concatenate([pipeline.batch_indices(seed, s, batch, n) for s in range(steps)])
  for e in range(epochs):
    np.testing.assert_array_equal(stream[e * n:(e + 1) * n], pipeline.epoch_order(seed, e, n))


def test_windowed_order_permutes_only_within_each_window():
  n, window, batch = 50, 8, 12
  steps = range(12)  # 144 positions: crosses epochs (every 50) and windows (every 8)
  base = np.concatenate([pipeline.batch_indices(3, s, batch, n) for s in steps])
  orders = [np.concatenate([pipeline.windowed_batch_indices(3, r, s, batch, n, window)
                            for s in steps]) for r in range(2)]
  for order in orders:
    for start in range(0, len(base) - window + 1, window):  # the same examples per window
      assert sorted(order[start:start + window]) == sorted(base[start:start + window])
  assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[0], base)
  np.testing.assert_array_equal(  # a window of 1 is the run's own order
      pipeline.windowed_batch_indices(3, 1, 5, batch, n, 1), pipeline.batch_indices(3, 5, batch, n))
