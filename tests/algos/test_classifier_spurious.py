"""ERM on the spurious-feature sources learns the shortcut: the classifier's `spurious=` data."""

import jax
import numpy as np
import pytest

from experiments import classifier as classifier_config
from jaxml import trained
from jaxml.algos import classifier
from jaxml.data import load_dataset
from jaxml.errors import ConfigError
from tests.algos.smoke import run_compiling_once


def _right(predict, state, split, inputs: str):
  """Whether each example is classified right, and whether its shortcut is aligned."""
  arrays = split.arrays
  probabilities = predict(state, {inputs: arrays[inputs], "label": arrays["label"]})
  return np.asarray(np.argmax(probabilities, -1) == arrays["label"]), arrays["aligned"] == 1


@pytest.mark.parametrize("variant", ["spurious=coloured_digits,smoke,model=mlp",
                                     "spurious=slab,smoke"])
def test_erm_fits_train_through_the_shortcut_and_fails_where_it_misleads(variant):
  """The colour (a coloured ground) and slab's linear coordinate are simpler than the digit's
  shape or the slabs: a short ERM run fits train but is right on test only where the shortcut
  agrees with the label."""
  config = classifier_config.get_config(variant)
  dataset = load_dataset(config.data)
  inputs = dataset.task.inputs[0]
  algorithm = classifier.build(config, dataset)
  state = jax.jit(algorithm.init)(jax.random.key(0))
  step, predict = jax.jit(algorithm.train_step), jax.jit(algorithm.predict)
  train = dataset.train.arrays
  order = np.random.default_rng(0)
  for i in range(config.num_steps):
    rows = order.choice(len(dataset.train), config.batch_size, replace=False)
    state, _ = step(state, {inputs: train[inputs][rows], "label": train["label"][rows]},
                    jax.random.key(i))
  train_accuracy = _right(predict, state, dataset.train, inputs)[0].mean()
  right, is_aligned = _right(predict, state, dataset.test, inputs)
  aligned, misaligned = right[is_aligned].mean(), right[~is_aligned].mean()
  print(f"{variant}: train {train_accuracy:.3f}, test aligned {aligned:.3f}, "
        f"misaligned {misaligned:.3f}")
  assert train_accuracy > 0.9
  assert aligned > 0.9 and misaligned < 0.3


def test_slab_variant_runs_through_the_runner_at_chance_on_test(tmp_path):
  config = classifier_config.get_config("spurious=slab,smoke")
  config.progress = False
  config.linear_probe.enabled = False
  summary = run_compiling_once(config, tmp_path)
  assert summary["completed"]
  assert abs(summary["eval/accuracy"] - 0.5) < 0.1  # test's linear coordinate is randomised
  # The runner's group metrics (every group field of the data) equal NumPy's over the
  # run's own test predictions; the shortcut's misaligned group is the worst, near 0.
  run = trained.load(str(tmp_path))
  probabilities, labels = run.predict(run.dataset.test)
  right = probabilities.argmax(-1) == labels
  for field in ("aligned", "group"):
    ids = run.dataset.test.arrays[field]
    accuracy = {g: right[ids == g].mean() for g in np.unique(ids)}
    assert summary[f"eval/{field}/worst_group/accuracy"] == pytest.approx(
        min(accuracy.values()), abs=1e-9)
    assert summary[f"eval/{field}/mean_group/accuracy"] == pytest.approx(
        np.mean(list(accuracy.values())), abs=1e-9)
    names = run.dataset.fields[field].categories
    for g, value in accuracy.items():
      assert summary[f"eval/{field}/{names[g]}/accuracy"] == pytest.approx(value, abs=1e-9)
  assert summary["eval/aligned/misaligned/accuracy"] < 0.1 < 0.9 < summary[
      "eval/aligned/aligned/accuracy"]


@pytest.mark.parametrize("arg, message", [
    ("spurious=mnist", "spurious='mnist': choose one of coloured_digits"),
    ("spurious=slab,adult", "spurious=slab does not combine with adult"),
])
def test_spurious_variant_refuses_what_it_cannot_be(arg, message):
  with pytest.raises(ConfigError, match=message):
    classifier_config.get_config(arg)
