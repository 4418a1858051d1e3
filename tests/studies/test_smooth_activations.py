"""The smooth-activations study (jaxml/studies/smooth_activations.py): its measures equal NumPy
formulas, its PD equals the one the runner logged while training, a rerun trains nothing, and
bad configs fail before anything trains."""

import itertools
import json
import os

import numpy as np
import pytest

from experiments import smooth_activations as smooth_activations_config
from jaxml import runner, trained
from jaxml.errors import ConfigError
from jaxml.studies import smooth_activations as study
from tests.launch_utils import assert_config_and_headline, run_launcher

pytestmark = pytest.mark.xdist_group("smooth_activations")
EXPERIMENT = "experiments/smooth_activations.py"


def _numpy_topk_swap(a, b, k):
  top_a, top_b = np.argsort(-a, axis=-1)[..., :k], np.argsort(-b, axis=-1)[..., :k]
  return np.mean([1 - len(set(x) & set(y)) / k for x, y in zip(top_a, top_b)])


def _pairs(values, fn):
  per_pair = [fn(values[i], values[j]) for i, j in itertools.combinations(range(len(values)), 2)]
  return np.mean(per_pair), np.std(per_pair, ddof=1)


@pytest.mark.parametrize("ensemble_of", [1, 2])
def test_binary_measures_equal_numpy(ensemble_of):
  rng = np.random.default_rng(0)
  n, count = 250, 6
  p1 = rng.uniform(0.01, 0.99, (n, count))
  probs, labels = np.stack([1 - p1, p1], axis=-1), rng.integers(0, 2, n)
  row = study.measure(probs, labels, ensemble_of=ensemble_of)
  members = p1.reshape(n, count // ensemble_of, ensemble_of).mean(-1).T  # [M, N]
  assert row["members"] == count // ensemble_of
  loss = [-np.mean(np.log(np.where(labels == 1, m, 1 - m))) for m in members]
  accuracy = [np.mean((m > 0.5) == labels) for m in members]
  assert row["loss_mean"] == pytest.approx(np.mean(loss), rel=1e-9)
  assert row["loss_sd"] == pytest.approx(np.std(loss, ddof=1), rel=1e-9)
  assert row["accuracy_mean"] == pytest.approx(np.mean(accuracy))
  expected = {
      "pd": _pairs(members, lambda a, b: np.mean(np.abs(a - b) / ((a + b) / 2))),
      "l1": _pairs(members, lambda a, b: np.mean(2 * np.abs(a - b))),
      "top1": _pairs(members, lambda a, b: np.mean((a > 0.5) != (b > 0.5))),
      "swap": _pairs(members[:, :200].reshape(len(members), 2, 100),
                     lambda a, b: _numpy_topk_swap(a, b, study.SWAP_K)),
  }
  for name, (mean, sd) in expected.items():
    assert row[f"{name}_mean"] == pytest.approx(mean, rel=1e-5, abs=1e-7), name
    assert row[f"{name}_sd"] == pytest.approx(sd, rel=1e-4, abs=1e-7), name
  assert row["pd_kind"] == "relative"


def test_multiclass_pd_is_the_l1_pd():
  rng = np.random.default_rng(1)
  probs = rng.dirichlet(np.ones(5), size=(40, 3))
  row = study.measure(probs, rng.integers(0, 5, 40))
  mean, _ = _pairs(np.moveaxis(probs, 1, 0), lambda a, b: np.abs(a - b).sum(-1).mean())
  assert row["pd_mean"] == pytest.approx(mean, rel=1e-5) and row["pd_kind"] == "l1"
  assert "swap_mean" not in row


def _smoke_config():
  c = smooth_activations_config.get_config("smoke")
  c.progress = False
  return c


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
  """One smoke run of the study (six smoke-size click-log runs) through the launcher: it is
  also this config's launcher smoke test (tests/test_launcher.py leaves it to this one)."""
  workdir = tmp_path_factory.mktemp("smooth")
  proc = run_launcher(EXPERIMENT + ":smoke", workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert_config_and_headline(EXPERIMENT, proc, workdir)
  return workdir, json.load(open(workdir / "artifacts" / "summary.json"))


def _rows(workdir):
  return [json.loads(line) for line in open(workdir / "results.jsonl")]


def test_every_part_has_its_rows_and_artifacts(smoke):
  workdir, summary = smoke
  rows = {(r["part"], r["label"]): r for r in _rows(workdir)}
  assert set(rows) == {("activations", "relu"), ("activations", "smelu:1.0"),
                       ("ensemble", study.ENSEMBLE), ("beta", "β=3"),
                       ("shuffle", "relu, window 256"), ("shuffle", "relu, full reshuffle")}
  assert rows[("ensemble", study.ENSEMBLE)]["members"] == 3  # 6 replicas, paired
  assert rows[("shuffle", "relu, window 256")]["vary"] == "order"
  assert summary["step"] == 6
  table = open(workdir / "artifacts" / "smooth_activations.md").read()
  assert all(f"| {label} |" in table for _, label in rows)
  assert os.path.getsize(workdir / "artifacts" / "pd_vs_loss.png") > 10_000


def test_the_study_pd_equals_the_pd_the_runner_logged(smoke):
  workdir, _ = smoke
  for row in _rows(workdir):
    if row["part"] == "ensemble":
      continue  # the runner's PD is over replicas, not ensembles
    logged = json.load(open(workdir / row["workdir"] / "artifacts" / "summary.json"))
    assert row["pd_mean"] == pytest.approx(logged["eval/pd/relative"], rel=1e-4), row["label"]
    assert row["accuracy_mean"] == pytest.approx(logged["eval/accuracy"], abs=1e-6)


def test_a_row_is_what_its_run_predicts(smoke):
  workdir, _ = smoke
  row = next(r for r in _rows(workdir) if r["part"] == "activations")
  model = trained.load(str(workdir / row["workdir"]))
  probs, labels = model.predict(model.dataset.test)
  again = study.measure(probs, labels)
  assert {k: row[k] for k in again} == pytest.approx(again, nan_ok=True)


def test_a_rerun_trains_nothing_and_reports_the_same(smoke, never_trains):
  workdir, summary = smoke
  again = runner.run(_smoke_config(), str(workdir))
  numbers = {k: v for k, v in summary.items() if isinstance(v, float)}
  assert len(numbers) == 6 * 4 and {k: again[k] for k in numbers} == numbers


@pytest.mark.parametrize("changes, message", [
    ({"replicas": 1}, "replicas=1: a prediction-difference study needs R >= 2"),
    ({"activations": ("relu", "smelu:0")}, "activation 'smelu:0'"),
    ({"activations": ("relu", "relu")}, "must be distinct"),
    ({"betas": (1.0, -2.0)}, "beta must be a number > 0"),
    ({"datasets": ("clicklog", "mnist")}, "choose distinct data sets"),
    ({"vary": "seed"}, "replicas.vary='seed'"),
    ({"shuffle.datasets": ("adult",)}, "shuffle.datasets"),
])
def test_bad_configs_fail_before_anything_trains(changes, message, tmp_path, never_trains):
  config = smooth_activations_config.get_config("smoke")
  for dotted, value in changes.items():
    *parents, leaf = dotted.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
    runner.run(config, str(tmp_path))
