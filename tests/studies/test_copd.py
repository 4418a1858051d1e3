"""The COPD study (jaxml/studies/copd.py) through the launcher at smoke size: rows for every part
and scorer; the ML liability's AUROC equals scikit-learn's on the mean P(COPD) of the trained
ensemble's members against the cohort's TRUE status; the rules' and the logistic regressions'
AUROCs equal scikit-learn's on the cohort's own arrays; the clean run differs from the noisy
one in its labels only; a rerun trains nothing and adds no row; bad configs fail before
anything trains."""

import json
import os

import numpy as np
import pytest
from sklearn import metrics as sk_metrics
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from experiments import copd_study as copd_study_config
from jaxml import runner, trained
from jaxml.core.mesh import make_mesh
from jaxml.data.sources import spirometry
from jaxml.errors import ConfigError
from jaxml.studies import copd as study
from jaxml.studies import results
from tests.launch_utils import (assert_config_and_headline, assert_rerun_trains_nothing,
                                run_launcher)

pytestmark = pytest.mark.xdist_group("copd_study")
EXPERIMENT = "experiments/copd_study.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  """One smoke run of the study (one seed, two 2-member ensembles of 20 steps) through the
  launcher: also this config's launcher smoke test (tests/test_launcher.py leaves it here)."""
  config = copd_study_config.get_config("smoke")
  workdir = tmp_path_factory.mktemp("copd_study")
  proc = run_launcher(EXPERIMENT + ":smoke", workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {tuple(r["key"]): r for r in results.read_records(
      os.path.join(workdir, results.RESULTS))}
  (seed,) = config.seeds
  cohort = spirometry.cohort(study.run_config(config, seed, "noisy").data)
  return config, workdir, proc, rows, seed, cohort


@pytest.fixture(scope="module")
def loaded(smoke):
  """The study's two trained ensembles, opened once: {"noisy": TrainedRun, "clean": ...}."""
  workdir, seed = smoke[1], smoke[4]
  return {labels: trained.load(study.run_dir(str(workdir), labels, seed))
          for labels in ("noisy", "clean")}


def test_rows_for_every_part_and_scorer(smoke):
  config, workdir, proc, rows, seed, _ = smoke
  assert_config_and_headline(EXPERIMENT, proc, workdir)
  assert set(rows) == {(part, seed) for part in study.PARTS}
  scores = rows[("scores", seed)]
  for outcome in study.OUTCOMES:
    for scorer in study.SCORERS:
      for metric in study.METRICS:
        stem = f"{outcome}/{scorer}/{metric}"
        assert scores[f"{stem}_lower"] <= scores[stem] <= scores[f"{stem}_upper"], stem
        if scorer != study.REFERENCE:
          diff = f"{outcome}/{scorer}_minus_ratio/{metric}"
          ratio = scores[f"{outcome}/ratio/{metric}"]
          assert scores[diff] == pytest.approx(scores[stem] - ratio)
  assert os.path.exists(os.path.join(workdir, "artifacts", "copd.md"))
  for plot in ("pr_copd.png", "pr_hospitalised.png", "km_liability.png", "km_ratio.png"):
    assert os.path.getsize(os.path.join(workdir, "artifacts", plot)) > 0, plot


def test_liability_auroc_is_sklearns_on_the_ensembles_predictions(smoke, loaded):
  _, _, _, rows, seed, cohort = smoke
  run = loaded["noisy"]
  probabilities, _ = run.predict(run.dataset.test)
  probabilities = np.asarray(probabilities)
  assert probabilities.shape == (len(run.dataset.test), run.config.replicas.count, 2)
  test = cohort["split"] == 1
  np.testing.assert_array_equal(run.dataset.test.arrays["individual"],
                                np.flatnonzero(test))
  score = probabilities[..., 1].mean(axis=1)
  expected = sk_metrics.roc_auc_score(cohort["copd"][test], score)
  assert rows[("scores", seed)]["copd/ml_noisy/auroc"] == pytest.approx(expected, abs=1e-9)
  expected = sk_metrics.average_precision_score(cohort["hospitalised"][test], score)
  assert rows[("scores", seed)]["hospitalised/ml_noisy/auprc"] == pytest.approx(expected,
                                                                               abs=1e-9)


def test_the_runs_logged_binary_auroc_is_sklearns_per_member(smoke, loaded):
  """The classifier's evaluation logs AUROC/AUPRC of a binary task (against the dataset's
  target, the NOISY label): each member's equals sklearn's on that member's P(COPD), and the
  logged `eval/auroc` is the members' mean."""
  workdir, seed = smoke[1], smoke[4]
  run = loaded["noisy"]
  probabilities, labels = run.predict(run.dataset.test)
  probabilities, labels = np.asarray(probabilities), np.asarray(labels)
  np.testing.assert_array_equal(labels, run.dataset.test.arrays["label"])
  with open(os.path.join(study.run_dir(str(workdir), "noisy", seed), "artifacts",
                         "summary.json")) as f:
    summary = json.load(f)
  aurocs = []
  for r in range(run.config.replicas.count):
    want = sk_metrics.roc_auc_score(labels, probabilities[:, r, 1])
    assert summary[f"eval/replica{r}/auroc"] == pytest.approx(want, abs=1e-9), r
    assert summary[f"eval/replica{r}/auprc"] == pytest.approx(
        sk_metrics.average_precision_score(labels, probabilities[:, r, 1]), abs=1e-9), r
    aurocs.append(want)
  assert summary["eval/auroc"] == pytest.approx(np.mean(aurocs), abs=1e-9)


def test_rules_and_logistic_regression_aurocs_are_sklearns(smoke):
  _, _, _, rows, seed, cohort = smoke
  test = cohort["split"] == 1
  ratio, copd = cohort["ratio"][test], cohort["copd"][test]
  row = rows[("scores", seed)]
  assert row["copd/ratio/auroc"] == pytest.approx(sk_metrics.roc_auc_score(copd, -ratio))
  assert row["copd/gold/auroc"] == pytest.approx(sk_metrics.roc_auc_score(copd, ratio < 0.7))
  assert row["copd/lln/auroc"] == pytest.approx(
      sk_metrics.roc_auc_score(copd, ratio < cohort["lln"][test]))
  x = np.stack([cohort[f] for f in study.FEATURES], 1).astype(np.float64)
  for target, scorer in (("label", "logreg_noisy"), ("copd", "logreg_clean")):
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x[~test], cohort[target][~test])
    expected = sk_metrics.roc_auc_score(copd, model.predict_proba(x[test])[:, 1])
    assert row[f"copd/{scorer}/auroc"] == pytest.approx(expected, abs=1e-6)


def test_clean_run_differs_in_labels_only(smoke, loaded):
  cohort = smoke[5]
  noisy, clean = loaded["noisy"].dataset, loaded["clean"].dataset
  test = cohort["split"] == 1
  np.testing.assert_array_equal(clean.train.arrays["label"], cohort["copd"][~test])
  np.testing.assert_array_equal(noisy.train.arrays["label"], cohort["label"][~test])
  assert (noisy.train.arrays["label"] != clean.train.arrays["label"]).any()
  for name in ("flow_volume", "copd", "ratio", "survival_time"):
    np.testing.assert_array_equal(noisy.train.arrays[name], clean.train.arrays[name])


def test_survival_row_is_the_saved_scores(smoke):
  _, workdir, _, rows, seed, _ = smoke
  with np.load(study.scores_path(str(workdir), seed)) as saved:
    arrays = dict(saved)
  assert rows[("survival", seed)] == {**study.survival_row(arrays), "key": ["survival", seed],
                                      "fingerprint": rows[("survival", seed)]["fingerprint"]}


def test_rerun_reuses_rows_and_trains_nothing(smoke):
  _, workdir, _, rows, _, _ = smoke
  assert_rerun_trains_nothing(EXPERIMENT + ":smoke", workdir)
  again = results.read_records(os.path.join(workdir, results.RESULTS))
  assert len(again) == len(rows)


@pytest.mark.parametrize("change,match", [
    (lambda c: c.run.data.update(source="digits"), "spirometry"),
    (lambda c: setattr(c, "resamples", 0), "resamples"),
    (lambda c: setattr(c, "seeds", ()), "seeds"),
    (lambda c: c.run.data.update(underdiagnosis=2.0), "underdiagnosis"),
    (lambda c: c.gwas.update(threshold=0.0), "threshold"),
])
def test_bad_config_fails_before_training(never_trains, change, match):
  config = copd_study_config.get_config("smoke")
  change(config)
  with pytest.raises(ConfigError, match=match):
    study.build(config)


def test_gpu_variant_passes_every_check_that_needs_no_data():
  """The GPU variant (not run in CI: 20,000 people at width 64) is a good study config, and
  its run passes the runner's and the classifier's checks on the 8 simulated devices."""
  config = copd_study_config.get_config("gpu")
  study.validate(config)
  run = study.run_config(config, 0, "noisy")
  runner.require_settings(run)
  runner.check_config(run, make_mesh())
  assert (run.model.width, run.data.train_individuals, run.replicas.count) == (64, 20_000, 5)
  assert run.num_steps == run.eval_every == run.checkpoint_every  # the study reads the end
