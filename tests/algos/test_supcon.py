"""The SupCon algorithm: learning, sharding invariance, one compile, config checks."""

import json

import chex
import jax
import numpy as np
import pytest

from experiments import supcon as supcon_config
from jaxml import runner
from jaxml.algos import supcon
from jaxml.data import load_dataset
from jaxml.data.sources import digits
from jaxml.errors import ConfigError
from tests.algos import smoke
from tests.launch_utils import assert_same_arrays, restore_arrays


def _config(arg="smoke", **overrides):
  config = supcon_config.get_config(arg)
  config.update(progress=False, num_steps=12, log_every=4, eval_every=6, checkpoint_every=6)
  config.linear_probe.enabled = False
  for key, value in overrides.items():
    config[key] = value
  return config


def test_projections_are_unit_norm_and_features_come_from_the_encoder():
  config, dataset = _config(), digits.load()
  state = jax.jit(supcon.build(config, dataset).init)(jax.random.key(0))
  net = state.model()
  x = dataset.test.arrays["image"][:5]
  z = net(x)
  assert z.shape == (5, config.supcon.projection_dim)
  np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(net.features(x), net.encoder.features(x))


@pytest.mark.parametrize("arg", ["smoke", "smoke,simclr"])
def test_8_devices_equal_1_device_and_step_compiles_once(arg, tmp_path):
  chex.clear_trace_counter()  # counts are keyed by the step's code, shared across params
  eight = smoke.run_compiling_once(_config(arg), tmp_path / "eight")
  chex.clear_trace_counter()
  one = smoke.run_compiling_once(_config(arg, num_devices=1), tmp_path / "one")
  assert_same_arrays(restore_arrays(tmp_path / "eight", 12), restore_arrays(tmp_path / "one", 12),
                     exact=False, rtol=2e-5, atol=2e-6)
  assert eight["eval/loss"] == pytest.approx(one["eval/loss"], rel=1e-5)


def test_pretraining_lowers_the_contrastive_loss(tmp_path):
  config = _config(num_steps=60)
  config.log_every = 10
  runner.run(config, str(tmp_path))
  rows = [r for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if "train/loss" in r]
  assert rows[-1]["train/loss"] < rows[0]["train/loss"] - 0.5


@pytest.mark.parametrize("key,value,match", [
    ("method", "byol", "supcon.method='byol'"),
    ("num_views", 0, "num_views=0"),
])
def test_build_rejects_bad_settings(key, value, match):
  config = _config()
  config.supcon[key] = value
  with pytest.raises(ConfigError, match=match):
    supcon.build(config, digits.load())


def test_cifar100_lars_recipe_runs_on_mock_data(tmp_path):
  """The paper recipe's code path (TFDS, ResNet-50, LARS, colour jitter, flip) at toy size."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  config = supcon_config.get_config("cifar100,lars")
  assert (config.model.depth, config.batch_size, config.optimizer.name,
          config.optimizer.learning_rate, config.supcon.temperature) == (50, 1024, "lars", 0.5, 0.1)
  config.model.width = 2  # the real graph, narrow enough for a CPU test
  config.update(num_steps=2, batch_size=16, eval_batch_size=16, log_every=1, eval_every=2,
                checkpoint_every=2, progress=False)
  config.optimizer.warmup_steps = 1
  config.supcon.projection_hidden = 32
  with tfds.testing.mock_data(num_examples=32):
    summary = runner.run(config, str(tmp_path))
    train = load_dataset(config.data).train
    labels = train.read(np.arange(len(train)))["label"]
  assert summary["step"] == 2 and np.isfinite(summary["eval/loss"])
  # The probe's optimum is at least as good as the best constant predictor (w = 0, b = log
  # label frequencies) on the same examples (the mock test split holds the training ones).
  freq = np.bincount(labels) / len(labels)
  entropy = -np.sum(freq[freq > 0] * np.log(freq[freq > 0]))
  assert summary["probe/test_loss"] == pytest.approx(summary["probe/train_loss"])
  assert summary["probe/train_loss"] <= entropy + 1e-4
  assert summary["probe/train_accuracy"] >= freq.max() - 1e-6
