"""jaxml's GWAS equals plink2 --glm on the files jaxml writes: linear and logistic (no-firth),
with raw-scale covariates (plink2 standardises them), missing calls, a missing phenotype and a
constant SNP. plink2 prints 6 significant digits, which bounds the comparison."""

import jax
import numpy as np
import pytest

from jaxml.evaluators import gwas, gwas_plink2

pytestmark = pytest.mark.skipif(not gwas_plink2.available(), reason="plink2 not installed")
# 6 significant digits: a printed value is within 5e-6 of ours relatively (1 in the 6th digit).
PRINTED = 5e-6


def _data(n=400, s=29, seed=0):
  rng = np.random.default_rng(seed)
  g = rng.binomial(2, rng.uniform(0.05, 0.5, s), (n, s)).astype(np.int8)
  g[rng.random((n, s)) < 0.04] = -1
  g[:, 6] = np.where(g[:, 6] >= 0, 1, -1)
  covariates = np.stack([rng.normal(55, 8, n), rng.integers(0, 2, n), rng.normal(170, 9, n)], 1)
  liability = 0.5 * np.maximum(g[:, 2], 0) + 0.02 * (covariates[:, 0] - 55)
  y = liability + rng.normal(size=n)
  yb = (rng.random(n) < 1 / (1 + np.exp(-(liability - 0.5)))).astype(np.float64)
  y[7] = yb[9] = np.nan
  return g, y, yb, covariates


def _plink2(tmp_path, g, phenotype, covariates):
  paths = gwas_plink2.write_inputs(str(tmp_path / "x"), g, phenotype, covariates)
  return gwas_plink2.read_glm(gwas_plink2.run_glm(paths["bfile"], paths["pheno"],
                                                  str(tmp_path / "out"), paths["covar"]))


def _assert_equal(ours, theirs, rtol=PRINTED, beta_atol_in_se=0.0):
  assert (theirs["A1"] == "A").all()  # our counted allele, so betas share a sign
  tested = theirs["ERRCODE"] == "."
  np.testing.assert_array_equal(tested, ours.converged)
  np.testing.assert_array_equal(theirs["OBS_CT"][tested], ours.num_samples[tested])
  assert tested.sum() == len(tested) - 1  # the constant SNP only
  gap = np.abs(theirs["BETA"] - ours.beta)[tested]
  assert np.all(gap <= rtol * np.abs(ours.beta[tested]) + beta_atol_in_se * ours.se[tested])
  np.testing.assert_allclose(theirs["SE"][tested], ours.se[tested], rtol=rtol)
  # z = beta / SE: the beta gap, in SE units, is an absolute gap in z.
  np.testing.assert_allclose(theirs["STAT"][tested], ours.stat[tested], rtol=rtol,
                             atol=beta_atol_in_se)
  # p's relative error is its statistic's times |stat|, plus the printing.
  np.testing.assert_allclose(theirs["P"][tested], ours.p[tested],
                             rtol=PRINTED + rtol * max(1.0, np.nanmax(np.abs(ours.stat))))


def test_linear_equals_plink2(tmp_path):
  g, y, _, covariates = _data()
  theirs = _plink2(tmp_path, g, y, covariates)
  with jax.enable_x64(True):
    _assert_equal(gwas.linear_association(g, y, covariates, chunk_size=8), theirs)


def test_logistic_equals_plink2_no_firth(tmp_path):
  g, _, yb, covariates = _data(seed=1)
  theirs = _plink2(tmp_path, g, yb, covariates)
  with jax.enable_x64(True):
    ours = gwas.logistic_association(g, yb, covariates, chunk_size=8)
  # plink2 stops its iterations at a tolerance, not at the maximum: its beta was measured up to
  # 4e-6 SE from ours (visible on betas near 0) and its SE up to 6.4e-6 relative, printing
  # included.
  _assert_equal(ours, theirs, rtol=2e-5, beta_atol_in_se=2e-5)


def test_float32_run_equals_plink2(tmp_path):
  """The default precision: float32 sums over 400 samples add ~1e-6 relative."""
  g, y, _, covariates = _data(seed=2)
  theirs = _plink2(tmp_path, g, y, covariates)
  ours = gwas.linear_association(g, y, covariates, chunk_size=8)
  tested = theirs["ERRCODE"] == "."
  for column, field in (("BETA", "beta"), ("SE", "se"), ("STAT", "stat")):
    np.testing.assert_allclose(theirs[column][tested], getattr(ours, field)[tested], rtol=3e-5,
                               atol=3e-5 * np.median(ours.se[tested]), err_msg=column)


def test_no_covariates_equals_plink2(tmp_path):
  g, y, yb, _ = _data(seed=3)
  # plink2's logistic iterations stop at a tolerance: here its SE was measured up to 1.1e-5
  # relative from the maximum's and z 3.7e-5 (at z = 3.7), its linear test to its printing.
  for phenotype, test, rtol in ((y, gwas.linear_association, PRINTED),
                                (yb, gwas.logistic_association, 5e-5)):
    paths = gwas_plink2.write_inputs(str(tmp_path / "x"), g, phenotype)
    assert "covar" not in paths
    theirs = gwas_plink2.read_glm(gwas_plink2.run_glm(paths["bfile"], paths["pheno"],
                                                      str(tmp_path / "out")))
    with jax.enable_x64(True):
      _assert_equal(test(g, phenotype), theirs, rtol=rtol, beta_atol_in_se=rtol)
