"""SiFeR: the forget step moves only the layers below the readout (BatchNorm statistics kept),
pushes the readout towards uniform, no forgetting is the classifier's training exactly, a
smoke run through the runner, and the config errors."""

import functools
import json
import math

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import early_readouts
from jaxml import runner
from jaxml.algos import classifier, sifer
from jaxml.data import load_dataset
from jaxml.errors import ConfigError
from tests.algos.smoke import run_compiling_once

NUM_STEPS = 6  # train steps of the classifier comparison, whose state test 2 starts from


def sifer_config(**sifer_block):
  config = early_readouts.get_config("method=sifer,smoke")
  config.sifer.update(sifer_block)
  return config


@pytest.fixture(scope="module")
def dataset():
  return load_dataset(sifer_config().data)


def batches(dataset, count: int, size: int = 32):
  train, order = dataset.train.arrays, np.random.default_rng(0)
  rows = [order.choice(len(dataset.train), size, replace=False) for _ in range(count)]
  return [{"image": train["image"][r], "label": train["label"][r]} for r in rows]


def by_path(tree) -> dict[tuple, np.ndarray]:
  """{(module, ..., name): leaf} without the Variable's trailing `value`."""
  keys = lambda path: tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)
  return {keys(path)[:-1]: np.asarray(leaf) for path, leaf in jax.tree.leaves_with_path(tree)}


def uniform_ce_reference(logits) -> float:
  """Cross-entropy to the uniform distribution, in float64 NumPy."""
  z = np.asarray(logits, np.float64)
  log_p = z - z.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  return float(-log_p.mean())


def test_forget_step_moves_only_what_lies_below_the_readout_and_keeps_batch_statistics(dataset):
  """A BatchNorm ResNet with its readout after block 2: the forget step changes the stem and
  blocks 0-1, and leaves blocks 2-7, the head, the readout head and every running statistic
  bit-identical; its loss is the readout's in train mode (batch statistics)."""
  config = sifer_config()
  config.model = ml_collections.ConfigDict({
      "name": "resnet", "depth": 18, "width": 4, "norm": "batch", "num_classes": 0,
      "readout": {"depth": 2, "hidden": 0}})
  state = jax.jit(sifer.build(config, dataset).init)(jax.random.key(0, impl="rbg"))
  x = jnp.asarray(batches(dataset, 1, size=16)[0]["image"])
  forget = jax.jit(functools.partial(sifer.forget_step,
                                     sifer.forget_optimizer(config, state.model())))
  new, loss = forget(state, x)

  below = {("stem_conv",), ("stem_norm",), ("blocks", 0), ("blocks", 1)}
  old_params, new_params = by_path(state.params), by_path(new.params)
  moved = set()
  for path, value in new_params.items():
    prefix = next((p for p in below if path[:len(p)] == p), None)
    if prefix is None:
      np.testing.assert_array_equal(value, old_params[path], err_msg=str(path))
    elif np.any(value != old_params[path]):
      moved.add(prefix)
  assert moved == below
  assert any(path[0] == "readout_head" for path in new_params)  # it was among the frozen
  old_stats, new_stats = by_path(state.model_state), by_path(new.model_state)
  assert old_stats and old_stats.keys() == new_stats.keys()
  for path, value in new_stats.items():
    np.testing.assert_array_equal(value, old_stats[path], err_msg=str(path))

  @jax.jit
  def readout_logits(state, x):
    model = nnx.merge(state.graphdef, state.params, state.model_state, copy=True)
    return model.readout(x, train=True), model.readout(x, train=False)

  train_mode, eval_mode = readout_logits(state, x)
  assert float(loss) == pytest.approx(uniform_ce_reference(train_mode), rel=1e-5)
  assert abs(uniform_ce_reference(eval_mode) - float(loss)) > 1e-3  # so the mode mattered


@pytest.fixture(scope="module")
def no_forgetting_runs(dataset):
  """(sifer with forget_every=0, the classifier): init states and states after NUM_STEPS
  steps on the same batches and keys, and sifer's last metrics."""
  config = sifer_config(forget_every=0)
  runs = []
  for module in (sifer, classifier):
    algorithm = module.build(config, dataset)
    state = init = jax.jit(algorithm.init)(jax.random.key(0, impl="rbg"))
    step = jax.jit(algorithm.train_step)
    for i, batch in enumerate(batches(dataset, NUM_STEPS)):
      state, metrics = step(state, batch, jax.random.key(100 + i))
    runs.append((init, state, jax.device_get(metrics)))
  return config, runs


def test_without_forgetting_trunk_and_head_train_exactly_as_the_classifier(no_forgetting_runs):
  """The readout's loss reaches the trunk as a symbolic zero (stop_gradient), so the trunk's
  and head's gradients are the same expression as the classifier's, and the optimizer treats
  each leaf on its own (adamw, no global-norm clipping in this config): the parameters agree
  bit for bit, not merely to a tolerance. The readout head alone differs: sifer trains it."""
  _, [(ours_init, ours, metrics), (their_init, theirs, _)] = no_forgetting_runs
  assert metrics["forgot"] == 0 and metrics["forget_loss"] == 0
  for init, after in ((by_path(ours_init.params), by_path(their_init.params)),
                      (by_path(ours.params), by_path(theirs.params))):
    assert init.keys() == after.keys()
  ours_init, ours, theirs = (by_path(s.params) for s in (ours_init, ours, theirs))
  for path, value in ours.items():
    if path[0] == "readout_head":
      assert np.any(value != ours_init[path]), path
    else:
      np.testing.assert_array_equal(value, theirs[path], err_msg=str(path))
      assert np.any(value != ours_init[path]), path  # the comparison is not vacuous


def test_repeated_forget_steps_push_the_readout_towards_uniform(no_forgetting_runs, dataset):
  """From a state whose readout has learnt something (the no-forgetting run), forget steps
  on a batch lower its cross-entropy to uniform at every step, never below log(classes), the
  uniform prediction's; the loss reported equals a NumPy reference on the readout."""
  config, [(_, state, _), _] = no_forgetting_runs
  config = sifer_config(learning_rate=0.2)
  forget = jax.jit(functools.partial(sifer.forget_step,
                                     sifer.forget_optimizer(config, state.model())))
  x = jnp.asarray(batches(dataset, 1, size=64)[0]["image"])
  readout = jax.jit(lambda state, x: state.model().readout(x, train=True))
  losses = []
  for _ in range(8):
    reference = uniform_ce_reference(readout(state, x))
    state, loss = forget(state, x)
    assert float(loss) == pytest.approx(reference, rel=1e-5)
    losses.append(float(loss))
  print("forget losses", np.round(losses, 4), "log(10)", round(math.log(10), 4))
  floor = math.log(10)
  assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
  assert min(losses) >= floor - 1e-5
  assert losses[-1] - floor < 0.5 * (losses[0] - floor), losses


def test_smoke_config_runs_through_the_runner_forgetting_on_schedule(tmp_path):
  config = sifer_config()  # forget_every 4, logged every 10 steps
  config.progress = False
  summary = run_compiling_once(config, tmp_path)
  assert summary["completed"]
  for key in ("eval/accuracy", "eval/readout_accuracy", "eval/aligned/worst_group/accuracy",
              "eval/group/worst_group/accuracy", "eval/aligned/misaligned/accuracy"):
    assert 0 <= summary[key] <= 1, key
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train = [row for row in rows if "train/forgot" in row]
  assert [row["step"] for row in train] == list(range(10, 61, 10))
  for row in train:  # the share of steps s in (step - 10, step] with s % 4 == 0
    forgets = sum(s % 4 == 0 for s in range(row["step"] - 9, row["step"] + 1))
    assert row["train/forgot"] == pytest.approx(forgets / 10)
    assert row["train/forget_loss"] > 0


@pytest.mark.parametrize("key, value, says", [
    ("model.readout.depth", 4, "is deeper than the network"),  # refused by build, with data
    ("model.readout.depth", 0, "must be an integer >= 1"),  # the rest before data is loaded
    ("sifer.forget_every", -1, "must be an integer >= 0"),
    ("sifer.learning_rate", 0.0, "must be > 0"),
    ("dp.enabled", True, "sifer has no DP-SGD training"),
])
def test_bad_config_is_one_line_naming_the_key_before_training(key, value, says, tmp_path):
  config = sifer_config()
  block, name = key.rsplit(".", 1)
  node = config
  for part in block.split("."):
    node = node[part]
  node[name] = value
  with pytest.raises(ConfigError) as caught:
    runner.run(config, str(tmp_path))
  message = str(caught.value)
  assert message.startswith(f"{key}={value!r}") and says in message, message
  assert "\n" not in message, message
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()
