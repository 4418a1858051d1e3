"""The one contract between the runner and an algorithm.

Each `jaxml/algos/<name>.py` exposes

    build(config, dataset) -> Algorithm

which checks the whole config against the data (raising `jaxml.errors.ConfigError` with one
line that names the key, before anything compiles), computes whatever the algorithm's pieces
share (a DP plan, a table of valid actions, a jitted policy) once, and returns the pure
functions below, closed over that set-up. The runner imports `jaxml.algos.<config.algo>` by
name, jits the functions onto the mesh (`jaxml.training.steps`), runs the loop and writes the
workdir; nothing else about an algorithm is looked up.

Functions and what the runner does with them:

- `init(key) -> TrainState`: traced under `jax.eval_shape` to derive shardings, then jitted
  so the state is created already placed. The state is a pytree (`jaxml.core.state`).
- `train_step(state, batch, key) -> (state, metrics)`: pure; jitted with the state donated.
  `key` is already `fold_in(base_key, state.step)`; split it into named streams with
  `jaxml.core.rng.stream`. `metrics` are scalars, averaged over a logging interval.
- `eval_step(state, batch) -> sums`: per-batch *sums* over the valid rows (`batch["mask"]`
  is 0 on padding) and `"count"`, the number of valid rows; a metric `m` with its own
  denominator returns `"count/m"` as well. Means are taken over the whole split.
- `features(state, batch) -> [B, D]` (optional): frozen features for the linear probe and
  `jaxml.trained`; with `target`, the batch field holding the labels they are probed on.
- `predict(state, batch) -> [B, ...]` (optional): the model's outputs for analysis after
  training, e.g. class probabilities [B, C] for post-processing a score into a fair
  classifier (`jaxml.trained.TrainedRun.predict`, `jaxml.fairness`). Eval mode, no rng.
- `sampler` (optional): a `BatchSampler` replacing the default epoch order, e.g. Poisson
  sampling for DP-SGD, whose padded batches carry a `mask`.
- `host_metrics(step) -> {name: float}` (optional): host-side numbers logged with every
  train row (e.g. privacy spent so far). Never called inside jitted code.
- `final_metrics(state) -> {name: float}` (optional): computed once after training, on the
  host (e.g. play in the environments); logged as the last row and kept in the summary.
- `headline`: the metric names the launcher prints at the end of a run.
- `record`: {name: str, bool, int or float}, host-side values the run was built with that its
  config does not state, so that the workdir alone says what the run used (e.g. DP-SGD's
  calibrated noise multiplier, sampling rate, δ, accountant and final ε). The runner writes
  them into artifacts/summary.json under `record` and, beside the config's values, as the
  run's TensorBoard hparams (`MetricWriter.write_hparams`).
- `replicas`: set by the runner, never by an algorithm: R >= 2 when the config's `replicas`
  block wraps the algorithm to train R replicas side by side (`jaxml.training.replicas`,
  which says what then changes: a replica axis on the state, [B, R, ...] per-example
  outputs); 0 otherwise.

Fields of the batch are the data source's (`dataset.fields`); an algorithm names the ones it
reads (its inputs and `target`), so the runner and the evaluators never spell a field.

Each module also exposes `check_config(config)`: the checks of its config that need no data
(value ranges, choices, relations between keys). The runner calls it before the dataset is
built or loaded, so a typo is refused in seconds even where building the data takes minutes;
`build` calls it again and adds the checks against the data. The rules of `jaxml.core.checks`
(`in_range`, `one_of`, `flag`, `each`) are the one way to state what a value must be, so every
bad value is reported alike: `<dotted.key>=<value> <what it must be>`.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from collections.abc import Callable, Mapping

import jax
import numpy as np

Batch = Mapping[str, jax.Array]
Metrics = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class BatchSampler:
  """`sample(seed, step) -> (indices [batch_size], mask [batch_size] or None)`: the global
  batch at `step`, a pure function of (seed, step) so that resume stays exact."""

  sample: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]]
  batch_size: int


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """An algorithm's pure functions, built once per run by `<module>.build(config, dataset)`
  (see the module docstring for what each one must do)."""

  init: Callable[[jax.Array], Any]
  train_step: Callable[[Any, Batch, jax.Array], tuple[Any, Metrics]]
  eval_step: Callable[[Any, Batch], Metrics]
  headline: tuple[str, ...] = ("eval/loss",)
  features: Callable[[Any, Batch], jax.Array] | None = None
  predict: Callable[[Any, Batch], jax.Array] | None = None
  target: str | None = None
  sampler: BatchSampler | None = None
  host_metrics: Callable[[int], dict[str, float]] | None = None
  final_metrics: Callable[[Any], dict[str, float]] | None = None
  record: Mapping[str, str | bool | int | float] = dataclasses.field(default_factory=dict)
  replicas: int = 0
