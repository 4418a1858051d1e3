"""Passes over a whole split with the jitted eval, feature and prediction functions (padded,
masked)."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxml.data.pipeline import eval_batches
from jaxml.evaluators import diarization
from jaxml.evaluators import groups as groups_lib
from jaxml.evaluators import linear_probe as probe_lib
from jaxml.evaluators import ranking
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


def evaluate_test(steps, state, dataset, mesh, batch_size: int, *,
                  final: bool = False) -> dict[str, float]:
  """The test split's `eval/` metrics, what the loop logs at every eval and the run ends
  with: `evaluate`'s means and, for data with groups, `group_metrics` (each group's own
  accuracy only in the `final` one: single values, not curves)."""
  metrics = {**evaluate(steps, state, dataset.test, mesh, batch_size),
             **group_metrics(steps, state, dataset, mesh, batch_size, per_group=final),
             **ranking_metrics(steps, state, dataset, mesh, batch_size, per_label=final),
             **partition_metrics(steps, state, dataset, mesh, batch_size)}
  return {f"eval/{k}": v for k, v in metrics.items()}


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
  got = gather(split, mesh, batch_size, lambda b: {"outputs": fn(state, b), "target": b[target]})
  return got["outputs"], got["target"]


def gather(split, mesh, batch_size: int, take) -> dict[str, np.ndarray]:
  """{name: [N, ...]} of `take(batch)` over a whole split, gathered onto every host, with
  the padding rows dropped."""
  parts: dict[str, list[np.ndarray]] = {}
  for batch in eval_batches(split, mesh, batch_size):
    for name, value in {**take(batch), "mask": batch["mask"]}.items():
      parts.setdefault(name, []).append(
          np.asarray(multihost_utils.process_allgather(value, tiled=True)))
  keep = np.concatenate(parts.pop("mask")) > 0
  return {name: np.concatenate(values)[keep] for name, values in parts.items()}


def group_metrics(steps, state, dataset, mesh, batch_size: int, *,
                  per_group: bool = False) -> dict[str, float]:
  """Accuracy by group of the algorithm's predictions on the test split, for each group
  field of the data (`Task.groups`), from one gathered pass (`jaxml/evaluators/groups.py`):
  `<field>/worst_group/accuracy`, `<field>/mean_group/accuracy` and
  `<field>/groups_absent`, and with `per_group` each group's `<field>/<category>/count` and
  (if present) `.../accuracy`. Replicas: their mean, and each one's under `replica<r>/`.
  Empty when the data has no groups or the algorithm no `predict` with a `target`."""
  names, target = dataset.task.groups, steps.algorithm.target
  if not names or steps.predict is None or target is None:
    return {}
  got = gather(dataset.test, mesh, batch_size, lambda b: {
      "outputs": steps.predict(state, b), "target": b[target], **{n: b[n] for n in names}})
  count = steps.algorithm.replicas
  outputs = [got["outputs"][:, r] for r in range(count)] if count else [got["outputs"]]
  rows = []
  for predictions in outputs:
    row = {}
    for name in names:
      categories = dataset.fields[name].categories
      report = groups_lib.group_accuracy(predictions, got["target"], got[name],
                                         len(categories) or None)
      row.update({f"{name}/{k}": v for k, v in groups_lib.summary(
          report, categories, per_group=per_group).items()})
    rows.append(row)
  return replicas.mean_and_each(rows) if count else rows[0]


def ranking_metrics(steps, state, dataset, mesh, batch_size: int, *,
                    per_label: bool = False) -> dict[str, float]:
  """Ranking metrics of the algorithm's predictions on the test split, from one gathered pass
  (`jaxml/evaluators/ranking.py`), for the tasks whose scores rank:

  - multi-label (predicted probabilities): `auroc/macro`, `auprc/macro` (means over the
    labels with both classes in the split), `auroc/micro`, `auprc/micro` and
    `labels_scored`, and with `per_label` each label's `label/<name>/auroc` and `.../auprc`
    (names from the target's categories, else its index);
  - binary classification: `auroc` and `auprc` of class 1, scored by the prediction's
    class-1 minus class-0 output (monotone in P(class 1) whether `predict` gives
    probabilities, log-probabilities or logits); NaN if a prediction is not finite.

  Replicas: their mean, and each one's under `replica<r>/`. Empty for other tasks and when
  the algorithm has no `predict` with a `target`."""
  target, task = steps.algorithm.target, dataset.task
  binary = task.kind == "classification" and task.num_classes == 2
  if (task.kind != "multilabel" and not binary) or steps.predict is None or target is None:
    return {}
  scores, labels = collect(steps.predict, steps, state, dataset.test, mesh, batch_size)
  count = steps.algorithm.replicas
  rows = []
  for each in ([scores[:, r] for r in range(count)] if count else [scores]):
    if binary:
      margin = np.asarray(each[..., 1], np.float64) - np.asarray(each[..., 0], np.float64)
      if not np.all(np.isfinite(margin)):  # a diverged run: NaN metrics, not a failed eval
        rows.append({"auroc": float("nan"), "auprc": float("nan")})
        continue
      rows.append({"auroc": ranking.auroc(margin, labels),
                   "auprc": ranking.average_precision(margin, labels)})
      continue
    row = ranking.multilabel_summary(each, labels)
    if per_label:
      names = dataset.fields[target].categories or tuple(map(str, range(labels.shape[-1])))
      for entry in ranking.per_label(each, labels, names):
        row.update({f"label/{entry['name']}/{metric}": entry[metric]
                    for metric in ("auroc", "auprc")})
    rows.append(row)
  return replicas.mean_and_each(rows) if count else rows[0]


def partition_metrics(steps, state, dataset, mesh, batch_size: int) -> dict[str, float]:
  """A partition task's predicted label sequences scored against the truth over the test
  split, from one gathered pass (`jaxml/evaluators/diarization.py`): `accuracy` (each
  sequence's Hungarian-matched accuracy, averaged over sequences), `der/mean` (the diarization
  error rate, averaged over sequences) and `der/weighted` (total error over total speech, as
  pyannote aggregates), each step one unit of time. Replicas: their mean, and each one's
  under `replica<r>/`. Empty unless the task is a partition and the algorithm has a
  `predict` with a `target`."""
  target, task = steps.algorithm.target, dataset.task
  if task.kind != "partition" or steps.predict is None or target is None:
    return {}
  got = gather(dataset.test, mesh, batch_size,
                lambda b: {"labels": steps.predict(state, b), "target": b[target],
                           "steps": b[task.step_mask]})
  count = steps.algorithm.replicas
  rows = []
  for labels in ([got["labels"][:, r] for r in range(count)] if count else [got["labels"]]):
    scores = diarization.batch_metrics(labels, got["target"], mask=got["steps"] > 0)
    rows.append({"accuracy": scores["accuracy/mean"], "der/mean": scores["der/mean"],
                 "der/weighted": scores["der/weighted"]})
  return replicas.mean_and_each(rows) if count else rows[0]


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
