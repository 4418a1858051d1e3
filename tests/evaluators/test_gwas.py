"""The per-SNP association tests against statsmodels' OLS and Logit fitted one SNP at a time:
equal in float64 to round-off, in float32 to float32's precision; with missing calls (each SNP
fitted on its called samples) and missing phenotypes; chunking, padding and an 8-device mesh
change nothing and compile once."""

import jax
import numpy as np
import pytest
import statsmodels.api as sm

from jaxml.core.mesh import make_mesh
from jaxml.errors import ConfigError
from jaxml.evaluators import gwas, gwas_logistic


def _data(n=300, s=37, seed=0, missing=0.0):
  rng = np.random.default_rng(seed)
  g = rng.binomial(2, rng.uniform(0.05, 0.5, s), (n, s)).astype(np.int8)
  if missing:
    g[rng.random((n, s)) < missing] = -1
  # Raw-scale covariates (age, sex, height, a PC), as plink2 would standardise them.
  covariates = np.stack([rng.normal(55, 8, n), rng.integers(0, 2, n), rng.normal(170, 9, n),
                         rng.normal(0, 0.05, n)], 1)
  called = np.where(g >= 0, g, 1)
  liability = 0.4 * called[:, 3 % s] - 0.3 * called[:, 8 % s] + 0.03 * (covariates[:, 0] - 55)
  quantitative = liability + rng.normal(size=n)
  binary = (rng.random(n) < 1 / (1 + np.exp(-(liability - 0.7)))).astype(np.float64)
  return g, quantitative, binary, covariates


SNPS = [0, 3, 8, 17, 36]


def _reference(g, y, covariates, snp, model):
  """statsmodels on the samples with a call and a phenotype: (beta, se, stat, p, n)."""
  keep = (g[:, snp] >= 0) & ~np.isnan(y)
  x = sm.add_constant(np.column_stack([g[keep, snp], covariates[keep]]), has_constant="add")
  fit = model(y[keep], x).fit(**({"disp": 0} if model is sm.Logit else {}))
  return fit.params[1], fit.bse[1], fit.tvalues[1], fit.pvalues[1], keep.sum()


def _assert_matches(result, g, y, covariates, model, rtol):
  for snp in SNPS:
    beta, se, stat, p, n = _reference(g, y, covariates, snp, model)
    np.testing.assert_allclose([result.beta[snp], result.se[snp], result.stat[snp]],
                               [beta, se, stat], rtol=rtol, err_msg=f"SNP {snp}")
    # p's relative error is its statistic's times |stat| (d log p / d stat ~ -stat).
    np.testing.assert_allclose(result.p[snp], p, rtol=rtol * max(1.0, abs(stat)))
    np.testing.assert_allclose(result.neg_log10_p[snp], -np.log10(p), rtol=rtol, atol=1e-12)
    assert result.num_samples[snp] == n and result.converged[snp]


@pytest.mark.parametrize("missing", [0.0, 0.08])
def test_linear_equals_statsmodels_ols(missing):
  g, y, _, covariates = _data(missing=missing)
  y[[4, 50]] = np.nan  # left out of every regression
  with jax.enable_x64(True):
    exact = gwas.linear_association(g, y, covariates, chunk_size=16)
  _assert_matches(exact, g, y, covariates, sm.OLS, rtol=1e-9)
  single = gwas.linear_association(g, y, covariates, chunk_size=16)
  # float32: sums over 300 products, residualised on a float64 basis: ~1e-6 relative.
  _assert_matches(single, g, y, covariates, sm.OLS, rtol=2e-5)


def test_no_covariates_is_a_simple_regression():
  g, y, _, _ = _data(n=120, s=5, seed=2)
  result = gwas.linear_association(g, y)
  for snp in range(5):
    fit = sm.OLS(y, sm.add_constant(g[:, snp].astype(float))).fit()
    np.testing.assert_allclose([result.beta[snp], result.se[snp]], fit.params[1:2].tolist()
                               + fit.bse[1:2].tolist(), rtol=2e-5)


def test_covariate_transforms_change_nothing():
  """Only the covariates' span matters, so plink2's variance standardisation (or any invertible
  linear map, intercept included) leaves every statistic as it was."""
  g, y, yb, covariates = _data(seed=3, missing=0.03)
  mixed = (covariates - covariates.mean(0)) / covariates.std(0) @ np.array(
      [[1, 0.5, 0, 0], [0, 1, 0, 0], [0.2, 0, 2, 0], [0, 0, 0, -3.0]]) + 7.0
  with jax.enable_x64(True):
    for test, phenotype in ((gwas.linear_association, y), (gwas.logistic_association, yb)):
      a, b = test(g, phenotype, covariates), test(g, phenotype, mixed)
      np.testing.assert_allclose(a.beta, b.beta, rtol=1e-9)
      np.testing.assert_allclose(a.se, b.se, rtol=1e-9)


def test_chunking_and_padding_change_nothing_and_compile_once():
  g, y, yb, covariates = _data(seed=4, missing=0.02)
  g[:, 5] = np.where(g[:, 5] >= 0, 0, -1)  # no variation among its calls
  kernel = gwas_logistic.chunk_kernel(4)
  whole = gwas.linear_association(g, y, covariates, chunk_size=64)
  whole_logistic = gwas.logistic_association(g, yb, covariates, chunk_size=64)
  # Counted after the references compiled, so that the count does not depend on which tests
  # ran before in this process.
  before = gwas._linear_missing_chunk._cache_size()  # pylint: disable=protected-access
  logistic_before = kernel._cache_size()  # pylint: disable=protected-access
  for chunk_size in (7, 13):  # 37 SNPs: 6 and 3 chunks, the last padded; sizes no other test uses
    for test, phenotype, reference in ((gwas.linear_association, y, whole),
                                       (gwas.logistic_association, yb, whole_logistic)):
      chunked = test(g, phenotype, covariates, chunk_size=chunk_size)
      for field in ("beta", "se", "stat", "p"):
        np.testing.assert_allclose(getattr(chunked, field), getattr(reference, field),
                                   rtol=1e-5, equal_nan=True)
      np.testing.assert_array_equal(chunked.converged, reference.converged)
  # One compilation per chunk shape (two new shapes), whatever the number of chunks.
  assert gwas._linear_missing_chunk._cache_size() == before + 2  # pylint: disable=protected-access
  assert kernel._cache_size() == logistic_before + 2  # pylint: disable=protected-access
  assert np.isnan(whole.beta[5]) and not whole.converged[5]
  assert whole.converged.sum() == 36


def test_eight_devices_equal_one():
  """Data-parallel over SNPs: each chunk's SNP axis sharded over the 8-device mesh."""
  assert jax.device_count() == 8
  g, y, yb, covariates = _data(seed=5, missing=0.02)
  mesh = make_mesh()
  for test, phenotype in ((gwas.linear_association, y), (gwas.logistic_association, yb)):
    one = test(g, phenotype, covariates, chunk_size=16)
    eight = test(g, phenotype, covariates, chunk_size=16, mesh=mesh)
    # float32 sums in another order: equal to ~1e-6 of the SE (beta itself may be ~0).
    np.testing.assert_allclose((eight.beta - one.beta) / one.se, 0, atol=1e-5)
    np.testing.assert_allclose(eight.se, one.se, rtol=1e-5)
  with pytest.raises(ConfigError, match="not divisible"):
    gwas.linear_association(g, y, covariates, chunk_size=12, mesh=mesh)


def test_bad_inputs_are_config_errors():
  g, y, yb, covariates = _data(n=50, s=4)
  with pytest.raises(ConfigError, match="linear combination"):
    gwas.linear_association(g, y, np.column_stack([covariates, 2 * covariates[:, 0] + 1]))
  with pytest.raises(ConfigError, match="must be 0/1"):
    gwas.logistic_association(g, y, covariates)
  with pytest.raises(ConfigError, match="int8"):
    gwas.linear_association(g.astype(np.int32), y)
  with pytest.raises(ConfigError, match=r"\[49 samples"):
    gwas.linear_association(g, y[:49])
  with pytest.raises(ConfigError, match="finite"):
    gwas.linear_association(g, np.where(np.arange(50) == 3, np.inf, y))
