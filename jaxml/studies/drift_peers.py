"""The peer outside jaxml for concept drift (issue 20): river's online learners, prequential.

A river classifier sees the same time-stamped stream a jaxml drift run trains on
(`jaxml.data` sources `drifting_mixture`, `drifting_digits`, `periods`; conventions in
jaxml/data/drift.py): the training periods in temporal order, each period's examples in an
order shuffled by `seed`, one example at a time, test-then-train (predict it, score the
prediction, then learn its label). On the test periods (the rows of `Dataset.test`, exactly the
examples jaxml's evaluator scores) two protocols are measured:

  eval_fix     the learner frozen at the end of training (a copy that is never taught again)
               predicts every test example; accuracy per test period. The protocol of jaxml's
               runs (train on the past, score each future period), so comparable to their
               `eval/period/<p>/accuracy` and its mean over test periods.
  prequential  test-then-train continued through the test periods, in temporal order: the
               learner is taught each test label right after predicting it. It gets label
               feedback that jaxml's runs never do, so it is a reference (how much tracking the
               drift with labels is worth), not a competitor under the same protocol. On
               `drifting_digits` it also gains from memory: a test period's digits are drawn
               with replacement from one pool of 360, so it is taught digits it meets again.

A learner is anything with `predict_one(x: dict) -> label | None` and `learn_one(x: dict, y)`,
made fresh by a factory `(num_classes, seed) -> learner`; `LEARNERS` names river's. Features go
in as `{i: float}` over the flattened input (an 8x8 digit is 64 features). A prediction of
None (a learner that has seen no label yet) counts as wrong. `logistic` is linear, so near
chance on `drifting_mixture` with or without drift (each cluster's boundary is a line through
its own centre: no one line fits them all); `knn` and the trees are the peers that can fit it.

Measured on the default streams, seed 0 (mean eval_fix / mean prequential accuracy over the 5
test periods, seconds for the whole peer on one CPU core):

  learner              drifting_mixture (6000 + 2000)   drifting_digits (2000 + 1000, 10 classes)
  logistic             0.503 / 0.493   0.1 s            0.811 / 0.961    1.3 s
  knn                  0.857 / 0.943   0.9 s            0.802 / 0.986    6.1 s
  hoeffding_adaptive   0.726 / 0.761   0.5 s            0.390 / 0.570    7.2 s
  arf                  0.832 / 0.914   6.6 s            0.624 / 0.908   18.7 s

river is optional and imported only when one of its learners is asked for: without it the
error names `INSTALL`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable

import numpy as np

from jaxml.algos.classifier import fields_of
from jaxml.data import load_dataset
from jaxml.errors import ConfigError

INSTALL = "pip install 'river>=0.26,<0.27'"  # as the test and bench extras pin it
Factory = Callable[[int, int], object]  # (num_classes, seed) -> a fresh online learner


def _river(what: str):
  """The river modules `what` needs, or one ConfigError naming the install command."""
  try:
    # pylint: disable=import-outside-toplevel  # optional, and slow to import
    from river import forest, linear_model, neighbors, preprocessing, tree
  except ImportError:
    raise ConfigError(f"the drift peer {what!r} needs river: {INSTALL}") from None
  return forest, linear_model, neighbors, preprocessing, tree


def require_river() -> None:
  """Nothing if river imports; else the ConfigError naming the install command (a study's
  config check, before anything trains)."""
  _river("river")


def logistic(num_classes: int, seed: int):
  """Standardised features into a linear model by SGD: logistic regression for 2 classes,
  softmax regression for more (one model, not one per class). Deterministic (`seed` unused)."""
  del seed
  _, linear_model, _, preprocessing, _ = _river("logistic")
  model = (linear_model.LogisticRegression() if num_classes == 2
           else linear_model.SoftmaxRegression())
  return preprocessing.StandardScaler() | model


def hoeffding_adaptive(num_classes: int, seed: int):
  """A Hoeffding Adaptive Tree: a streaming decision tree whose branches are replaced when an
  ADWIN drift detector finds their error rising (drift-aware)."""
  del num_classes
  *_, tree = _river("hoeffding_adaptive")
  return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)


def arf(num_classes: int, seed: int):
  """An Adaptive Random Forest of 10 Hoeffding trees, each with its own drift detector that
  starts a background tree on a warning and swaps it in on a drift (drift-aware)."""
  del num_classes
  forest, *_ = _river("arf")
  return forest.ARFClassifier(n_models=10, seed=seed)


def knn(num_classes: int, seed: int):
  """Standardised features into 5-nearest-neighbours over a sliding window of the latest 1,000
  examples learnt: it forgets older examples, so it follows drift by windowing. Deterministic."""
  del num_classes, seed
  _, _, neighbors, preprocessing, _ = _river("knn")
  return preprocessing.StandardScaler() | neighbors.KNNClassifier(
      n_neighbors=5, engine=neighbors.LazySearch(window_size=1000))


LEARNERS: dict[str, Factory] = {"logistic": logistic, "knn": knn,
                                "hoeffding_adaptive": hoeffding_adaptive, "arf": arf}


def factory_of(learner: str | Factory) -> Factory:
  """The factory of a name in LEARNERS (river checked for here, before any data is loaded), or
  `learner` itself if it is one."""
  if callable(learner):
    return learner
  if learner not in LEARNERS:
    raise ConfigError(f"unknown drift peer learner {learner!r}: choose from "
                      f"{', '.join(LEARNERS)}")
  _river(learner)
  return LEARNERS[learner]


def temporal_order(periods: np.ndarray, seed: int) -> np.ndarray:
  """Row indices sorted by period, each period's rows in an order shuffled by `seed` (stable:
  the same rows and seed give the same order)."""
  periods = np.asarray(periods)
  shuffled = np.random.default_rng(seed).permutation(len(periods))
  return shuffled[np.argsort(periods[shuffled], kind="stable")]


def as_dicts(inputs: np.ndarray) -> list[dict]:
  """River's examples: each row flattened, as {feature index: float}."""
  flat = np.asarray(inputs, np.float64).reshape(len(inputs), -1)
  return [dict(enumerate(row.tolist())) for row in flat]


def _label(y):
  return int(y)


def prequential(learner, xs: list[dict], ys: Iterable, order: np.ndarray) -> np.ndarray:
  """Test-then-train over the rows in `order`: each row is predicted, then learnt. Returns
  whether each row's prediction was right, indexed like the rows (bool [n])."""
  ys = np.asarray(ys)
  correct = np.zeros(len(ys), bool)
  for i in order:
    label = _label(ys[i])
    correct[i] = learner.predict_one(xs[i]) == label
    learner.learn_one(xs[i], label)
  return correct


def score(learner, xs: list[dict], ys: Iterable) -> np.ndarray:
  """Whether the learner's prediction of each row is right (bool [n]); nothing is learnt."""
  return np.array([learner.predict_one(x) == _label(y) for x, y in zip(xs, np.asarray(ys))],
                  bool)


def per_period(correct: np.ndarray, periods: np.ndarray) -> dict[int, float]:
  """Accuracy of each period present: {period: mean of `correct` over its rows}."""
  periods = np.asarray(periods)
  return {int(p): float(np.mean(correct[periods == p])) for p in np.unique(periods)}


def _rows(split, input_field: str, target: str, timestamp: str):
  arrays = split.read(np.arange(len(split)))
  return as_dicts(arrays[input_field]), arrays[target], np.asarray(arrays[timestamp])


def river_curves(data_config, learner: str | Factory = "logistic", seed: int = 0) -> dict:
  """A fresh learner (a name in LEARNERS, or a factory) on `data_config`'s stream: trained
  test-then-train over the training periods, then scored on each test period, frozen
  (eval_fix: jaxml's protocol) and test-then-train (prequential: with label feedback jaxml's
  runs do not get, a reference). See the module docstring.

  Returns {"eval_fix": {period: accuracy}, "prequential": {period: accuracy},
  "train_prequential": test-then-train accuracy over the training stream, "mean_eval_fix" and
  "mean_prequential": the means over test periods (unweighted, as jaxml's
  `period/mean_group/accuracy`), "seconds": wall time of training and both protocols}.
  """
  make = factory_of(learner)
  dataset = load_dataset(data_config)
  timestamp = dataset.task.timestamp
  if timestamp is None:
    raise ConfigError(f"data {dataset.name!r} has no timestamp field: the drift peers need a "
                      "time-stamped source (jaxml/data/drift.py)")
  input_field, target = fields_of(dataset)
  train_x, train_y, train_p = _rows(dataset.train, input_field, target, timestamp)
  test_x, test_y, test_p = _rows(dataset.test, input_field, target, timestamp)
  start = time.perf_counter()
  model = make(int(dataset.num_classes), int(seed))
  train_correct = prequential(model, train_x, train_y, temporal_order(train_p, seed))
  frozen = copy.deepcopy(model)  # never taught again: eval_fix
  eval_fix = per_period(score(frozen, test_x, test_y), test_p)
  online = per_period(prequential(model, test_x, test_y, temporal_order(test_p, seed)),
                      test_p)
  return {"eval_fix": eval_fix, "prequential": online,
          "train_prequential": float(np.mean(train_correct)),
          "mean_eval_fix": float(np.mean(list(eval_fix.values()))),
          "mean_prequential": float(np.mean(list(online.values()))),
          "seconds": time.perf_counter() - start}
