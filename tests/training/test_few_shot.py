"""Few-shot probes inside a run (jaxml/training/few_shot.py): the task strings, the checks
before training, and a classifier smoke run on digits 0-4 that logs the few-shot accuracy of
its frozen features on the held-out digits 5-9, equal to the evaluator called directly on
the run's own features."""

import json

import numpy as np
import pytest

from experiments import classifier as classifier_config
from jaxml import runner, trained
from jaxml.errors import ConfigError
from jaxml.evaluators import few_shot as few_shot_lib
from jaxml.training import few_shot

SHOTS = (1, 5)


def _config(tasks="held_out=digits@5-9", **few):
  config = classifier_config.get_config("smoke")
  config.progress = False
  config.num_steps = 20
  config.log_every = 10
  config.eval_every = config.checkpoint_every = 10
  config.linear_probe.enabled = False
  config.data.classes = (0, 1, 2, 3, 4)
  config.few_shot.update({"tasks": tasks, "shots": SHOTS, "draws": 3, "every": 10, **few})
  return config


def test_task_strings_parse_to_names_sources_and_classes():
  assert few_shot.parse_tasks("") == []
  assert few_shot.parse_tasks("a=digits@5-9; b!=digits@0,2,4-5 ;c=tfds:mnist") == [
      ("a", "digits", (5, 6, 7, 8, 9)), ("b!", "digits", (0, 2, 4, 5)), ("c", "tfds:mnist", ())]


@pytest.mark.parametrize("tasks, match", [
    ("digits@5-9", "name=source"),
    ("a b=digits", "name=source"),
    ("a=digits@five", "classes 'five'"),
    ("a=digits;a=digits@1", "distinct"),
    (("a=digits",), "must be a string"),
])
def test_bad_task_strings_are_one_error_each(tasks, match):
  with pytest.raises(ConfigError, match=match):
    few_shot.parse_tasks(tasks)


@pytest.mark.parametrize("change, match", [
    ({"shots": (1, 0)}, "few_shot.shots"),
    ({"draws": 0}, "few_shot.draws"),
    ({"l2": 0.0}, "few_shot.l2"),
    ({"every": -1}, "few_shot.every"),
])
def test_bad_settings_fail_before_training(tmp_path, change, match):
  with pytest.raises(ConfigError, match=match):
    runner.run(_config(**change), str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("tasks, match", [
    ("seen=digits@3-6", r"classes \[3, 4\] are also trained on"),  # leakage
    ("all=digits", r"classes \[0, 1, 2, 3, 4\] are also trained on"),
    ("tabular=adult", "the model reads"),
])
def test_bad_probe_tasks_fail_before_training(tmp_path, tasks, match):
  with pytest.raises(ConfigError, match=match):
    runner.run(_config(tasks), str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("few_shot")
  summary = runner.run(_config(), str(workdir))
  return workdir, summary


def test_the_run_logs_the_evaluators_numbers_on_its_own_features(probed_run):
  workdir, summary = probed_run
  run = trained.load(str(workdir))
  config = run.config
  (task,) = few_shot.load_tasks(config, run.dataset, True)
  assert task.dataset.num_classes == 5  # digits 5-9, relabelled 0-4
  train_x, train_y = run.features(task.dataset.train)
  test_x, test_y = run.features(task.dataset.test)
  want = few_shot_lib.evaluate(np.asarray(train_x), np.asarray(train_y), np.asarray(test_x),
                               np.asarray(test_y), 5, shots=SHOTS, draws=3,
                               l2=float(config.few_shot.l2), seed=0, whiten=False)
  for k in SHOTS:
    assert summary[f"fewshot/held_out/{k}shot"] == pytest.approx(want[k].mean, abs=1e-5)
    assert summary[f"fewshot/held_out/{k}shot_std"] == pytest.approx(want[k].std, abs=1e-5)
  # Frozen features of digits 0-4 carry digits 5-9: 5 shots beat 1, both beat chance (0.2).
  assert summary["fewshot/held_out/5shot"] > summary["fewshot/held_out/1shot"] > 0.3


def test_every_few_shot_evaluation_is_logged(probed_run):
  workdir, _ = probed_run
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  logged = [row["step"] for row in rows if "fewshot/held_out/1shot" in row]
  assert logged == [10, 20]  # every 10 steps, and the end


def test_no_tasks_logs_nothing(tmp_path):
  summary = runner.run(_config(""), str(tmp_path))
  assert not [k for k in summary if k.startswith("fewshot/")]


def test_a_marked_overlap_is_measured(tmp_path):
  summary = runner.run(_config("seen!=digits@3-6", every=0), str(tmp_path))
  assert "fewshot/seen/5shot" in summary and "fewshot/seen!/5shot" not in summary


def test_replicas_log_each_members_probe_and_their_mean(tmp_path):
  config = _config(every=0)
  config.replicas.count = 2
  summary = runner.run(config, str(tmp_path))
  run = trained.load(str(tmp_path))
  (task,) = few_shot.load_tasks(run.config, run.dataset, True)
  train_x, train_y = (np.asarray(a) for a in run.features(task.dataset.train))
  test_x, test_y = (np.asarray(a) for a in run.features(task.dataset.test))
  assert train_x.ndim == 3 and train_x.shape[1] == 2  # [N, R, D]
  for k in SHOTS:
    each = [few_shot_lib.evaluate(train_x[:, r], train_y, test_x[:, r], test_y, 5,
                                  shots=(k,), draws=3, l2=float(config.few_shot.l2))[k].mean
            for r in range(2)]
    for r in range(2):
      assert summary[f"fewshot/replica{r}/held_out/{k}shot"] == pytest.approx(each[r], abs=1e-5)
    assert summary[f"fewshot/held_out/{k}shot"] == pytest.approx(np.mean(each), abs=1e-5)
