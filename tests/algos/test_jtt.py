"""JTT: the first run's training errors, upsampled in an epoch order that resumes exactly."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import early_readouts
from jaxml import runner, trained
from jaxml.algos import jtt
from jaxml.data import load_dataset
from jaxml.errors import ConfigError
from tests.algos.smoke import run_compiling_once


def _config(method: str, first_run: str = ""):
  config = early_readouts.get_config(f"method={method},smoke")
  config.progress = False
  if method == "jtt":
    config.jtt.first_run = first_run
  return config


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  """An ERM smoke run (the study's first run) and its training errors, found by applying its
  model to the training arrays here, not through jtt."""
  workdir = str(tmp_path_factory.mktemp("erm"))
  runner.run(_config("erm"), workdir)
  run = trained.load(workdir)
  train = run.dataset.train.arrays
  logits = jax.jit(lambda state, x: state.model()(x, train=False))(run.state, train["image"])
  errors = np.flatnonzero(np.asarray(logits).argmax(-1) != train["label"])
  assert 0 < len(errors) < len(train["label"])  # a smoke run fits most of train, not all
  return workdir, errors


@pytest.fixture(scope="module")
def dataset():
  return load_dataset(_config("jtt").data)


def test_error_set_is_the_first_runs_training_errors(first_run, dataset):
  workdir, errors = first_run
  np.testing.assert_array_equal(jtt.error_set(workdir, dataset), errors)


def test_upsampled_epoch_holds_each_error_upweight_times(first_run, dataset):
  workdir, errors = first_run
  config = _config("jtt", workdir)
  config.jtt.upweight = 5
  sampler = jtt.build(config, dataset).sampler
  n, size = len(dataset.train), sampler.batch_size
  epoch_len = n + 4 * len(errors)
  steps = -(-2 * epoch_len // size)  # two whole epochs
  stream = np.concatenate([sampler.sample(7, step)[0] for step in range(steps)])
  expected = np.ones(n, np.int64)
  expected[errors] = 5
  for epoch in (stream[:epoch_len], stream[epoch_len:2 * epoch_len]):
    np.testing.assert_array_equal(np.bincount(epoch, minlength=n), expected)
  assert not np.array_equal(stream[:epoch_len], stream[epoch_len:2 * epoch_len])  # reshuffled
  # A pure function of (seed, step): what a resumed run reads again; another seed differs.
  again, mask = sampler.sample(7, steps - 1)
  np.testing.assert_array_equal(again, stream[-size:])
  assert mask is None
  assert not np.array_equal(sampler.sample(8, 0)[0], stream[:size])


def test_smoke_run_compiles_once_with_group_metrics(first_run, tmp_path):
  workdir, errors = first_run
  summary = run_compiling_once(_config("jtt", workdir), tmp_path)
  assert summary["completed"] and summary["algo"] == "jtt"
  assert summary["jtt/errors"] == len(errors)
  for name in ("eval/accuracy", "eval/group/worst_group/accuracy",
               "eval/aligned/worst_group/accuracy", "eval/aligned/misaligned/accuracy"):
    assert 0 <= summary[name] <= 1, name


def test_refuses_a_missing_first_run(tmp_path):
  with pytest.raises(ConfigError, match="jtt.first_run='' must be the workdir of the ERM run"):
    runner.run(_config("jtt"), str(tmp_path))


def test_refuses_a_first_run_on_other_data(first_run, tmp_path):
  config = _config("jtt", first_run[0])
  config.data.alignment = 0.5
  with pytest.raises(ConfigError, match=r"trained on other data \(data.alignment 0.95 there, "
                     r"0.5 here\)"):
    runner.run(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()
  config.data.alignment, config.data.prefetch = 0.95, 3  # how batches are fed: the same data
  jtt.check_config(config)


def test_refuses_a_first_run_that_is_not_one_classifier(first_run, tmp_path):
  with pytest.raises(ConfigError, match="no config.json there, so not a jaxml workdir"):
    jtt.check_config(_config("jtt", str(tmp_path)))
  erm = json.load(open(os.path.join(first_run[0], "config.json")))
  sifer = "is a 'sifer' run; it must be a classifier run \\(algo classifier or jtt\\)"
  for changes, says in [({"algo": "sifer"}, sifer),
                        ({"replicas": {**erm["replicas"], "count": 2}}, "trained 2 replicas")]:
    (tmp_path / "config.json").write_text(json.dumps({**erm, **changes}))
    with pytest.raises(ConfigError, match=says):
      jtt.check_config(_config("jtt", str(tmp_path)))


@pytest.mark.parametrize("key, value, says", [
    ("jtt.upweight", 0, "jtt.upweight=0 must be an integer >= 1"),
    ("dp.enabled", True, "dp.enabled=True: jtt has no DP-SGD training"),
])
def test_refuses_bad_settings_before_the_data(key, value, says):
  config = _config("jtt", "/nowhere")
  block, name = key.split(".")
  config[block][name] = value
  with pytest.raises(ConfigError, match=says.replace("(", r"\(")):
    jtt.check_config(config)
