"""GroupDRO: the group weights' update and the robust loss against NumPy, and a smoke run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import early_readouts
from jaxml import runner, trained
from jaxml.algos import group_dro
from jaxml.data import load_dataset
from jaxml.errors import ConfigError
from tests.algos.smoke import run_compiling_once

# A batch of 7 rows in 4 groups: group 2 has no rows and the last row is padding.
LOSSES = np.array([0.3, 1.2, 0.7, 2.0, 0.1, 0.9, 5.0], np.float32)
GROUPS = np.array([0, 1, 1, 3, 0, 3, 2], np.int32)
MASK = np.array([1, 1, 1, 1, 1, 1, 0], np.float32)
WEIGHTS = np.array([0.1, 0.2, 0.3, 0.4], np.float32)


def _reference(losses, groups, mask, weights, step_size):
  """Sagawa et al.'s online step in NumPy: (l_g, q', sum_g q'_g l_g)."""
  group_loss = np.zeros(len(weights))
  for g in range(len(weights)):
    rows = (groups == g) & (mask > 0)
    group_loss[g] = losses[rows].mean() if rows.any() else 0.0
  new = weights * np.exp(step_size * group_loss)
  new /= new.sum()
  return group_loss, new, np.sum(new * group_loss)


def _config(**overrides):
  config = early_readouts.get_config("method=group_dro,smoke")
  config.progress = False
  config.group_dro.update(overrides)
  return config


@pytest.mark.parametrize("step_size", [0.0, 0.5, 3.0])
def test_weight_update_and_robust_loss_equal_numpy(step_size):
  group_loss, counts = group_dro.group_losses(jnp.asarray(LOSSES), GROUPS, 4, MASK)
  new = group_dro.update_weights(jnp.asarray(WEIGHTS), group_loss, step_size)
  loss = group_dro.robust_loss(new, group_loss)
  want_loss, want_weights, want_robust = _reference(LOSSES, GROUPS, MASK, WEIGHTS, step_size)
  np.testing.assert_allclose(group_loss, want_loss, rtol=1e-6)
  np.testing.assert_array_equal(counts, [2, 2, 0, 2])
  np.testing.assert_allclose(new, want_weights, rtol=1e-6)
  np.testing.assert_allclose(loss, want_robust, rtol=1e-6)
  if step_size == 0:  # uniform weights stay uniform, whatever the losses
    uniform = jnp.full(4, 0.25)
    np.testing.assert_array_equal(group_dro.update_weights(uniform, group_loss, 0.0), uniform)
  # The gradient reaches the examples through the group means only, the weights held fixed:
  # d loss / d loss_i = q'_g / n_g for row i of group g, 0 for padding.
  grad = jax.grad(lambda x: group_dro.robust_loss(group_dro.update_weights(
      jnp.asarray(WEIGHTS), group_dro.group_losses(x, GROUPS, 4, MASK)[0], step_size),
      group_dro.group_losses(x, GROUPS, 4, MASK)[0]))(jnp.asarray(LOSSES))
  np.testing.assert_allclose(grad, want_weights[GROUPS] / 2 * MASK, rtol=1e-6)


@pytest.fixture(scope="module")
def dataset():
  return load_dataset(_config().data)


def _batch(dataset, rows):
  return {k: v[rows] for k, v in dataset.train.arrays.items()}


def test_train_step_moves_the_weights_as_numpy_does(dataset):
  """One step of the built algorithm on a batch of known groups, against the NumPy update of
  the per-example losses of its own model."""
  config = _config(step_size=2.0)
  config.augment.update(crop_pad=0, noise_std=0.0)  # so the step's inputs are the batch's
  algorithm = group_dro.build(config, dataset)
  state = jax.jit(algorithm.init)(jax.random.key(0))
  num_groups = len(state.extra["group_weights"])
  assert num_groups == 100  # 10 classes x 10 colours
  np.testing.assert_array_equal(state.extra["group_weights"], np.full(100, 0.01, np.float32))
  batch = _batch(dataset, np.arange(32))
  logits = np.asarray(state.model()(batch["image"], train=True), np.float64)
  log_p = logits - logits.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  losses = -log_p[np.arange(32), batch["label"]]
  want_loss, want_weights, want_robust = _reference(
      losses, batch["group"], np.ones(32), np.full(100, 0.01), 2.0)
  new_state, metrics = jax.jit(algorithm.train_step)(state, batch, jax.random.key(1))
  np.testing.assert_allclose(new_state.extra["group_weights"], want_weights, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], want_robust, rtol=1e-5)
  present = np.isin(np.arange(100), batch["group"])
  np.testing.assert_allclose(metrics["worst_group_loss"], want_loss[present].max(), rtol=1e-5)


def test_smoke_run_compiles_once(tmp_path):
  summary = run_compiling_once(_config(), tmp_path)
  assert summary["completed"] and summary["algo"] == "group_dro"
  for name in ("eval/accuracy", "eval/group/worst_group/accuracy",
               "eval/aligned/worst_group/accuracy"):
    assert 0 <= summary[name] <= 1, name
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = [row for row in rows if "train/loss" in row]
  assert train and all(row["train/worst_group_loss"] >= row["train/loss"] > 0 for row in train)
  weights = np.asarray(trained.load(str(tmp_path)).state.extra["group_weights"])
  assert weights.sum() == pytest.approx(1, abs=1e-5) and weights.std() > 0  # moved, still a
  # distribution


def test_refuses_a_group_the_data_lacks(tmp_path):
  with pytest.raises(ConfigError) as caught:
    runner.run(_config(group="nope"), str(tmp_path))
  message = str(caught.value)
  assert "\n" not in message
  assert message.startswith("group_dro.group='nope' is not a group field of data")
  assert "its group fields: group, aligned" in message
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("overrides, says", [
    ({"step_size": -0.1}, "group_dro.step_size=-0.1 must be >= 0 and finite"),
    ({"group": ""}, "group_dro.group='' must name a group field of the data"),
])
def test_refuses_bad_settings_before_the_data(overrides, says):
  with pytest.raises(ConfigError, match=says):
    group_dro.check_config(_config(**overrides))
