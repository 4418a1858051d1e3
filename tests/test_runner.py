"""The runner in-process: sharding invariance, one compile per step, metrics, NaN policies."""

import json

import numpy as np
import pytest

from experiments import classifier as classifier_config
from jaxml import runner
from jaxml.data import load_dataset
from jaxml.data.pipeline import batch_indices
from jaxml.errors import NonFiniteError
from tests import plugin_data
from tests.algos import smoke
from tests.launch_utils import (assert_same_arrays, restore_arrays, tensorboard_hparams,
                                tfevents)


def _config(**overrides):
  config = classifier_config.get_config("smoke")
  config.progress = False
  config.num_steps = 20
  config.log_every = 5
  config.eval_every = 10
  config.checkpoint_every = 10
  config.linear_probe.enabled = False
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def test_8_devices_equal_1_device(tmp_path):
  eight = runner.run(_config(), str(tmp_path / "eight"))
  one = runner.run(_config(num_devices=1), str(tmp_path / "one"))
  assert_same_arrays(restore_arrays(tmp_path / "eight", 20), restore_arrays(tmp_path / "one", 20),
                     exact=False, rtol=1e-5, atol=1e-6)
  assert eight["eval/accuracy"] == pytest.approx(one["eval/accuracy"], abs=1e-6)
  assert eight["eval/loss"] == pytest.approx(one["eval/loss"], rel=1e-5)


def test_train_and_eval_steps_compile_once(tmp_path):
  # 20 steps with logging, two evals (padded tails) and checkpoints: still one trace each.
  smoke.run_compiling_once(_config(), tmp_path)


def test_metrics_jsonl_tensorboard_and_summary(tmp_path):
  config = _config(**{"linear_probe.enabled": True})
  summary = runner.run(config, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train_steps = [r["step"] for r in rows if "train/loss" in r]
  assert train_steps == [5, 10, 15, 20]
  assert [r["step"] for r in rows if "eval/accuracy" in r] == [10, 20]
  # 20 steps leave the network's own head near chance, but its features already carry the
  # digits: a linear probe on them is far above chance (1/10; measured 0.86).
  assert summary["probe/test_accuracy"] > 0.6 and "probe/train_accuracy" in summary
  assert rows[-1] == {"step": 20, **{k: v for k, v in summary.items()
                                     if k.startswith(("eval/", "probe/"))}}
  assert 0 <= summary["perf/input_wait_fraction"] < 1
  tags = {v.tag for event in tfevents(tmp_path) for v in event.summary.value}
  assert {"train/loss", "eval/accuracy", "probe/test_accuracy"} <= tags
  # Every run's hparams are its config (flattened, dotted) and its algorithm's record.
  hparams = tensorboard_hparams(tmp_path)
  assert hparams["num_steps"] == 20 and hparams["model.name"] == config.model.name
  assert hparams["linear_probe.enabled"] is True and summary["record"] == {}
  assert json.loads(hparams["model.channels"]) == list(config.model.channels)
  assert json.load(open(tmp_path / "config.json"))["num_steps"] == 20


def test_nonfinite_stop_names_the_step(tmp_path):
  config = _config(**{"data.source": "tests.plugin_data:digits_with_extremes"})
  with pytest.raises(NonFiniteError, match=r"train/\w+ is nan at step \d+"):
    runner.run(config, str(tmp_path))


def test_nonfinite_skip_drops_poisoned_updates(tmp_path):
  config = _config(**{"data.source": "tests.plugin_data:digits_with_extremes",
                      "nonfinite": "skip"})
  summary = runner.run(config, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  skipped = [r["train/skipped"] for r in rows if "train/skipped" in r]
  # Exactly the batches holding an overflowing image (every 97th) were skipped: the fraction
  # logged for each 5 steps equals that of the data order's batches with one.
  n = len(load_dataset(config.data).train)
  poisoned = [bool(np.any(batch_indices(config.seed, step, config.batch_size, n)
                          % plugin_data.POISON_EVERY == 0)) for step in range(20)]
  assert 0 < sum(poisoned) < 20
  np.testing.assert_allclose(skipped, np.mean(np.reshape(poisoned, (4, 5)), axis=1))
  assert np.isfinite(summary["eval/loss"])  # ...and the parameters stayed finite
  params = restore_arrays(tmp_path, 20)
  assert all(np.isfinite(v).all() for v in params.values())
  assert int(params["['step']"]) == 20


def test_tfds_source_end_to_end_on_mock_data(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  config = _config(**{"data.source": "tfds:mnist", "linear_probe.enabled": True})
  config.model = classifier_config.ml_collections.ConfigDict(
      {"name": "mlp", "hidden": (32,), "num_classes": 0})
  with tfds.testing.mock_data(num_examples=96):
    summary = runner.run(config, str(tmp_path))
  assert summary["step"] == 20
  # Mock labels are random, so accuracy stays near chance; but the mock splits hold the same
  # 96 examples, so fitting the training data lowers the training and the test loss.
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train = [r["train/loss"] for r in rows if "train/loss" in r]
  evals = [r["eval/loss"] for r in rows if "eval/loss" in r]
  assert train[-1] < train[0] - 0.05 and evals[-1] < evals[0]
  assert evals[-1] == pytest.approx(summary["eval/loss"])


def test_cifar10_resnet18_variant_runs_on_mock_data(tmp_path):
  """The GPU recipe's code path (TFDS CIFAR-10, ResNet-18, BatchNorm, crop+flip) at toy size."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  config = classifier_config.get_config("cifar10")
  assert (config.model.name, config.model.depth, config.data.source) == (
      "resnet", 18, "tfds:cifar10")
  config.model.width = 4  # same graph as the real run, narrow enough for a CPU test
  config.update(num_steps=3, batch_size=16, eval_batch_size=16, log_every=1, eval_every=3,
                checkpoint_every=3, progress=False)
  config.optimizer.warmup_steps = 1
  with tfds.testing.mock_data(num_examples=32):
    summary = runner.run(config, str(tmp_path))
  assert summary["step"] == 3 and np.isfinite(summary["eval/loss"])
  # The ResNet's features tell the 32 mock images apart: a linear probe fits their random
  # labels (the mock test split holds the same images; chance is 1/10, measured 1.0).
  assert summary["probe/test_accuracy"] > 0.5
