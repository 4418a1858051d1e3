"""R replicas of one config trained side by side: one jitted step, vmapped over a replica axis.

Two copies of a model trained on the same data can disagree (irreproducibility; issue 18).
Measuring that needs replicas that differ in exactly one named source of nondeterminism, and
training them one after another costs R runs. `replicate(algorithm, spec, ...)` turns any
algorithm into one whose state holds R replicas on a leading axis and whose every function
runs them all at once (`jax.vmap`), so the runner, the loop, checkpoints and resume treat them
as one run. Config block `replicas` (experiments/base.py):

  count   0 trains one model (no replica axis); R >= 2 trains R replicas.
  vary    what differs between replicas, a comma list of
            init   the initial parameters
            order  the training data order (and, for a sampler such as DP-SGD's Poisson
                   sampling, which examples are drawn)
            keys   the per-step random keys (dropout, augmentation, DP noise)
          or "none" (the replicas' states are then bit-identical: a control; their PD is
          float32 rounding, ~1e-8, as XLA may round the lanes of a batched matmul apart),
          or "" for all three.
          Replica r draws a varied source as the run with seed `seed + r` would, the others as
          the run with `seed`: with every source varied, replica r IS that run.
  window  0: a replica varying `order` has its own full shuffle of the data each epoch. W > 0:
          the replicas share one order (the run's) and each permutes it only within
          consecutive blocks of W examples: moderate shuffling, as in the paper's study.

What changes for a replicated run (`Algorithm.replicas` = R):
- the state is the algorithm's TrainState with every field but `step` stacked on axis 0;
  `replica_state(state, r)` is replica r's own state, usable with the unreplicated functions;
- the global train batch is R * batch_size examples, laid out [batch_size, R] row-major so
  each device's shard holds all R replicas' rows for its share of the batch;
- train metrics are means over the replicas; eval sums are the replicas' mean under the
  algorithm's names, each replica's under `replica<r>/<name>`, and, for an algorithm with
  `predict` giving class probabilities, the prediction difference between the replicas
  (mean over pairs): `pd/relative` (2 classes: the paper's relative PD of p(class 1)),
  `pd/l1` and `pd/top1` (jaxml/evaluators/reproducibility.py);
- per-example outputs (`features`, `predict`) are [B, R, ...];
- `final_metrics` is computed per replica: the mean under its names, each under
  `replica<r>/<name>`.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.algos.base import Algorithm, BatchSampler
from jaxml.core import checks
from jaxml.core import rng
from jaxml.core.state import TrainState
from jaxml.data.pipeline import batch_indices, windowed_batch_indices
from jaxml.errors import ConfigError
from jaxml.evaluators import reproducibility

SOURCES = ("init", "order", "keys")


class Replicas(NamedTuple):
  """A parsed `replicas` block: `count` (0: off), the varied `sources`, the shuffle `window`."""

  count: int
  sources: frozenset[str]
  window: int

  @property
  def enabled(self) -> bool:
    return self.count > 0


OFF = Replicas(0, frozenset(), 0)


def spec(config) -> Replicas:
  """The config's `replicas` block, checked (a config from before replicas existed: off)."""
  block = config.get("replicas")
  if block is None:
    return OFF
  checks.check_values(config, {"replicas.count": checks.count(0),
                               "replicas.window": checks.count(0)})
  return parse(int(block.count), str(block.vary), int(block.window))


def parse(count: int, vary: str, window: int) -> Replicas:
  """Replicas of `count` (0: off) varying `vary` (see the module docstring), or ConfigError."""
  if count == 1:
    raise ConfigError("replicas.count=1: use 0 to train one model, or 2 or more to train "
                      "replicas side by side")
  names = [v.strip() for v in vary.split(",")] if vary.strip() else list(SOURCES)
  if names == ["none"]:
    names = []
  unknown = [n for n in names if n not in SOURCES]
  if unknown or len(set(names)) != len(names):
    raise ConfigError(f"replicas.vary={vary!r} must be 'none', '' (all) or a comma list of "
                      f"distinct {', '.join(SOURCES)}")
  if window and "order" not in names:
    raise ConfigError(f"replicas.window={window} permutes the data order within windows: it "
                      "needs 'order' in replicas.vary")
  return Replicas(count, frozenset(names), window) if count else OFF


def replica_seed(seed: int, replica: int, source: str, replicas: Replicas) -> int:
  """The seed replica `replica` draws `source` from: `seed + replica` if it varies."""
  return seed + replica if source in replicas.sources else seed


def replica_state(state: TrainState, replica: int) -> TrainState:
  """Replica `replica`'s own TrainState, out of a replicated one."""
  take = lambda tree: jax.tree.map(lambda x: x[replica], tree)
  return state.replace(params=take(state.params), opt_state=take(state.opt_state),
                       model_state=take(state.model_state), extra=take(state.extra))


def _state_axes(state: TrainState) -> TrainState:
  """vmap axes of a replicated state: 0 everywhere but the shared step counter."""
  return state.replace(step=None, params=0, opt_state=0, model_state=0, extra=0)


def replicate(algorithm: Algorithm, replicas: Replicas, *, seed: int, batch_size: int,
              num_train: int) -> Algorithm:
  """`algorithm` with R replicas side by side (see the module docstring); unchanged when
  `replicas` is off. `seed`, `batch_size` and `num_train` are the run's."""
  if not replicas.enabled:
    return algorithm
  count = replicas.count
  if replicas.window and algorithm.sampler is not None:
    raise ConfigError(f"replicas.window={replicas.window}: this run draws its batches with its "
                      "own sampler (e.g. DP-SGD's Poisson sampling), which has no order to "
                      "permute within windows; use replicas.window=0")
  seeds = lambda source: [replica_seed(seed, r, source, replicas) for r in range(count)]

  def init(key):
    # Replica 0 is the run's own; the others draw from their seed if `init` varies.
    keys = [key] + [rng.run_keys(s)[0] if s != seed else key for s in seeds("init")[1:]]
    states = jax.vmap(algorithm.init)(jnp.stack(keys))
    return states.replace(step=states.step[0])

  def train_step(state, batch, key):
    keys = jnp.stack([key] + [rng.step_key(rng.run_keys(s)[1], state.step) if s != seed
                              else key for s in seeds("keys")[1:]])
    rows = jax.tree.map(lambda x: x.reshape(x.shape[0] // count, count, *x.shape[1:]), batch)
    axes = _state_axes(state)
    new_state, metrics = jax.vmap(algorithm.train_step, in_axes=(axes, 1, 0),
                                  out_axes=(axes, 0))(state, rows, keys)
    return new_state, {k: jnp.mean(v) for k, v in metrics.items()}

  def eval_step(state, batch):
    sums = jax.vmap(algorithm.eval_step, in_axes=(_state_axes(state), None))(state, batch)
    out = {k: v[0] if k == "count" or k.startswith("count/") else jnp.mean(v, axis=0)
           for k, v in sums.items()}
    for r in range(count):
      out.update({_per_replica(k, r): v[r] for k, v in sums.items() if k != "count"})
    if algorithm.predict is not None:
      out.update(_pd_sums(per_replica(algorithm.predict)(state, batch), batch["mask"]))
    return out

  def per_replica(fn):
    if fn is None:
      return None
    return lambda state, batch: jax.vmap(fn, in_axes=(_state_axes(state), None))(state, batch)

  def per_example(fn):  # [R, B, ...] -> [B, R, ...]: sharded on the batch axis as before
    vmapped = per_replica(fn)
    return None if fn is None else lambda s, b: jnp.moveaxis(vmapped(s, b), 0, 1)

  final_metrics = None
  if algorithm.final_metrics is not None:
    final_metrics = lambda state: mean_and_each(
        [algorithm.final_metrics(replica_state(state, r)) for r in range(count)])

  headline = algorithm.headline
  if algorithm.predict is not None:
    headline += ("eval/pd/relative", "eval/pd/l1")  # those a run computes are printed
  return dataclasses.replace(
      algorithm, init=init, train_step=train_step, eval_step=eval_step,
      features=per_example(algorithm.features), predict=per_example(algorithm.predict),
      sampler=_sampler(algorithm.sampler, replicas, batch_size, num_train),
      final_metrics=final_metrics, headline=headline, replicas=count)


def _per_replica(name: str, r: int) -> str:
  return (f"count/replica{r}/{name.removeprefix('count/')}" if name.startswith("count/")
          else f"replica{r}/{name}")


def _pd_sums(probs: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  """Sums over the batch's valid rows of the replicas' prediction differences, averaged over
  replica pairs; probs [R, B, C] class probabilities. Nothing for other outputs."""
  if probs.ndim != 3:
    return {}
  valid = jnp.sum(mask > 0)
  pairs = list(itertools.combinations(range(probs.shape[0]), 2))
  sums = {}
  metrics = {"l1": reproducibility.l1_pd, "top1": reproducibility.top1_disagreement}
  if probs.shape[-1] == 2:
    metrics["relative"] = lambda a, b, m: reproducibility.relative_pd(a[:, 1], b[:, 1], m)
  for name, metric in metrics.items():
    mean = sum(metric(probs[i], probs[j], mask) for i, j in pairs) / len(pairs)
    sums[f"pd/{name}"] = jnp.where(valid > 0, mean * valid, 0.0)  # a mean times its rows
  return sums


def mean_and_each(rows: list[dict[str, float]]) -> dict[str, float]:
  """Replicas' host metrics: each name's mean, and replica r's value as `replica<r>/<name>`."""
  out = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
  for r, row in enumerate(rows):
    out.update({f"replica{r}/{k}": v for k, v in row.items()})
  return out


def _sampler(sampler: BatchSampler | None, replicas: Replicas, batch_size: int,
             num_train: int) -> BatchSampler:
  """The R replicas' batches at a step, interleaved [batch_size, R]."""
  count = replicas.count

  def one(seed, r, step):
    data_seed = replica_seed(seed, r, "order", replicas)
    if sampler is not None:
      return sampler.sample(data_seed, step)
    if replicas.window:
      return windowed_batch_indices(seed, r, step, batch_size, num_train, replicas.window), None
    return batch_indices(data_seed, step, batch_size, num_train), None

  def sample(seed, step):
    parts = [one(seed, r, step) for r in range(count)]
    indices = np.stack([p[0] for p in parts], axis=1).reshape(-1)
    masks = None if parts[0][1] is None else np.stack([p[1] for p in parts], 1).reshape(-1)
    return indices, masks

  size = batch_size if sampler is None else sampler.batch_size
  return BatchSampler(sample=sample, batch_size=size * count)
