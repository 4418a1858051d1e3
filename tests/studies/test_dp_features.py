"""The private fine-tuning study: accounting per cell, references, resume, sharding, errors."""

import json
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from experiments import dp_transfer
from jaxml import runner
from jaxml.studies import dp_features
from jaxml.errors import ConfigError

# Its trained fixture is costly: one worker runs all of its tests (--dist loadgroup in
# pyproject.toml), and the fixture is session-scoped, so it is built once (a module-scoped one
# is torn down whenever the worker runs another module's test in between, and built again).
pytestmark = pytest.mark.xdist_group("dp_features")

METHODS = ("least_squares", "newton", "feature_covariance", "sgd")


@pytest.fixture(scope="session")
def public_workdir(tmp_path_factory):
  """One small public pre-training (digits 0-4) shared by the tests."""
  config = dp_transfer.get_config("smoke").public
  config.update(progress=False, num_steps=40)
  workdir = str(tmp_path_factory.mktemp("public"))
  runner.run(config, workdir)
  return workdir


def _config(public_workdir, **overrides):
  config = dp_transfer.get_config("smoke")
  config.public_workdir = public_workdir
  config.seeds = (0, 1)
  config.update(overrides)
  return config


def _rows(workdir):
  return [json.loads(line) for line in open(f"{workdir}/results.jsonl")]


def _epsilon_from_row(row) -> float:
  """A cell's ε from its results row alone, straight from dp_accounting (not through jaxml):
  every recorded release a self-composed Gaussian, Poisson-subsampled where it says so."""
  events = []
  for release in row["releases"]:
    event = dp_accounting.GaussianDpEvent(release["noise_multiplier"])
    if "sampling_probability" in release:
      event = dp_accounting.PoissonSampledDpEvent(release["sampling_probability"], event)
    events.append(dp_accounting.SelfComposedDpEvent(event, release["count"]))
  relation = dp_accounting.NeighboringRelation[row["neighboring_relation"].upper()]
  accountant = {"rdp": rdp.RdpAccountant, "pld": pld.PLDAccountant}[row["accountant"]]
  return accountant(neighboring_relation=relation).compose(
      dp_accounting.ComposedDpEvent(events)).get_epsilon(row["delta"])


def test_every_cell_spends_exactly_its_epsilon(public_workdir, tmp_path):
  summary = runner.run(_config(public_workdir), str(tmp_path))
  rows = _rows(tmp_path)
  assert len(rows) == len(METHODS) * 3 * 2  # methods x (ε=1, ε=8, ε=∞) x seeds
  n = summary["num_private_train"]
  assert n == 716  # digits 5-9 in the training split
  for row in rows:
    assert row["delta"] == pytest.approx(n ** -1.1)
    if row["epsilon"] is None:
      assert row["epsilon_accounted"] is None
      assert all(v == 0 for v in row["noise"].values())
    else:
      assert row["epsilon_accounted"] == pytest.approx(row["epsilon"], rel=2e-3)
      # The row alone says what was released: its ε recomputes to the one it recorded.
      assert row["accountant"] == "rdp" and row["releases"]
      assert _epsilon_from_row(row) == pytest.approx(row["epsilon_accounted"], rel=1e-9)
      sigmas = sorted(r["noise_multiplier"] for r in row["releases"])
      assert sigmas == sorted(row["noise"].values())
  by_cell = {(r["method"], r["epsilon"], r["seed"]): r["test_accuracy"] for r in rows}
  for method in METHODS:
    assert by_cell[(method, None, 0)] == by_cell[(method, None, 1)]  # no noise: seed-free
    assert by_cell[(method, None, 0)] > 0.6  # chance is 0.2 (a 40-step encoder, smoke heads)
  # With noise the seed matters (180 test images: two seeds may tie on one method, not all).
  assert sum(by_cell[(m, 1.0, 0)] != by_cell[(m, 1.0, 1)] for m in METHODS) >= 2
  assert summary["accuracy/nonprivate_probe"] > 0.6
  table = open(tmp_path / "artifacts" / "table.md").read()
  for label in ("DP-LS", "DP-Newton", "DP-FC", "DP-SGD", "ε = ∞", "smallest ε"):
    assert label in table
  sgd = next(r for r in rows if r["method"] == "sgd" and r["epsilon"] == 1.0)
  assert (f"| DP-SGD | 1 | clipped gradient sum σ={sgd['noise']['noise_multiplier']:.4g} × 10 "
          f"(q=1) | {sgd['delta']:.3g} | rdp | {sgd['epsilon_accounted']:.4g} |") in table
  assert (tmp_path / "artifacts" / "accuracy_vs_epsilon.png").stat().st_size > 1000
  assert set(summary["ordering"]) == {"ls_best_at_smallest_epsilon", "fc_gap_to_best",
                                      "fc_robust"}


def test_noiseless_least_squares_is_ridge_on_the_study_features(public_workdir, tmp_path):
  config = _config(public_workdir, methods=("least_squares",), epsilons=(8.0,), seeds=(0,))
  runner.run(config, str(tmp_path))
  got = {r["epsilon"]: r for r in _rows(tmp_path)}[None]
  train_x, train_y, test_x, test_y, k = dp_features.extract_features(config, str(tmp_path))
  x = train_x.astype(np.float64)
  w = np.linalg.solve(x.T @ x + config.least_squares.l2 * np.eye(x.shape[1]),
                      x.T @ np.eye(k)[train_y])
  assert got["test_accuracy"] == pytest.approx(np.mean(np.argmax(test_x @ w, 1) == test_y))
  assert got["train_accuracy"] == pytest.approx(np.mean(np.argmax(train_x @ w, 1) == train_y))
  # The features are centred on the public mean and scaled to norm `clip`.
  np.testing.assert_allclose(np.linalg.norm(train_x, axis=1), 1.0, rtol=1e-5)


def test_restart_skips_done_cells_and_recomputes_lost_ones_identically(public_workdir, tmp_path):
  config = _config(public_workdir, methods=("feature_covariance", "sgd"))
  runner.run(config, str(tmp_path))
  lines = open(tmp_path / "results.jsonl").read().splitlines()
  # Lose the last cell and tear the one before it, as a kill mid-write would.
  open(tmp_path / "results.jsonl", "w").write("\n".join(lines[:-2]) + "\n" + lines[-2][:20])
  runner.run(config, str(tmp_path))
  again = [json.loads(l) for l in open(tmp_path / "results.jsonl").read().splitlines()
           if l.startswith("{") and l.endswith("}")]
  assert again[:-2] == [json.loads(l) for l in lines[:-2]]
  assert again[-2:] == [json.loads(l) for l in lines[-2:]]
  # A changed hyperparameter is a different study: nothing is reused.
  config.sgd.learning_rate = 2.0
  runner.run(config, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "results.jsonl").read().splitlines()
          if l.startswith("{") and l.endswith("}")]
  changed = [r for r in rows if r["fingerprint"] == dp_features.fingerprint(config)]
  assert len(rows) == 2 * len(lines) and len(changed) == len(lines)


def test_eight_devices_equal_one(public_workdir, tmp_path):
  config = _config(public_workdir, seeds=(0,))
  runner.run(config, str(tmp_path / "eight"))
  config.num_devices = 1
  runner.run(config, str(tmp_path / "one"))
  eight = {(r["method"], r["epsilon"]): r["test_accuracy"] for r in _rows(tmp_path / "eight")}
  one = {(r["method"], r["epsilon"]): r["test_accuracy"] for r in _rows(tmp_path / "one")}
  assert eight.keys() == one.keys()
  for cell in eight:  # summation order differs, so allow one flipped test prediction
    assert abs(eight[cell] - one[cell]) <= 1 / 180 + 1e-9, cell


def test_pretraining_stage_runs_in_the_workdir_and_is_reused(tmp_path):
  config = dp_transfer.get_config("smoke")
  config.public.update(progress=False, num_steps=20)
  config.update(methods=("least_squares",), epsilons=(1.0,))
  runner.run(config, str(tmp_path))
  assert (tmp_path / "public" / "checkpoints").is_dir()
  steps = [json.loads(l)["step"] for l in open(tmp_path / "public" / "metrics.jsonl")]
  runner.run(config, str(tmp_path))  # finished: the public run is not trained again
  again = [json.loads(l)["step"] for l in open(tmp_path / "public" / "metrics.jsonl")]
  assert max(again) == max(steps) == 20


@pytest.mark.parametrize("overrides,message", [
    ({"methods": ("lasso",)}, "choose from"),
    ({"epsilons": (0.0,)}, "epsilons"),
    ({"delta": 0.01}, "must be in \\(0, 1/n\\)"),
    ({"features": {"clip": 0.0, "center": "public", "normalize": True, "batch_size": 64}},
     "features.clip"),
    ({"feature_covariance": {"l2": 1.0, "steps": 0, "learning_rate": 1.0,
                             "gram_budget": 0.5}}, "steps"),
    ({"sgd": {"l2_clip": 1.0, "sampling_probability": 1.5, "steps": 5, "learning_rate": 1.0,
              "l2": 0.0}}, "sampling_probability"),
    ({"epsilons": (1e5,)}, "outside"),
])
def test_bad_studies_are_config_errors(public_workdir, tmp_path, overrides, message):
  with pytest.raises(ConfigError, match=message):
    runner.run(_config(public_workdir, **overrides), str(tmp_path))


def test_encoder_input_shape_must_match_the_private_data(public_workdir, tmp_path):
  config = _config(public_workdir)
  config.data = {"source": "synthetic", "image_shape": (4, 4, 1), "num_classes": 3}
  with pytest.raises(ConfigError,
                     match=r"'image' examples are \(8, 8, 1\) but the data's are \(4, 4, 1\)"):
    runner.run(config, str(tmp_path))


def test_ordering_reads_the_table():
  stats = {("least_squares", 0.1): (0.5, 0, 1), ("feature_covariance", 0.1): (0.49, 0, 1),
           ("least_squares", 8.0): (0.8, 0, 1), ("feature_covariance", 8.0): (0.9, 0, 1)}
  order = dp_features.ordering(stats, ["least_squares", "feature_covariance"], [0.1, 8.0])
  assert order["ls_best_at_smallest_epsilon"] and order["fc_robust"]
  assert order["fc_gap_to_best"] == {"0.1": pytest.approx(0.01), "8": 0.0}
  stats[("feature_covariance", 0.1)] = (0.4, 0, 1)
  assert not dp_features.ordering(stats, ["least_squares", "feature_covariance"],
                                  [0.1, 8.0])["fc_robust"]
  assert math.isclose(dp_features.ROBUST_GAP, 0.02)


def test_cifar10_variant_runs_on_mock_data(tmp_path):
  """The full-scale code path (public CIFAR-100 ResNet-18 -> private CIFAR-10) at toy size."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  config = dp_transfer.get_config("cifar10")
  assert (config.public.data.source, config.data.source) == ("tfds:cifar100", "tfds:cifar10")
  config.public.model.width = 2  # the real graph, narrow enough for a CPU test
  config.public.update(num_steps=2, batch_size=16, eval_batch_size=16, log_every=1,
                       eval_every=2, checkpoint_every=2, progress=False)
  config.public.optimizer.warmup_steps = 1
  config.update(methods=("least_squares", "feature_covariance"), epsilons=(8.0,), seeds=(0,),
                delta=1e-3)  # mock splits have 32 examples, so n**-1.1 is large but valid
  config.features.batch_size = 16
  with tfds.testing.mock_data(num_examples=32):
    summary = runner.run(config, str(tmp_path))
  assert summary["num_private_train"] == 32 and summary["feature_dim"] == 16  # 512 · 2/64
  rows = {(r["method"], r["epsilon"]): r for r in _rows(tmp_path)}
  assert summary["accuracy/feature_covariance/eps=8"] == rows[("feature_covariance", 8.0)][
      "test_accuracy"]
  # The mock test split holds the 32 training images (random labels, chance 1/10): without
  # noise the 16-dim heads fit most of them (measured 0.78 and 0.88); ε = 8 noise costs
  # accuracy at n = 32 (measured 0.34 for DP-FC).
  for method in ("least_squares", "feature_covariance"):
    assert summary[f"accuracy/{method}/eps=inf"] > 0.5, method
  assert (summary["accuracy/feature_covariance/eps=8"]
          < summary["accuracy/feature_covariance/eps=inf"] - 0.2)


def test_imagenet_variant_resizes_and_runs_on_mock_data(tmp_path):
  """Places365 -> ImageNet at 224x224 (images of varying size, resized and cropped), toy size."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  config = dp_transfer.get_config("imagenet")
  assert (config.public.model.depth, config.data.image_size) == (50, 224)
  config.public.model.width = 2
  config.public.data.image_size = config.data.image_size = 32  # the resize path, CPU-sized
  config.public.update(num_steps=1, batch_size=16, eval_batch_size=16, log_every=1,
                       eval_every=1, checkpoint_every=1, progress=False)
  config.public.optimizer.warmup_steps = 1
  config.update(methods=("least_squares",), epsilons=(8.0,), seeds=(0,), delta=1e-3)
  config.features.batch_size = 16
  with tfds.testing.mock_data(num_examples=24):
    summary = runner.run(config, str(tmp_path))
  assert summary["num_private_train"] == 24 and summary["feature_dim"] == 2048 * 2 // 64
