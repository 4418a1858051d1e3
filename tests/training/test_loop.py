"""The training loop alone, with a one-number model and recording stand-ins for the writer and
the checkpointer: what it logs when, what it saves when, and how it stops.

The runner's own tests (tests/test_runner.py, test_resume.py, test_signals.py) cover the loop
inside whole runs; these pin its schedule and arithmetic on values worked out by hand.
"""

from __future__ import annotations

import signal
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxml.core import mesh as mesh_lib
from jaxml.core.preemption import Interrupted, Signals
from jaxml.data.base import ArraySplit
from jaxml.data.pipeline import batch_indices
from jaxml.errors import NonFiniteError
from jaxml.training import loop

BATCH = 8


class State(NamedTuple):
  step: jax.Array
  total: jax.Array  # sum of every batch's `x` seen so far


def _config(num_steps=6, log_every=2, eval_every=100, checkpoint_every=4, nonfinite="stop",
            prefetch=0):
  return ml_collections.ConfigDict(dict(
      num_steps=num_steps, log_every=log_every, eval_every=eval_every,
      checkpoint_every=checkpoint_every, nonfinite=nonfinite, seed=0, batch_size=BATCH,
      eval_batch_size=BATCH, progress=False, data=dict(prefetch=prefetch),
      few_shot=dict(every=0)))


class _Data:
  """A dataset whose train split's example i has `x` = x[i]."""

  def __init__(self, x):
    self.train = ArraySplit({"x": np.asarray(x, np.float32)})


class _Steps:
  """loss = the batch's mean `x`; the state adds the batch's sum. `on_call(step)` runs on the
  host before each step (to raise a signal at a chosen one)."""

  def __init__(self, on_call=None):
    self.algorithm = types.SimpleNamespace(sampler=None, host_metrics=None)
    self.on_call = on_call
    self.calls = []

    @jax.jit
    def train(state, batch, key):
      del key
      x = batch["x"]
      return (State(state.step + 1, state.total + jnp.sum(x)),
              {"loss": jnp.mean(x), "max": jnp.max(x)})
    self._train = train

  def train(self, state, batch, key):
    step = int(state.step)
    self.calls.append(step)
    if self.on_call is not None:
      self.on_call(step)
    return self._train(state, batch, key)


class _Writer:
  active = False

  def __init__(self):
    self.rows = []

  def write(self, step, metrics):
    self.rows.append((step, dict(metrics)))


class _Checkpointer:
  def __init__(self):
    self.saved, self.waits = [], 0

  def save(self, step, state):
    self.saved.append((step, float(state.total)))

  def wait(self):
    self.waits += 1

  def reached_preemption(self, step):  # multi-host only
    raise AssertionError("single-process runs do not ask")


def _batch_means(dataset, config, steps):
  """Each step's loss as the loop's batches give it, computed on the host."""
  x = dataset.train.arrays["x"]
  return {s: float(np.mean(x[batch_indices(config.seed, s, BATCH, len(x))])) for s in steps}


def _run(config, steps, dataset, writer, checkpointer, signals=None, start=0):
  mesh = mesh_lib.make_mesh()
  # Replicated on the mesh, as the runner makes them: the loop transfers nothing implicitly.
  state, key = jax.device_put((State(jnp.asarray(start, jnp.int32), jnp.asarray(0.0)),
                               jax.random.key(0)), mesh_lib.replicated(mesh))
  return loop.train_loop(config, state, steps, dataset, mesh, key, checkpointer, writer,
                         signals or Signals())


@pytest.mark.parametrize("prefetch", [0, 2])
def test_logs_the_mean_of_each_interval_and_saves_on_its_schedule(prefetch):
  config = _config(prefetch=prefetch)
  dataset = _Data(np.arange(40, dtype=np.float32) ** 2 / 7)
  steps, writer, checkpointer = _Steps(), _Writer(), _Checkpointer()
  state, summary = _run(config, steps, dataset, writer, checkpointer)

  assert steps.calls == list(range(6)) and summary["step"] == 6 and int(state.step) == 6
  losses = _batch_means(dataset, config, range(6))
  # Logged after steps 2, 4, 6 (the step count so far), each the mean of its own interval.
  assert [step for step, _ in writer.rows] == [2, 4, 6]
  for (_, row), interval in zip(writer.rows, [(0, 1), (2, 3), (4, 5)]):
    np.testing.assert_allclose(row["train/loss"], np.mean([losses[s] for s in interval]),
                               rtol=1e-6)
    assert row["perf/steps_per_second"] > 0
  # Saved after step 4 (checkpoint_every) and after the last step, with the state as it was.
  totals = np.cumsum([losses[s] * BATCH for s in range(6)])
  assert [step for step, _ in checkpointer.saved] == [4, 6]
  np.testing.assert_allclose([t for _, t in checkpointer.saved], totals[[3, 5]], rtol=1e-5)
  assert "perf/steps_per_second" in summary and "perf/input_wait_fraction" in summary


def test_a_resumed_loop_runs_only_the_steps_left():
  config = _config(num_steps=6, log_every=3, checkpoint_every=3)
  steps, writer, checkpointer = _Steps(), _Writer(), _Checkpointer()
  _, summary = _run(config, steps, _Data(np.arange(32.0)), writer, checkpointer, start=4)
  assert steps.calls == [4, 5] and summary["step"] == 6
  assert [step for step, _ in writer.rows] == [6]  # steps 4 and 5, logged at the end
  assert [step for step, _ in checkpointer.saved] == [6]


def test_a_non_finite_loss_stops_before_its_checkpoint_and_names_the_step():
  # Checkpoints every 2 steps, logs only at the end: each save must check the steps before it.
  config = _config(num_steps=8, log_every=8, checkpoint_every=2)
  # The example that first appears latest is NaN: the early checkpoints are clean.
  first_seen = {i: min(s for s in range(8) if i in _indices(config, s, 64)) for i in range(64)}
  bad = max(first_seen, key=first_seen.get)
  first_bad = first_seen[bad]
  assert first_bad >= 2
  x = np.ones(64, np.float32)  # one epoch of 8 batches
  x[bad] = np.nan
  steps, writer, checkpointer = _Steps(), _Writer(), _Checkpointer()
  with pytest.raises(NonFiniteError, match=f"train/loss is nan at step {first_bad}; stopping"):
    _run(config, steps, _Data(x), writer, checkpointer)
  # Saved after steps 2, 4, ... only while every step before held finite values.
  clean = [k for k in (2, 4, 6, 8) if k <= first_bad]
  assert [step for step, _ in checkpointer.saved] == clean
  assert [step for step, _ in writer.rows] == clean
  assert steps.calls == list(range(first_bad - first_bad % 2 + 2))  # stopped at the next save


def test_skip_mode_averages_only_the_finite_steps():
  x = np.ones(16, np.float32)
  x[3] = np.nan
  config = _config(num_steps=4, log_every=4, checkpoint_every=4, nonfinite="skip")
  bad = [s for s in range(4) if 3 in _indices(config, s, len(x))]
  assert 0 < len(bad) < 4  # the seed gives both kinds of step in the interval
  steps, writer, checkpointer = _Steps(), _Writer(), _Checkpointer()
  _run(config, steps, _Data(x), writer, checkpointer)
  # The finite steps' loss is 1 and max is 1; the NaN steps are left out of both means.
  [(step, row)] = writer.rows
  assert step == 4 and row["train/loss"] == 1.0 and row["train/max"] == 1.0


def test_all_non_finite_in_skip_mode_logs_nan():
  assert np.isnan(loop._finite_mean([float("nan"), float("inf")]))  # pylint: disable=protected-access
  assert loop._finite_mean([1.0, float("nan"), 3.0]) == 2.0  # pylint: disable=protected-access


def test_a_signal_ends_the_step_under_way_saves_it_and_raises():
  signals = Signals()

  def sigterm_during(step):
    if step == 2:  # arrives while step 2 runs: step 2 still completes
      signals.received = signal.SIGTERM

  config = _config(num_steps=10, log_every=5, checkpoint_every=5)
  steps, writer, checkpointer = _Steps(sigterm_during), _Writer(), _Checkpointer()
  with pytest.raises(Interrupted) as stop:
    _run(config, steps, _Data(np.arange(32.0)), writer, checkpointer, signals)
  assert stop.value.step == 3 and stop.value.signum == signal.SIGTERM
  assert steps.calls == [0, 1, 2]
  assert [step for step, _ in checkpointer.saved] == [3] and checkpointer.waits == 1
  assert [step for step, _ in writer.rows] == [3]  # the partial interval is logged first


def _indices(config, step, n):
  return set(batch_indices(config.seed, step, BATCH, n).tolist())
