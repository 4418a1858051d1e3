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


def _numpy_ce(logits, labels, classes, smoothing):
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  target = np.eye(classes)[labels] * (1 - smoothing) + smoothing / classes
  return -(target * logp).sum(-1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_numpy(smoothing):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(16, 7)).astype(np.float32) * 3
  labels = rng.integers(0, 7, 16)
  got = classifier.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 7, smoothing)
  np.testing.assert_allclose(got, _numpy_ce(logits.astype(np.float64), labels, 7, smoothing),
                             rtol=1e-5, atol=1e-6)


def _setup():
  config = classifier_config.get_config("smoke")
  dataset = digits.load()
  state = jax.jit(lambda k: classifier.init_state(config, dataset, k))(jax.random.key(0))
  return config, dataset, state


def test_train_steps_reduce_loss_on_a_fixed_batch():
  config, dataset, state = _setup()
  batch = {k: jnp.asarray(v[:64]) for k, v in dataset.train.arrays.items()}
  step = jax.jit(classifier.make_train_step(config, dataset))
  losses = []
  for i in range(config.num_steps):  # the whole smoke schedule
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert int(state.step) == config.num_steps
  assert losses[-1] < 0.5 * losses[0]


def test_eval_step_ignores_masked_rows():
  config, dataset, state = _setup()
  x, y = dataset.test.arrays["image"][:10], dataset.test.arrays["label"][:10]
  eval_step = jax.jit(classifier.make_eval_step(config, dataset))
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


def test_validate_rejects_out_of_range_labels():
  config, dataset, _ = _setup()
  config.model.num_classes = 5
  with pytest.raises(ConfigError, match="labels out of range"):
    classifier.validate(config, dataset)
  config.model.num_classes = 0
  bad = dataclasses.replace(dataset, train=ArraySplit({
      "image": np.zeros((4, 8, 8, 1), np.float32), "label": np.array([0, 1, 2, 12], np.int32)}))
  with pytest.raises(ConfigError, match=r"train labels span \[0, 12\]"):
    classifier.validate(config, bad)


def test_batchnorm_resnet_step_updates_statistics():
  """BatchNorm statistics are mutated inside grad; the step must carry them out."""
  config = classifier_config.get_config("smoke")
  config.model = classifier_config.ml_collections.ConfigDict(
      {"name": "resnet", "depth": 18, "width": 4, "stem": "cifar", "norm": "batch",
       "num_classes": 0})
  dataset = digits.load()
  state = jax.jit(lambda k: classifier.init_state(config, dataset, k))(jax.random.key(0))
  batch = {k: jnp.asarray(v[:16]) for k, v in dataset.train.arrays.items()}
  new_state, metrics = jax.jit(classifier.make_train_step(config, dataset))(
      state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  before, after = jax.tree.leaves(state.model_state), jax.tree.leaves(new_state.model_state)
  assert before and any(not np.allclose(a, b) for a, b in zip(before, after))
