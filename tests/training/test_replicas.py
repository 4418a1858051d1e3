"""Replicas side by side (jaxml/training/replicas.py): replica r is the run with seed + r in
the sources it varies, replicas varying nothing are bit-identical, the step compiles once, the
prediction difference logged equals NumPy's over the replicas' predictions, and a replicated
run resumes exactly."""

import itertools
import shutil

import jax
import numpy as np
import pytest

from experiments import classifier
from jaxml import runner, trained
from jaxml.core import rng
from jaxml.data import load_dataset
from jaxml.errors import ConfigError
from jaxml.training import replicas
from tests.algos.smoke import run_compiling_once
from tests.launch_utils import checkpoint_steps, restore_arrays
from tests.test_signals import final_metrics

pytestmark = pytest.mark.xdist_group("replicas")
COUNT = 3


def _config(seed=0, count=0, vary="", **changes):
  c = classifier.get_config(f"smoke,model=mlp,seed={seed}")
  c.num_steps, c.checkpoint_every, c.eval_every, c.progress = 20, 10, 10, False
  c.replicas.update(count=count, vary=vary)
  c.update(changes)
  return c


def _shared(key: str) -> bool:  # the one field without a replica axis
  return key == "['step']"


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
  """Workdirs: `all` (3 replicas varying everything, compile-checked), `none` (varying
  nothing) and the plain runs `seed0`..`seed2`."""
  root = tmp_path_factory.mktemp("replicas")
  configs = {"all": _config(count=COUNT), "none": _config(count=COUNT, vary="none"),
             **{f"seed{s}": _config(seed=s) for s in range(COUNT)}}
  summaries = {}
  for name, config in configs.items():
    summaries[name] = run_compiling_once(config, root / name)
  return root, summaries


def test_replica_r_is_the_run_with_seed_plus_r(runs):
  root, summaries = runs
  together = restore_arrays(root / "all")
  for r in range(COUNT):
    alone = restore_arrays(root / f"seed{r}")
    assert alone.keys() == together.keys()
    for key, value in alone.items():
      mine = together[key] if _shared(key) else together[key][r]
      # Batched matmuls round differently from single ones: equal to float32 rounding.
      np.testing.assert_allclose(mine, value, rtol=1e-5, atol=1e-5, err_msg=key)
    for name in ("loss", "accuracy"):
      assert summaries["all"][f"eval/replica{r}/{name}"] == pytest.approx(
          summaries[f"seed{r}"][f"eval/{name}"], abs=1e-4)
  assert summaries["all"]["eval/accuracy"] == pytest.approx(
      np.mean([summaries[f"seed{r}"]["eval/accuracy"] for r in range(COUNT)]), abs=1e-4)
  kernel = next(k for k in together if k.startswith("['params']") and "kernel" in k)
  assert not np.allclose(together[kernel][0], together[kernel][1])  # they did differ


def test_replicas_varying_nothing_are_bit_identical_and_their_pd_is_zero(runs):
  root, summaries = runs
  for key, value in restore_arrays(root / "none").items():
    for r in range(1, COUNT):
      assert _shared(key) or np.array_equal(value[0], value[r]), key
  # Equal parameters; their predictions come from one batched (vmapped) matmul, whose lanes
  # XLA may round differently: PD at float32 rounding, no flipped prediction.
  assert summaries["none"]["eval/pd/l1"] < 1e-6 and summaries["none"]["eval/pd/top1"] == 0.0
  assert summaries["all"]["eval/pd/l1"] > 0.01  # the varied ones disagree


def test_logged_pd_equals_numpy_over_the_replicas_predictions(runs):
  root, summaries = runs
  run = trained.load(str(root / "all"))
  probs, labels = run.predict(run.dataset.test)
  assert probs.shape == (len(labels), COUNT, 10)
  pairs = list(itertools.combinations(range(COUNT), 2))
  l1 = np.mean([np.abs(probs[:, i] - probs[:, j]).sum(-1).mean() for i, j in pairs])
  top1 = np.mean([(probs[:, i].argmax(-1) != probs[:, j].argmax(-1)).mean() for i, j in pairs])
  assert summaries["all"]["eval/pd/l1"] == pytest.approx(l1, rel=1e-5)
  assert summaries["all"]["eval/pd/top1"] == pytest.approx(top1, abs=1e-9)
  for r in range(COUNT):
    assert summaries["all"][f"eval/replica{r}/accuracy"] == pytest.approx(
        np.mean(probs[:, r].argmax(-1) == labels), abs=1e-9)


def test_each_replica_is_probed_on_its_own_features(runs):
  _, summaries = runs
  for r in range(COUNT):
    assert summaries["all"][f"probe/replica{r}/test_accuracy"] == pytest.approx(
        summaries[f"seed{r}"]["probe/test_accuracy"], abs=2e-3)


def test_a_replicated_run_resumes_bit_identical(runs, tmp_path):
  root, _ = runs
  shutil.copytree(root / "all", tmp_path / "run")
  shutil.rmtree(tmp_path / "run" / "checkpoints" / "20")  # as if stopped after step 10
  assert checkpoint_steps(tmp_path / "run") == [10]
  runner.run(_config(count=COUNT), str(tmp_path / "run"))
  again, before = restore_arrays(tmp_path / "run"), restore_arrays(root / "all")
  assert all(np.array_equal(again[k], before[k]) for k in before)
  assert final_metrics(tmp_path / "run") == final_metrics(root / "all")


@pytest.mark.parametrize("vary, differs", [("init", "init"), ("order", "order"),
                                           ("keys", None)])
def test_only_the_named_source_differs(vary, differs):
  config = _config(count=COUNT, vary=vary)
  dataset = load_dataset(config.data)
  algorithm = runner.build_algorithm(config, dataset)
  states = jax.jit(algorithm.init)(rng.run_keys(0)[0])
  kernel = states.params["layers"][0]["kernel"][...]
  assert np.array_equal(kernel[0], kernel[1]) == (differs != "init")
  indices, _ = algorithm.sampler.sample(0, 3)
  by_replica = indices.reshape(config.batch_size, COUNT)
  assert np.array_equal(by_replica[:, 0], by_replica[:, 1]) == (differs != "order")


@pytest.mark.parametrize("changes, message", [
    ({"count": 1}, "replicas.count=1: use 0"),
    ({"count": 2, "vary": "seed"}, "replicas.vary='seed' must be"),
    ({"count": 2, "vary": "init,init"}, "replicas.vary='init,init' must be"),
    ({"count": 2, "vary": "init", "window": 16}, "replicas.window=16 permutes"),
    ({"count": -1}, "replicas.count=-1"),
])
def test_bad_replicas_are_one_clear_error(changes, message):
  config = _config()
  config.replicas.update(changes)
  with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
    replicas.spec(config)


def test_a_windowed_order_refuses_a_sampler_with_no_order():
  config = classifier.get_config("smoke,model=mlp,dp")
  config.replicas.update(count=2, vary="order", window=16)
  with pytest.raises(ConfigError, match="replicas.window=16: this run draws its batches"):
    runner.build_algorithm(config, load_dataset(config.data))
