"""The one batching pipeline: index arithmetic on the host, global sharded arrays out.

The training order is a pure function of (seed, step): the example at position p of the
infinite stream is `permutation(seed, epoch=p // n)[p % n]`. Nothing about the order lives
in an iterator's state, so a run restarted at step s reads exactly what it would have read.
Each host reads only its own slice of every global batch.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np

from jaxml.core import mesh as mesh_lib
from jaxml.data.base import Split

log = logging.getLogger(__name__)


# Two epochs (a batch may straddle them) for each of up to 8 replicas varying the order
# (jaxml/training/replicas.py), each seed its own order; fewer would recompute every step.
@functools.lru_cache(maxsize=16)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  order = np.random.default_rng([seed, epoch]).permutation(n)
  order.setflags(write=False)
  return order


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
  """Indices of the global training batch at `step`."""
  return stream_indices(seed, np.arange(step * batch_size, (step + 1) * batch_size), n)


def stream_indices(seed: int, positions: np.ndarray, n: int) -> np.ndarray:
  """The examples at `positions` of the infinite stream of epochs in `seed`'s order."""
  positions = positions.astype(np.int64)
  epochs = positions // n
  out = np.empty(len(positions), np.int64)
  for epoch in np.unique(epochs):
    here = epochs == epoch
    out[here] = epoch_order(seed, int(epoch), n)[positions[here] % n]
  return out


def windowed_batch_indices(seed: int, replica: int, step: int, batch_size: int, n: int,
                           window: int) -> np.ndarray:
  """`batch_indices` of the stream whose positions are permuted within consecutive blocks of
  `window` (a permutation per (seed, replica, block)): replicas of one run that share its
  order and differ only within each window, i.e. moderate shuffling."""
  positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
  blocks = positions // window
  moved = np.empty_like(positions)
  for block in np.unique(blocks):
    here = blocks == block
    perm = np.random.default_rng([seed, replica, int(block)]).permutation(window)
    moved[here] = block * window + perm[positions[here] % window]
  return stream_indices(seed, moved, n)


def host_slice(indices: np.ndarray) -> np.ndarray:
  """This process's contiguous share of a global batch (devices are ordered by process)."""
  per_host = len(indices) // jax.process_count()
  start = jax.process_index() * per_host
  return indices[start:start + per_host]


def train_batch(split: Split, mesh, seed: int, step: int, batch_size: int,
                sampler=None) -> dict:
  """The global training batch at `step`.

  `sampler` (a `jaxml.algos.base.BatchSampler`) replaces the default epoch order of
  `batch_size` examples (e.g. Poisson sampling for DP-SGD, whose batches are padded to the
  sampler's fixed size with a `mask`).
  """
  if sampler is None:
    indices, mask = batch_indices(seed, step, batch_size, len(split)), None
  else:
    indices, mask = sampler.sample(seed, step)
  local = split.read(host_slice(indices))
  if mask is not None:
    local["mask"] = host_slice(mask).astype(np.float32)
  return mesh_lib.to_global(mesh, local, len(indices))


def eval_batches(split: Split, mesh, batch_size: int) -> Iterator[dict]:
  """The whole split once, in order, in global batches padded with a `mask` field.

  The tail is padded to a full batch (padding rows repeat example 0 and have mask 0), so
  the eval step compiles once whatever the split size.
  """
  n = len(split)
  for start in range(0, n, batch_size):
    positions = np.arange(start, start + batch_size)
    valid = positions < n
    local_rows = host_slice(np.where(valid, positions, 0))
    local = split.read(local_rows)
    local["mask"] = host_slice(valid).astype(np.float32)
    yield mesh_lib.to_global(mesh, local, batch_size)


class Prefetcher:
  """The batches for steps [start, stop), in order, built where they cost the consumer least.

  `depth=0` builds each batch in the caller's thread: with JAX's asynchronous dispatch that
  still overlaps input with the previous step's device work where the device runs ahead.
  `depth>0` first builds `probe` batches inline, timing each against the consumer's time
  between two batches (its step). Where a batch costs more than `thread_above` (half) of a
  step, a background thread builds the rest, `depth` ahead, hiding them behind the steps; where
  it costs less they stay inline, where asynchronous dispatch already overlaps them with the
  device's work: in-memory arrays and a ~1.5 ms step on a 2-core CPU (batches at ~25% of a
  step) measured faster inline (the thread's GIL handoffs and core contention cost more than
  the building it hides; benchmarks/README.md, runner overhead). The batch
  for a step is `make_batch(step)` either way, so the order is the same. Where the device
  runs ahead (accelerators, larger CPU steps) the consumer waits for each probed step
  (`probing`), so a step is weighed by its compute, not by its dispatch.
  `wait_seconds` accumulates the time the consumer spent on or blocked on input, which is
  what the runner reports as the input-bound share of step time.
  """

  def __init__(self, make_batch: Callable[[int], dict], start: int, stop: int, depth: int = 2,
               *, probe: int = 8, thread_above: float = 0.5):
    self._make_batch = make_batch
    self._depth, self._stop_step, self._thread_above = depth, stop, thread_above
    self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    self._stop = threading.Event()
    self.wait_seconds = 0.0
    self._thread = None
    self._probing = probe if depth > 0 else 0  # batches still to build inline and time
    self._builds: list[float] = []  # seconds to build each probed batch
    self._steps: list[float] = []  # the consumer's seconds between two probed batches
    self._handed = None  # when the last inline batch was handed over

  @property
  def probing(self) -> bool:
    """Batches are still being timed: the consumer should finish each step before asking for
    the next batch (`jax.block_until_ready`), so that the time between two batches is the
    step's compute, not only its asynchronous dispatch."""
    return self._probing > 0

  @property
  def threaded(self) -> bool:
    """Whether a background thread builds the batches (after the probe, if it chose so)."""
    return self._thread is not None

  def _work(self, start: int, stop: int) -> None:
    try:
      for step in range(start, stop):
        batch = self._make_batch(step)
        while not self._stop.is_set():
          try:
            self._queue.put((step, batch, None), timeout=0.1)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
    except BaseException as err:  # pylint: disable=broad-except  # re-raised in the consumer
      self._queue.put((None, None, err))

  def next(self, step: int) -> dict:
    began = time.perf_counter()
    if self._thread is None:
      batch = self._make_batch(step)
      handed = time.perf_counter()
      self.wait_seconds += handed - began
      if self._probing:
        self._probe(step, began, handed)
      self._handed = handed
      return batch
    got, batch, err = self._queue.get()
    self.wait_seconds += time.perf_counter() - began
    if err is not None:
      raise err
    assert got == step, f"prefetcher out of order: wanted step {step}, got {got}"
    return batch

  def _probe(self, step: int, began: float, handed: float) -> None:
    """Times the batch just built (and the step before it); after the last probed batch,
    starts the thread for the steps after `step` if batches cost enough to hide."""
    self._builds.append(handed - began)
    if self._handed is not None:
      self._steps.append(began - self._handed)
    self._probing -= 1
    if self._probing:
      return
    # Medians: the first step compiles, and one slow batch (a cold cache) is not the rule.
    build = float(np.median(self._builds))
    per_step = float(np.median(self._steps)) if self._steps else 0.0
    if build > self._thread_above * per_step and step + 1 < self._stop_step:
      self._thread = threading.Thread(target=self._work, args=(step + 1, self._stop_step),
                                      daemon=True)
      self._thread.start()
    log.info("input: a batch takes %.3g ms, a step %.3g ms: building batches %s", 1e3 * build,
             1e3 * per_step, f"{self._depth} ahead on a thread" if self._thread else "inline")

  def close(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
