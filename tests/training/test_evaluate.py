"""jaxml/training/evaluate.py on hand-built splits and predictions: `means` divides by the
right counts, and `ranking_metrics` logs a binary task's AUROC/AUPRC (equal to sklearn's,
per replica and their mean) and nothing for tasks whose scores do not rank."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from jaxml.core.mesh import make_mesh
from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.training import evaluate

N = 37  # not a multiple of the batch: the tail is padded and the padding dropped


def dataset(num_classes: int, kind: str = "classification") -> Dataset:
  rng = np.random.default_rng(0)
  labels = rng.integers(0, max(num_classes, 2), size=N).astype(np.int32)
  x = (labels[:, None] + rng.normal(scale=1.5, size=(N, 3))).astype(np.float32)
  arrays = {"x": x, "label": labels if kind == "classification" else x[:, 0]}
  fields = {"x": Field((3,), "float32"),
            "label": Field((), "int32") if kind == "classification" else Field((), "float32")}
  split = ArraySplit(arrays)
  return Dataset(split, split, fields, Task(kind, ("x",), "label", num_classes), "hand-built")


def steps(outputs, replicas: int = 0):
  """A `steps` whose jitted predict returns `outputs(x)` ([B, C] or [B, R, C])."""
  return types.SimpleNamespace(
      predict=lambda state, batch: outputs(batch["x"]),
      algorithm=types.SimpleNamespace(target="label", replicas=replicas))


def test_means_divide_by_the_examples_or_a_metrics_own_count():
  got = evaluate.means({"count": 4.0, "loss": 2.0, "accuracy": 3.0, "count/accuracy": 6.0})
  assert got == {"loss": 0.5, "accuracy": 0.5}


@pytest.mark.parametrize("probabilities", [True, False])
def test_binary_auroc_and_auprc_equal_sklearns(probabilities):
  data = dataset(2)
  weights = jnp.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]])

  def outputs(x):
    logits = x @ weights
    return jax.nn.softmax(logits, axis=-1) if probabilities else logits

  got = evaluate.ranking_metrics(steps(outputs), None, data, make_mesh(), batch_size=16)
  x, labels = data.test.arrays["x"], data.test.arrays["label"]
  logits = np.asarray(x @ np.asarray(weights), np.float64)
  score = logits[:, 1] - logits[:, 0]
  assert set(got) == {"auroc", "auprc"}
  assert got["auroc"] == pytest.approx(sk_metrics.roc_auc_score(labels, score), abs=1e-9)
  assert got["auprc"] == pytest.approx(sk_metrics.average_precision_score(labels, score),
                                       abs=1e-6)


def test_binary_replicas_log_each_and_their_mean():
  data = dataset(2)
  signs = jnp.array([1.0, -1.0])  # the second replica ranks backwards

  def outputs(x):
    margin = x[:, 0][:, None] * signs[None, :]  # [B, R]
    return jnp.stack([jnp.zeros_like(margin), margin], axis=-1)  # [B, R, 2]

  got = evaluate.ranking_metrics(steps(outputs, replicas=2), None, data, make_mesh(), 16)
  x0, labels = data.test.arrays["x"][:, 0], data.test.arrays["label"]
  first = sk_metrics.roc_auc_score(labels, x0)
  assert got["replica0/auroc"] == pytest.approx(first, abs=1e-9)
  assert got["replica1/auroc"] == pytest.approx(1 - first, abs=1e-9)
  assert got["auroc"] == pytest.approx(0.5, abs=1e-9)


def test_a_diverged_prediction_gives_nan_not_an_error():
  got = evaluate.ranking_metrics(steps(lambda x: jnp.full((x.shape[0], 2), jnp.nan)), None,
                                 dataset(2), make_mesh(), 16)
  assert np.isnan(got["auroc"]) and np.isnan(got["auprc"])


@pytest.mark.parametrize("num_classes, kind", [(3, "classification"), (0, "regression")])
def test_no_ranking_metrics_for_multiclass_or_regression(num_classes, kind):
  got = evaluate.ranking_metrics(steps(lambda x: x), None, dataset(num_classes, kind),
                                 make_mesh(), 16)
  assert got == {}
