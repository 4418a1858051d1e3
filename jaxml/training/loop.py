"""The training loop: steps, periodic logging/eval/checkpoints, signals, non-finite stop.

Per-step metrics stay on device until a log step, so the host never waits on the device
mid-interval; at a log step (and before every checkpoint) they are fetched, checked for
NaN/Inf, averaged and written.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxml.core.preemption import Interrupted, Signals
from jaxml.data.pipeline import Prefetcher, train_batch
from jaxml.errors import NonFiniteError
from jaxml.training import few_shot
from jaxml.training.evaluate import evaluate_test


class _Pending:
  """Per-step metrics not yet written, and the running wall-clock/input-wait accounting."""

  def __init__(self, nonfinite: str):
    self.rows: list[tuple[int, dict]] = []
    self.nonfinite = nonfinite

  def add(self, step: int, metrics) -> None:
    self.rows.append((step, metrics))

  def flush(self) -> dict[str, float]:
    """Fetches, checks and averages the pending metrics (empty dict if none)."""
    if not self.rows:
      return {}
    fetched = jax.device_get([metrics for _, metrics in self.rows])
    rows = [(step, {k: float(v) for k, v in metrics.items()})
            for (step, _), metrics in zip(self.rows, fetched)]
    self.rows = []
    if self.nonfinite == "stop":
      for step, metrics in rows:
        bad = [k for k, v in metrics.items() if not np.isfinite(v)]
        if bad:
          raise NonFiniteError(
              f"train/{bad[0]} is {metrics[bad[0]]} at step {step}; stopping without saving. "
              "Lower the learning rate, or set --config.nonfinite=skip to skip such updates")
    # In skip mode a skipped step's loss is NaN by definition; average the steps that counted.
    return {f"train/{k}": _finite_mean([m[k] for _, m in rows]) for k in rows[0][1]}


class _Clock:
  """Steady-state throughput (from the end of the compiling first step) and input wait."""

  def __init__(self, start_step: int, prefetch: Prefetcher):
    self.prefetch = prefetch
    self.began = None  # (time, step, input-wait seconds) once the first step finished
    self.last = (time.perf_counter(), start_step)

  def first_step_done(self, step: int, state) -> None:
    jax.block_until_ready(state)
    self.began = (time.perf_counter(), step, self.prefetch.wait_seconds)

  def interval_rate(self, step: int) -> float:
    """Steps per second since the previous call."""
    now = time.perf_counter()
    (then, then_step), self.last = self.last, (now, step)
    return (step - then_step) / max(now - then, 1e-9)

  def summary(self, step: int) -> dict[str, float]:
    if self.began is None or step <= self.began[1]:
      return {}
    t0, step0, wait0 = self.began
    seconds = time.perf_counter() - t0
    return {"perf/steps_per_second": (step - step0) / seconds,
            "perf/input_wait_fraction": (self.prefetch.wait_seconds - wait0) / seconds}


def _finite_mean(values: list[float]) -> float:
  finite = [v for v in values if np.isfinite(v)]
  return float(np.mean(finite)) if finite else float("nan")


def train_loop(config, state, steps, dataset, mesh, base_key, checkpointer, writer,
               signals: Signals, probes=()):
  """Runs steps [state.step, config.num_steps); returns (state, summary). `probes`: the
  few-shot tasks evaluated every `few_shot.every` steps (`jaxml/training/few_shot.py`).

  A SIGTERM or SIGINT (`signals`) ends the step under way; the state is then checkpointed and
  `Interrupted` raised with the step, once the save is committed.
  """
  start, stop = int(state.step), int(config.num_steps)
  pending = _Pending(config.nonfinite)
  sampler = steps.algorithm.sampler
  prefetch = Prefetcher(lambda s: train_batch(dataset.train, mesh, config.seed, s,
                                              config.batch_size, sampler), start, stop,
                        depth=config.data.prefetch)
  host_metrics = steps.algorithm.host_metrics
  bar = tqdm(total=stop, initial=start, unit="step", dynamic_ncols=True,
             disable=not (writer.active and config.progress))
  clock = _Clock(start, prefetch)
  # The steps after which something besides training happens (the last one too): on the other
  # steps the loop does no more than it must.
  periods = [config.log_every, config.eval_every, config.checkpoint_every]
  if probes and config.few_shot.every:
    periods.append(config.few_shot.every)
  step = start
  try:
    with signals.deferred(), jax.transfer_guard("disallow"):
      while step < stop:
        batch = prefetch.next(step)
        state, metrics = steps.train(state, batch, base_key)
        if prefetch.probing:  # the input pipeline weighs batches against the step's compute
          jax.block_until_ready(metrics)
        pending.add(step, metrics)
        step += 1
        bar.update(1)
        if clock.began is None:
          clock.first_step_done(step, state)
        stop_for = signals.requested(step, checkpointer)  # every step: multi-host, in step
        if not (stop_for or step == stop or any(step % every == 0 for every in periods)):
          continue
        with jax.transfer_guard("allow"):
          if step % config.log_every == 0 or step == stop:
            _log(step, pending, writer, bar, clock, host_metrics)
          if step % config.eval_every == 0 and step != stop:
            writer.write(step, evaluate_test(steps, state, dataset, mesh,
                                             config.eval_batch_size))
          if probes and config.few_shot.every and step % config.few_shot.every == 0 and (
              step != stop):
            writer.write(step, few_shot.evaluate(steps, state, probes, mesh, config))
          if step % config.checkpoint_every == 0 or step == stop or stop_for:
            _log(step, pending, writer, bar, clock, host_metrics)  # no NaN checkpoint
            checkpointer.save(step, state)
          if stop_for:
            checkpointer.wait()
            raise Interrupted(stop_for, step)
  finally:
    prefetch.close()
    bar.close()
  if signals.received is not None:  # came after the last step's look: that step is saved
    raise Interrupted(signals.received, step)
  return state, {"step": step, **clock.summary(step)}


def _log(step, pending, writer, bar, clock, host_metrics=None) -> None:
  metrics = pending.flush()
  if not metrics:
    return
  metrics["perf/steps_per_second"] = clock.interval_rate(step)
  if host_metrics is not None:
    metrics.update(host_metrics(step))
  writer.write(step, metrics)
  if "train/loss" in metrics:
    bar.set_postfix(loss=f"{metrics['train/loss']:.4g}", refresh=False)
