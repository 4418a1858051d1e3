"""The classifier algorithm's pure functions, against NumPy references."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import classifier as classifier_config
from jaxml.algos import classifier
from jaxml.data.base import ArraySplit
from jaxml.data.sources import digits
from jaxml.errors import ConfigError


def _setup():
  config = classifier_config.get_config("smoke")
  dataset = digits.load()
  algorithm = classifier.build(config, dataset)
  return algorithm, dataset, jax.jit(algorithm.init)(jax.random.key(0))


def test_train_steps_reduce_loss_on_a_fixed_batch():
  algorithm, dataset, state = _setup()
  batch = {k: jnp.asarray(v[:64]) for k, v in dataset.train.arrays.items()}
  step = jax.jit(algorithm.train_step)
  losses = []
  num_steps = classifier_config.get_config("smoke").num_steps
  for i in range(num_steps):  # the whole smoke schedule
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert int(state.step) == num_steps
  assert losses[-1] < 0.5 * losses[0]


def test_eval_step_ignores_masked_rows():
  algorithm, dataset, state = _setup()
  x, y = dataset.test.arrays["image"][:10], dataset.test.arrays["label"][:10]
  eval_step = jax.jit(algorithm.eval_step)
  clean = eval_step(state, {"image": x, "label": y, "mask": np.ones(10, np.float32)})
  padded = eval_step(state, {
      "image": np.concatenate([x, np.full_like(x[:6], 0.7)]),
      "label": np.concatenate([y, np.zeros(6, np.int32)]),
      "mask": np.concatenate([np.ones(10), np.zeros(6)]).astype(np.float32)})
  assert float(padded["count"]) == 10
  for key in ("loss", "accuracy"):
    np.testing.assert_allclose(padded[key], clean[key], rtol=1e-6)
  logits = state.model()(x, train=False)
  np.testing.assert_allclose(float(clean["accuracy"]),
                             float(np.sum(np.argmax(logits, -1) == y)), rtol=0)


def test_predict_is_the_softmax_of_the_model_and_agrees_with_eval_accuracy():
  algorithm, dataset, state = _setup()
  x, y = dataset.test.arrays["image"][:32], dataset.test.arrays["label"][:32]
  probabilities = jax.jit(algorithm.predict)(state, {"image": x, "label": y})
  assert probabilities.shape == (32, dataset.num_classes)
  np.testing.assert_allclose(probabilities, jax.nn.softmax(state.model()(x, train=False)),
                             rtol=1e-5, atol=1e-7)
  sums = jax.jit(algorithm.eval_step)(state, {"image": x, "label": y,
                                              "mask": np.ones(32, np.float32)})
  assert float(sums["accuracy"]) == float(np.sum(np.argmax(probabilities, -1) == y))


def test_build_rejects_out_of_range_labels():
  config, dataset = classifier_config.get_config("smoke"), digits.load()
  config.model.num_classes = 5
  with pytest.raises(ConfigError, match="labels out of range"):
    classifier.build(config, dataset)
  config.model.num_classes = 0
  bad = dataclasses.replace(dataset, train=ArraySplit({
      "image": np.zeros((4, 8, 8, 1), np.float32), "label": np.array([0, 1, 2, 12], np.int32)}))
  with pytest.raises(ConfigError, match=r"train labels span \[0, 12\]"):
    classifier.build(config, bad)


def test_batchnorm_resnet_step_updates_statistics():
  """BatchNorm statistics are mutated inside grad; the step must carry them out."""
  config = classifier_config.get_config("smoke")
  config.model = classifier_config.ml_collections.ConfigDict(
      {"name": "resnet", "depth": 18, "width": 4, "stem": "cifar", "norm": "batch",
       "num_classes": 0})
  dataset = digits.load()
  algorithm = classifier.build(config, dataset)
  state = jax.jit(algorithm.init)(jax.random.key(0))
  batch = {k: jnp.asarray(v[:16]) for k, v in dataset.train.arrays.items()}
  new_state, metrics = jax.jit(algorithm.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  before, after = jax.tree.leaves(state.model_state), jax.tree.leaves(new_state.model_state)
  assert before and any(not np.allclose(a, b) for a, b in zip(before, after))
