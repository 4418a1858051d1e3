"""Passes over a whole split with the jitted eval, feature and prediction functions (padded,
masked)."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxml.data.pipeline import eval_batches
from jaxml.evaluators import linear_probe as probe_lib
from jaxml.errors import ConfigError
from jaxml.training import replicas


def evaluate(steps, state, split, mesh, batch_size: int) -> dict[str, float]:
  """Means of the eval step's per-batch sums over the split, divided by its `count`; a metric
  `name` with a sum `count/name` of its own (e.g. an accuracy over transitions rather than
  examples) is divided by that instead."""
  totals = None
  for batch in eval_batches(split, mesh, batch_size):
    sums = steps.eval(state, batch)
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  return means(jax.device_get(totals))


def means(totals) -> dict[str, float]:
  """The split's means from the eval step's sums over it (see `evaluate`)."""
  totals = {k: float(v) for k, v in totals.items()}
  count = totals.pop("count")
  counts = {k.removeprefix("count/"): totals.pop(k) for k in list(totals)
            if k.startswith("count/")}
  return {k: v / max(counts.get(k, count), 1e-12) if k in counts else v / count
          for k, v in totals.items()}


def collect(fn, steps, state, split, mesh, batch_size: int):
  """(fn(state, batch) [N, ...], targets [N]) over a whole split, gathered onto every host
  with the padding rows dropped; `fn` is one of the jitted per-example functions of `steps`
  (features, predict) and the targets are the algorithm's `target` field."""
  target = steps.algorithm.target
  if fn is None or target is None:
    raise ConfigError("this algorithm gives no such per-example outputs with targets")
  outputs, labels, masks = [], [], []
  for batch in eval_batches(split, mesh, batch_size):
    for store, value in ((outputs, fn(state, batch)), (labels, batch[target]),
                         (masks, batch["mask"])):
      store.append(np.asarray(multihost_utils.process_allgather(value, tiled=True)))
  keep = np.concatenate(masks) > 0
  return np.concatenate(outputs)[keep], np.concatenate(labels)[keep]


def collect_features(steps, state, split, mesh, batch_size: int):
  """(features [N, D], targets [N]) of a whole split, gathered onto every host."""
  if steps.features is None:
    raise ConfigError("this algorithm gives no features with targets to probe")
  return collect(steps.features, steps, state, split, mesh, batch_size)


def linear_probe(steps, state, dataset, mesh, config) -> dict[str, float]:
  """Fits a linear head on frozen features of the train split, scores it on the test split;
  for replicas (features [N, R, D]), one head per replica: their mean, and each one's under
  `probe/replica<r>/`."""
  train_x, train_y = collect_features(steps, state, dataset.train, mesh, config.eval_batch_size)
  test_x, test_y = collect_features(steps, state, dataset.test, mesh, config.eval_batch_size)
  fit = lambda train, test: {k: float(v) for k, v in probe_lib.evaluate(
      train, train_y, test, test_y, dataset.num_classes,
      l2=float(config.linear_probe.l2)).items()}
  if not steps.algorithm.replicas:
    return {f"probe/{k}": v for k, v in fit(train_x, test_x).items()}
  each = [fit(train_x[:, r], test_x[:, r]) for r in range(steps.algorithm.replicas)]
  return {f"probe/{k}": v for k, v in replicas.mean_and_each(each).items()}
