"""The simulated spirometry cohort: layout, GLI-normal healthy lungs, severity's effect on the
curve, the stated noise rates, outcomes, genetics, determinism and bad config.

Statistical checks use the seeded draws (fixed, so a pass is a pass every time) with bounds a
correct model passes for any seed: 4 standard errors, or a test's p-value above 0.001.
"""

import ml_collections
import numpy as np
import pandas as pd
import pyspiro
import pytest
from scipy import stats

from jaxml.data import load_dataset
from jaxml.data import spirometry_reference as reference
from jaxml.data.check import check_examples
from jaxml.data.sources import spirometry
from jaxml.data.spirogram import concavity
from jaxml.errors import ConfigError

SMALL = {"train_individuals": 1200, "test_individuals": 600, "num_snps": 500}


@pytest.fixture(scope="module")
def arrays():
  return spirometry.cohort({**SMALL, "cough": 0.2, "early_termination": 0.1})


def gli_z(arrays, parameter, values):
  """z-scores from pyspiro's public, vectorised GLI_2012.compute."""
  frame = pd.DataFrame({"sex": arrays["sex"], "age": arrays["age"],
                        "height": arrays["height"], "ethnicity": arrays["ancestry"] + 1,
                        "value": values})
  gli = pyspiro.GLI_2012()
  gli.set_strategy("closest")
  return gli.compute(frame, getattr(gli.Parameters, parameter), value_col="value",
                     ethnicity_col="ethnicity", metrics=("zscore",))["zscore"].to_numpy(float)


def test_loads_a_classification_dataset_of_flow_volume_curves():
  config = ml_collections.ConfigDict({"source": "spirometry", "train_individuals": 60,
                                      "test_individuals": 20, "num_snps": 50,
                                      "volume_time": True})
  dataset = load_dataset(config)
  assert dataset.fields["flow_volume"].shape == (1000, 1)
  assert dataset.fields["volume_time"].shape == (1500, 1)
  task = dataset.task
  assert (task.kind, task.inputs, task.target, task.num_classes) == (
      "classification", ("flow_volume",), "label", 2)
  assert set(dataset.fields) == {"flow_volume", "volume_time", *spirometry.EXAMPLE_FIELDS}
  for split in (dataset.train, dataset.test):
    check_examples(split, dataset.fields, np.arange(len(split)))
  assert (len(dataset.train), len(dataset.test)) == (60, 20)
  np.testing.assert_array_equal(dataset.test.arrays["individual"], np.arange(60, 80))
  # Input volume–time and the cohort's agree (the Dataset is a view of `cohort`).
  whole = spirometry.cohort(config)
  np.testing.assert_array_equal(dataset.train.arrays["volume_time"][..., 0],
                                whole["volume_time"][:60])


def test_fev1_is_below_fvc_for_everyone(arrays):
  assert np.all(arrays["fev1"] < arrays["fvc"])
  assert np.all(arrays["fev1_true"] < arrays["fvc_true"])
  np.testing.assert_allclose(arrays["ratio"], arrays["fev1"] / arrays["fvc"], rtol=1e-6)


@pytest.mark.parametrize("parameter,key", [("FEV1", "fev1_true"), ("FVC", "fvc_true"),
                                           ("FEV1FVC", "ratio_true"), ("FEV1", "fev1"),
                                           ("FVC", "fvc"), ("FEV1FVC", "ratio")])
def test_healthy_lungs_have_standard_normal_gli_z_scores(arrays, parameter, key):
  # True values do not depend on the blow; measured ones only on artefact-free blows.
  healthy = arrays["severity"] == 0
  if not key.endswith("_true"):
    healthy &= (arrays["cough"] == 0) & (arrays["early_stop"] == 0)
  z = gli_z(arrays, parameter, arrays[key])[healthy]
  n = len(z)
  assert n > 800
  assert abs(z.mean()) < 4 / np.sqrt(n)
  assert abs(z.std() - 1) < 4 / np.sqrt(2 * n)
  assert stats.kstest(z, "norm").pvalue > 0.01
  # The ratio's LLN is GLI's 5th centile: 5% of healthy people fall below it.
  if key == "ratio_true":
    below = int(np.sum(arrays["ratio_true"][healthy] < arrays["lln"][healthy]))
    assert stats.binomtest(below, n, 0.05).pvalue > 0.001


def test_lower_limit_field_is_the_gli_lower_limit(arrays):
  np.testing.assert_allclose(arrays["lln"][:5], reference.lln(reference.gli_lms(
      "FEV1FVC", arrays["sex"][:5], arrays["age"][:5], arrays["height"][:5],
      arrays["ancestry"][:5] + 1)), rtol=1e-6)


def test_severity_lowers_ratio_and_pef_and_scoops_the_limb(arrays):
  severity = arrays["severity"]
  bins = [severity == 0, (severity > 0) & (severity <= 0.5),
          (severity > 0.5) & (severity <= 1), severity > 1]
  clean = (arrays["cough"] == 0) & (arrays["early_stop"] == 0)
  ratio = [arrays["ratio"][b & clean].mean() for b in bins]
  pef = [arrays["pef"][b & clean].mean() for b in bins]
  scoop = [np.mean([concavity(c) for c in arrays["flow_volume"][b & clean]]) for b in bins]
  assert all(b.sum() >= 20 for b in bins)
  assert np.all(np.diff(ratio) < 0) and np.all(np.diff(pef) < 0)
  assert np.all(np.diff(scoop) > 0)
  # Per person, too: the curvature (limb exponent) grows with severity among the diseased.
  diseased = severity > 0
  assert stats.spearmanr(severity[diseased], arrays["curvature"][diseased])[0] > 0.5
  assert stats.spearmanr(severity[diseased], arrays["ratio_true"][diseased])[0] < -0.5


def test_label_noise_rates_are_the_configured_ones(arrays):
  cases, controls = arrays["copd"] == 1, arrays["copd"] == 0
  missed = int(np.sum(arrays["label"][cases] == 0))
  assert stats.binomtest(missed, int(cases.sum()), 0.4).pvalue > 0.001
  false = int(np.sum(arrays["label"][controls] == 1))
  assert stats.binomtest(false, int(controls.sum()), 0.02).pvalue > 0.001
  n = len(arrays["copd"])
  assert stats.binomtest(int(arrays["cough"].sum()), n, 0.2).pvalue > 0.001
  assert stats.binomtest(int(arrays["early_stop"].sum()), n, 0.1).pvalue > 0.001
  # True status is severity plus airflow limitation on the true ratio.
  np.testing.assert_array_equal(arrays["copd"], (arrays["severity"] > 0)
                                & (arrays["ratio_true"] < arrays["lln"]))
  # Early termination cuts the FVC (so the measured ratio rises), never FEV1 at 1 s.
  stopped = arrays["early_stop"] == 1
  assert np.all(arrays["fvc"][stopped] <= arrays["fvc_true"][stopped] + 5e-4)  # 1 mL steps
  assert np.mean(arrays["fvc"][stopped] / arrays["fvc_true"][stopped]) < 0.97
  np.testing.assert_allclose(arrays["fev1"][stopped], arrays["fev1_true"][stopped],
                             rtol=0.05)


def test_outcomes_follow_severity_and_the_weibull_model():
  values = spirometry.settings({**SMALL, "dropout_rate": 0.0})
  arrays = spirometry.cohort(values)
  copd = arrays["copd"] == 1
  assert arrays["hospitalised"][copd].mean() > 2 * arrays["hospitalised"][~copd].mean()
  assert np.all(arrays["survival_time"] <= values["follow_up"] + 1e-4)
  np.testing.assert_array_equal(arrays["event"] == 0,
                                np.isclose(arrays["survival_time"], values["follow_up"]))
  hazard = np.exp(values["mortality_severity"] * arrays["severity"]
                  + values["mortality_age"] * (arrays["age"] - 55) / 10
                  + 0.3 * arrays["sex"])
  p = 1 - np.exp(-(values["follow_up"] / values["survival_scale"])
                 ** values["survival_shape"] * hazard)
  assert abs(arrays["event"].sum() - p.sum()) < 4 * np.sqrt(np.sum(p * (1 - p)))
  expected_hospital = 1 / (1 + np.exp(-(values["hospital_intercept"]
                                        + values["hospital_severity"] * arrays["severity"]
                                        + 0.3 * (arrays["age"] - 55) / 10)))
  assert abs(arrays["hospitalised"].sum() - expected_hospital.sum()) < 4 * np.sqrt(
      np.sum(expected_hospital * (1 - expected_hospital)))


def test_causal_snps_are_associated_with_severity_and_null_snps_are_not():
  arrays = spirometry.cohort({**SMALL, "num_snps": 1000, "ancestry_proportions": (1.0,),
                              "fst": 0.0, "heritability": 0.5})
  genotypes = arrays["genotypes"].astype(float)
  assert arrays["genotypes"].dtype == np.int8 and set(np.unique(genotypes)) <= {0, 1, 2}

  def chi2(phenotype):
    x = genotypes - genotypes.mean(0)
    y = phenotype - phenotype.mean()
    r = (x.T @ y) / np.sqrt((x**2).sum(0) * (y**2).sum())
    return len(y) * r**2, np.sign(r)

  causal = arrays["causal"]
  null = np.setdiff1d(np.arange(genotypes.shape[1]), causal)
  for phenotype in (arrays["liability"], arrays["severity"]):
    statistic, sign = chi2(phenotype)
    # Null SNPs: chi-square(1), mean 1 within 4 se, and 1% below p = 0.01 (binomial).
    assert abs(statistic[null].mean() - 1) < 4 * np.sqrt(2 / len(null))
    hits = int(np.sum(stats.chi2.sf(statistic[null], 1) < 0.01))
    assert stats.binomtest(hits, len(null), 0.01).pvalue > 0.001
    # Causal SNPs: far more signal, in the direction of their effects.
    assert statistic[causal].mean() > 5
    strong = stats.chi2.sf(statistic[causal], 1) < 0.01
    assert strong.sum() >= len(causal) // 3
    np.testing.assert_array_equal(sign[causal][strong], np.sign(arrays["effects"][strong]))


def test_deterministic_and_each_person_stable_under_cohort_size_and_rates():
  small = {"train_individuals": 40, "test_individuals": 10, "num_snps": 100}
  first, again = spirometry.cohort(small), spirometry.cohort(small)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  other = spirometry.cohort({**small, "seed": 1})
  assert not np.array_equal(first["flow_volume"], other["flow_volume"])
  more = spirometry.cohort({**small, "train_individuals": 70})
  for key in ("flow_volume", "volume_time", "genotypes", "severity", "label", "age",
              "survival_time"):
    np.testing.assert_array_equal(more[key][:50], first[key])
  noisier = spirometry.cohort({**small, "underdiagnosis": 0.9})
  for key in ("flow_volume", "copd", "severity", "hospitalised"):
    np.testing.assert_array_equal(noisier[key], first[key])
  assert noisier["label"][first["copd"] == 1].sum() <= first["label"][first["copd"] == 1].sum()


@pytest.mark.parametrize("key,value", [
    ("train_individuals", 0), ("num_causal", 10_000), ("underdiagnosis", 1.5),
    ("fst", -0.1), ("ancestry_proportions", (0.5, 0.6)), ("grid", "log"),
    ("max_age", 20.0), ("duration", 0.5), ("volume_time", "yes"), ("heritability", 1.0)])
def test_bad_config_is_one_error_naming_the_key(key, value):
  with pytest.raises(ConfigError, match=f"data.{key}"):
    spirometry.settings({key: value})
