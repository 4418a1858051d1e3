"""copd_gwas.gwas_rows on a small simulated spirometry cohort: its rows equal the gwas
module's tests called directly with independently built covariates (PCs over the union of the
phenotypes' rows) and metrics recomputed in NumPy/SciPy; NaN rows are the same as a cohort cut
to the other rows; the true liability finds more causal loci than the noisy label; PCs remove
the inflation an ancestry-dependent environment causes; a phenotype agrees with itself;
plots are written; bad input is one ConfigError."""

import numpy as np
import pytest
from scipy import stats

from jaxml.core.mesh import make_mesh
from jaxml.data.sources import spirometry
from jaxml.errors import ConfigError
from jaxml.evaluators import gwas, gwas_pca
from jaxml.studies import copd_gwas

# Two equal ancestry groups drifted apart (F_ST 0.1), strong causal loci: a cohort of 800
# (600 in the test split) where the liability has clear power and structure is visible.
DATA = {"train_individuals": 200, "test_individuals": 600, "num_snps": 500, "num_causal": 20,
        "heritability": 0.5, "fst": 0.1, "ancestry_proportions": (0.5, 0.5), "duration": 3.0}
THRESHOLD = 1e-4  # a cohort of hundreds has little power at 5e-8
NUM_PCS = 3


@pytest.fixture(scope="module")
def cohort():
  return spirometry.cohort(DATA)


def _phenotypes(cohort):
  """As a study scores them, over the test split alone (NaN on the training split); but
`stratified`, the liability plus an environment that differs by ancestry group (which the PCs
must absorb), over everybody, so the union the PCs are computed on is all 800."""
  test = cohort["split"] == 1
  on_test = lambda v: np.where(test, np.asarray(v, np.float64), np.nan)  # noqa: E731
  return {"liability": on_test(cohort["liability"]), "ratio": on_test(cohort["ratio"]),
          "label": on_test(cohort["label"]),
          "stratified": cohort["liability"] + 0.5 * cohort["ancestry"]}


@pytest.fixture(scope="module")
def study(cohort, tmp_path_factory):
  artifacts = tmp_path_factory.mktemp("artifacts")
  phenotypes = _phenotypes(cohort)
  rows = copd_gwas.gwas_rows(cohort, phenotypes, binary=("label",), num_pcs=NUM_PCS,
                             threshold=THRESHOLD, reference="liability",
                             artifacts_dir=str(artifacts))
  return phenotypes, rows, artifacts


def _expected_row(result, causal, effects, threshold):
  """A row recomputed from an Association with NumPy/SciPy (not through gwas_metrics)."""
  p = np.nan_to_num(result.p, nan=1.0)
  null = np.setdiff1d(np.arange(len(p)), causal)
  out = {"causal_found": int(np.sum(p[causal] < threshold)),
         "false_discoveries": int(np.sum(p[null] < threshold)),
         "significant": int(np.sum(p < threshold)), "causal_total": len(causal),
         "min_causal_p": float(p[causal].min()),
         "lambda_gc": float(np.median(stats.chi2.isf(result.p[np.isfinite(result.p)], 1))
                            / stats.chi2.ppf(0.5, 1)),
         "truth_r": float(stats.pearsonr(result.beta[causal], effects).statistic),
         "truth_slope": float(stats.linregress(effects, result.beta[causal]).slope)}
  for looser in copd_gwas.LOOSER_THRESHOLDS:
    key = copd_gwas.threshold_key(looser)
    out[f"causal_found_{key}"] = int(np.sum(p[causal] < looser))
    out[f"false_discoveries_{key}"] = int(np.sum(p[null] < looser))
  out["power"] = out["causal_found"] / len(causal)
  return out


def test_rows_equal_direct_association(cohort, study):
  phenotypes, rows, _ = study
  assert copd_gwas.threshold_key(1e-5) == "p1e-05"
  # The covariates built by hand: PCs of everybody's genotypes (the union of the rows).
  pcs, _ = gwas_pca.principal_components(cohort["genotypes"], NUM_PCS)
  covariates = np.column_stack([cohort["age"], cohort["sex"], cohort["height"], pcs])
  causal, effects = cohort["causal"], cohort["effects"]
  direct = {}
  for name, y in phenotypes.items():
    test = gwas.logistic_association if name == "label" else gwas.linear_association
    direct[name] = result = test(cohort["genotypes"], y, covariates)
    row = rows[name]
    assert row["num_samples"] == int(np.sum(~np.isnan(y))) == result.num_samples.max()
    expected = _expected_row(result, causal, effects, THRESHOLD)
    for key, value in expected.items():
      np.testing.assert_allclose(row[key], value, rtol=1e-6, err_msg=f"{name} {key}")
  assert rows["label"]["num_cases"] == int(np.nansum(phenotypes["label"]))
  assert "num_cases" not in rows["ratio"]
  # Agreement with the reference's betas, over the three SNP sets.
  reference = direct["liability"]
  hits = {name: {int(i) for i, p in enumerate(result.p) if p < THRESHOLD}
          for name, result in direct.items()}
  for name, result in direct.items():
    sets = {"causal": causal, "both": sorted(hits[name] & hits["liability"]),
            "either": sorted(hits[name] | hits["liability"])}
    for label, snps in sets.items():
      snps = np.asarray(snps, np.int64)
      x, y = reference.beta[snps], result.beta[snps]
      assert rows[name][f"num_{label}"] == len(snps)
      if len(snps) < 3:
        assert np.isnan(rows[name][f"effect_r2_{label}"])
        continue
      fit = stats.linregress(x, y)
      np.testing.assert_allclose(
          [rows[name][f"effect_r2_{label}"], rows[name][f"effect_slope_{label}"],
           rows[name][f"sign_agreement_{label}"]],
          [fit.rvalue**2, fit.slope, np.mean(np.sign(x) == np.sign(y))], rtol=1e-6,
          err_msg=f"{name} {label}")
  # The cohort is sized so that the sets are not empty: the comparison above compared.
  assert rows["ratio"]["num_either"] >= 3 and rows["label"]["num_either"] >= 3


def test_reference_agrees_with_itself(study):
  _, rows, _ = study
  row = rows["liability"]
  for label in ("causal", "both", "either"):
    np.testing.assert_allclose([row[f"effect_r2_{label}"], row[f"effect_slope_{label}"],
                                row[f"sign_agreement_{label}"]], 1.0, rtol=1e-12)
  assert row["num_both"] == row["num_either"] == row["significant"]
  # FEV1/FVC falls as the liability rises: its betas run against the liability's.
  assert rows["ratio"]["effect_slope_causal"] < 0 and rows["ratio"]["truth_r"] < 0


def test_true_liability_has_more_power_than_noisy_label(study):
  """The paper's point: a quantitative, less noisy phenotype finds more loci (both on the
  same 600 test individuals)."""
  _, rows, _ = study
  liability, label = rows["liability"], rows["label"]
  for key in ("causal_found", f"causal_found_{copd_gwas.threshold_key(1e-5)}"):
    assert liability[key] >= label[key] + 4, (key, liability[key], label[key])
  assert liability["min_causal_p"] < label["min_causal_p"] * 1e-3
  assert liability["truth_r"] > label["truth_r"]


def test_pcs_remove_stratification(cohort, study):
  """`stratified` = liability + 0.5 per ancestry group: with the PCs its lambda_GC is that of
  a calibrated test; without them it is far inflated and non-causal SNPs turn up."""
  phenotypes, rows, _ = study
  bare = copd_gwas.gwas_rows(cohort, {"stratified": phenotypes["stratified"]}, num_pcs=0,
                             threshold=THRESHOLD)["stratified"]
  corrected = rows["stratified"]
  # 480 null SNPs: lambda_GC's sampling SD is about 0.1 (1 / (2 f(m) sqrt(M)) / m).
  assert abs(corrected["lambda_gc"] - 1) < 0.2
  assert bare["lambda_gc"] > 2
  assert corrected["false_discoveries"] <= 1 < 5 < bare["false_discoveries"]


def test_nan_rows_equal_a_cut_cohort(cohort):
  """Individuals with a NaN phenotype are out of the analysis, PCs included: the rows equal
  those of the cohort cut to the other individuals."""
  phenotypes = _phenotypes(cohort)
  phenotypes = {k: phenotypes[k] for k in ("ratio", "label")}
  keep = cohort["split"] == 1
  n = len(keep)
  cut = {k: (v[keep] if np.ndim(v) >= 1 and len(v) == n else v) for k, v in cohort.items()}
  kwargs = {"binary": ("label",), "num_pcs": 2, "threshold": THRESHOLD, "reference": "ratio"}
  rows = copd_gwas.gwas_rows(cohort, phenotypes, **kwargs)
  cut_rows = copd_gwas.gwas_rows(cut, {k: v[keep] for k, v in phenotypes.items()}, **kwargs)
  assert rows.keys() == cut_rows.keys()
  for name, row in rows.items():
    assert row.keys() == cut_rows[name].keys()
    for key, value in row.items():
      np.testing.assert_allclose(value, cut_rows[name][key], rtol=1e-5, atol=1e-12,
                                 err_msg=f"{name} {key}")


def test_mesh_changes_nothing(cohort):
  """The association's SNPs sharded over the 8 simulated devices: the same row. (Without PCs:
  sharding the PCA here costs ~40 s of compiling; tests/evaluators/test_gwas_pca.py holds it
  equal sharded.)"""
  ratio = {"ratio": _phenotypes(cohort)["ratio"]}
  single = copd_gwas.gwas_rows(cohort, ratio, num_pcs=0, threshold=THRESHOLD)["ratio"]
  sharded = copd_gwas.gwas_rows(cohort, ratio, num_pcs=0, threshold=THRESHOLD,
                                mesh=make_mesh())["ratio"]
  assert single.keys() == sharded.keys()
  for key, value in single.items():
    np.testing.assert_allclose(sharded[key], value, rtol=1e-4, err_msg=key)


def test_plots_written(study):
  _, _, artifacts = study
  names = ("liability", "ratio", "label", "stratified")
  expected = {f"gwas_{n}_{kind}.png" for n in names for kind in ("manhattan", "qq")}
  expected |= {f"gwas_{n}_effects.png" for n in names if n != "liability"}
  assert {p.name for p in artifacts.iterdir()} == expected
  for name in expected:
    assert (artifacts / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("change, message", [
    (lambda c, p: ({**p, "ratio": p["ratio"][:-1]}, {}), "'ratio' has shape"),
    (lambda c, p: (p, {"reference": "fev1"}), "reference='fev1' is not among"),
    (lambda c, p: ({**p, "label": np.where(np.isnan(p["label"]), np.nan, 2.0)}, {}),
     "binary phenotype 'label' must be 0/1"),
    (lambda c, p: (p, {"binary": ("label", "copd")}), r"binary names \['copd'\]"),
    (lambda c, p: ({**p, "ratio": np.where(np.arange(len(p["ratio"])) < 6, 0.7, np.nan)},
                   {}), "'ratio' has 6 individuals, not more than its 9"),
    (lambda c, p: ({**p, "ratio": np.where(np.isnan(p["ratio"]), np.inf, p["ratio"])}, {}),
     "'ratio' has infinite values"),
    (lambda c, p: ({**p, "bad name": p["ratio"]}, {}), "phenotype name 'bad name'"),
    (lambda c, p: (p, {"num_pcs": -1}), "num_pcs=-1"),
    (lambda c, p: (p, {"threshold": 0.0}), "threshold=0.0"),
    (lambda c, p: ({}, {}), "no phenotypes"),
])
def test_bad_input_is_one_config_error(cohort, change, message):
  phenotypes = {k: v for k, v in _phenotypes(cohort).items() if k in ("ratio", "label")}
  phenotypes, extra = change(cohort, phenotypes)
  with pytest.raises(ConfigError, match=message):
    copd_gwas.gwas_rows(cohort, phenotypes, **{"binary": ("label",), "num_pcs": 4, **extra})
