"""The Allo study (jaxml/studies/allo.py) through the launcher at smoke size: rows for every
part, task, n and method; the frozen-ridge accuracies equal the few-shot evaluator's and the
frozen-logistic ones scikit-learn's on the encoder's own features; the encoder never saw a
held-out digit; the illustration sheet is written; a rerun trains nothing; bad configs fail
before anything trains."""

import os

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from experiments import allo_study as allo_study_config
from jaxml import trained
from jaxml.data.base import labels_of
from jaxml.errors import ConfigError
from jaxml.evaluators import few_shot
from jaxml.studies import allo as study
from jaxml.studies import results
from tests.launch_utils import (assert_config_and_headline, assert_rerun_trains_nothing,
                                run_launcher)

pytestmark = pytest.mark.xdist_group("allo_study")
EXPERIMENT = "experiments/allo_study.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  """One smoke run of the study through the launcher (also this config's launcher smoke
  test: tests/test_launcher.py leaves it here)."""
  config = allo_study_config.get_config("smoke")
  workdir = tmp_path_factory.mktemp("allo_study")
  proc = run_launcher(EXPERIMENT + ":smoke", workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {tuple(r["key"]): r for r in results.read_records(
      os.path.join(workdir, results.RESULTS))}
  return config, workdir, proc, rows


def test_rows_for_every_part_task_n_and_method(smoke):
  config, workdir, proc, rows = smoke
  assert_config_and_headline(EXPERIMENT, proc, workdir)
  (seed,) = config.seeds
  assert set(rows) == {(part, seed) for part in study.PARTS}
  fewshot = rows[("fewshot", seed)]
  for task in study.TASKS:
    for n in config.labels_per_class:
      for method in study.METHODS:
        assert f"{task}/{n}/{method}" in fewshot, (task, n, method)
  assert os.path.getsize(os.path.join(workdir, "artifacts", f"illustrations_s{seed}.png")) > 0
  for name in ("allo.md", "allo_labels.png", "allo_units.png"):
    assert os.path.getsize(os.path.join(workdir, "artifacts", name)) > 0, name


def test_frozen_methods_equal_the_evaluator_and_sklearn_on_the_encoders_features(smoke):
  config, workdir, _, rows = smoke
  (seed,) = config.seeds
  images = study.held_out_images()
  features = study.frozen_features(study.encoder_dir(str(workdir), seed), images)
  labels = study.task_labels(config, images, seed)
  n = config.labels_per_class[-1]
  for task in ("identity", "slant"):
    classes = 5 if task == "identity" else config.attributes.bins
    train_y, test_y = labels[task]["train"], labels[task]["test"]
    want = few_shot.evaluate(features["train"], train_y, features["test"], test_y, classes,
                             shots=(n,), draws=config.draws, l2=config.l2, seed=seed)[n]
    assert rows[("fewshot", seed)][f"{task}/{n}/frozen_ridge"] == pytest.approx(want.mean)
    draws = few_shot.draw_shots(train_y, classes, n, config.draws, seed)
    logistic = [make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
        features["train"][r], train_y[r]).score(features["test"], test_y) for r in draws]
    assert rows[("fewshot", seed)][f"{task}/{n}/frozen_logreg"] == pytest.approx(
        np.mean(logistic))


def test_the_encoder_never_saw_a_held_out_digit(smoke):
  config, workdir, _, _ = smoke
  run = trained.load(study.encoder_dir(str(workdir), config.seeds[0]))
  assert set(np.unique(labels_of(run.dataset.train))) <= set(range(5))
  assert run.dataset.num_classes == 5


def test_rater_noise_reaches_the_training_labels_only():
  config = allo_study_config.get_config("smoke")
  images = study.held_out_images()
  labels = study.task_labels(config, images, 0)
  for name in ("thickness", "slant", "size"):
    train = labels[name]["train"]
    flipped = np.mean(train != labels[name]["train_true"])
    assert flipped == pytest.approx(config.attributes.noise, abs=1 / len(train)), name
    assert len(labels[name]["test"]) == len(images["test"]["digit"])


def test_rerun_reuses_rows_and_trains_nothing(smoke):
  _, workdir, _, rows = smoke
  assert_rerun_trains_nothing(EXPERIMENT + ":smoke", workdir)
  assert len(results.read_records(os.path.join(workdir, results.RESULTS))) == len(rows)


@pytest.mark.parametrize("change,match", [
    (lambda c: c.pretrain.data.update(classes=(0, 1, 2, 3, 4, 5)), "overlaps the held-out"),
    (lambda c: c.pretrain.data.update(source="synthetic"), "digits"),
    (lambda c: setattr(c, "labels_per_class", (0,)), "labels_per_class"),
    (lambda c: setattr(c, "draws", 0), "draws"),
    (lambda c: c.attributes.update(noise=1.0), "attributes.noise"),
    (lambda c: c.attributes.update(bins=1), "attributes.bins"),
    (lambda c: setattr(c, "l2", 0.0), "l2"),
    (lambda c: setattr(c, "seeds", ()), "seeds"),
])
def test_bad_config_fails_before_training(never_trains, change, match):
  config = allo_study_config.get_config("smoke")
  change(config)
  with pytest.raises(ConfigError, match=match):
    study.build(config)
