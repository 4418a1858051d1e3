"""lambda_GC, discovery counting and effect-size R^2: against constructed cases and SciPy, and
lambda_GC of real association runs under the null and under population stratification."""

import numpy as np
import pytest
from scipy import stats

from jaxml.errors import ConfigError
from jaxml.evaluators import gwas, gwas_metrics, gwas_pca


def test_inflation_of_exactly_uniform_and_scaled_statistics():
  # The uniform quantiles (their median is exactly 1/2): lambda 1.
  p = (np.arange(10_001) + 0.5) / 10_001
  assert gwas_metrics.genomic_inflation(p) == pytest.approx(1.0, abs=1e-9)
  # Chi-squares scaled by 1.3 -> lambda 1.3; NaN (untested SNPs) skipped.
  chi2 = stats.chi2.isf(p, 1) * 1.3
  assert gwas_metrics.genomic_inflation(np.append(stats.chi2.sf(chi2, 1), np.nan)) == \
      pytest.approx(1.3, rel=1e-9)


def _stratified(n=600, s=1500, seed=0, fst_sd=0.15):
  rng = np.random.default_rng(seed)
  population = rng.integers(0, 2, n)
  base = rng.uniform(0.1, 0.9, s)
  shifted = np.clip(base + rng.normal(0, fst_sd, s), 0.02, 0.98)
  g = rng.binomial(2, np.where(population[:, None] == 1, shifted, base)).astype(np.int8)
  # No SNP acts on the phenotype; its mean differs by population (environment, ancestry).
  y = 0.8 * population + rng.normal(size=n)
  return g, y, population


# lambda_GC of S independent null statistics has sd ~ 1 / (2 f(m) sqrt(S)) / m, m = 0.455 the
# chi2(1) median and f(m) = 0.471 its density: 0.043 at S = 1500. 4 sd: 0.17.
NULL_TOLERANCE = 0.17


def test_null_snps_are_calibrated():
  rng = np.random.default_rng(1)
  g = rng.binomial(2, rng.uniform(0.05, 0.5, 1500), (600, 1500)).astype(np.int8)
  covariates = rng.normal(size=(600, 2))
  for result in (gwas.linear_association(g, rng.normal(size=600), covariates, chunk_size=512),
                 gwas.logistic_association(g, (rng.random(600) < 0.3).astype(float), covariates,
                                           chunk_size=512)):
    assert abs(gwas_metrics.genomic_inflation(result.p) - 1) < NULL_TOLERANCE, result.test


def test_stratification_inflates_and_principal_components_correct_it():
  g, y, _ = _stratified()
  raw = gwas_metrics.genomic_inflation(gwas.linear_association(g, y, chunk_size=512).p)
  components, _ = gwas_pca.principal_components(g, 2, chunk_size=512)
  corrected = gwas_metrics.genomic_inflation(
      gwas.linear_association(g, y, components, chunk_size=512).p)
  assert raw > 1 + 3 * NULL_TOLERANCE  # measured 5.1, and 0.95 corrected
  assert abs(corrected - 1) < NULL_TOLERANCE


def test_count_discoveries_on_a_constructed_case():
  p = np.full(20, 0.5)
  p[[2, 3, 10, 17]] = [1e-9, 1e-12, 1e-8, 4e-8]
  p[5] = np.nan
  causal = [3, 9, 15]
  exact = gwas_metrics.count_discoveries(p, causal)
  assert exact.significant.tolist() == [2, 3, 10, 17]
  assert exact.recovered.tolist() == [0]  # causal SNP 3 only
  assert exact.false.tolist() == [2, 10, 17]
  assert exact.summary == {"significant": 4, "recovered": 1, "causal": 3,
                           "false_discoveries": 3}
  # Positions 100 bp apart, a 150 bp window: SNP 10 is near causal 9, 2 near 3, 17 near none
  # (15 is 200 bp away); a stricter threshold drops SNP 10 (1e-8) and 17.
  positions = np.arange(20) * 100
  windowed = gwas_metrics.count_discoveries(p, causal, positions=positions, window=150)
  assert windowed.recovered.tolist() == [0, 1] and windowed.false.tolist() == [17]
  strict = gwas_metrics.count_discoveries(p, causal, positions=positions, window=150,
                                          threshold=5e-9)
  assert strict.significant.tolist() == [2, 3] and strict.false.tolist() == []
  # Another chromosome is never within the window.
  chromosomes = np.where(np.arange(20) < 9, "1", "2")
  split = gwas_metrics.count_discoveries(p, causal, positions=positions, window=150,
                                         chromosomes=chromosomes)
  assert split.recovered.tolist() == [0, 1]
  chromosomes[10] = "1"
  assert gwas_metrics.count_discoveries(p, causal, positions=positions, window=150,
                                        chromosomes=chromosomes).false.tolist() == [10, 17]
  with pytest.raises(ConfigError, match="causal SNP indices"):
    gwas_metrics.count_discoveries(p, [20])


def test_effect_size_r2_equals_scipy_linregress():
  rng = np.random.default_rng(2)
  a = rng.normal(size=50)
  b = 3.0 * a + rng.normal(scale=0.5, size=50)  # another phenotype scale
  b[7] = np.nan
  finite = np.isfinite(b)
  expected = stats.linregress(a[finite], b[finite]).rvalue ** 2
  assert gwas_metrics.effect_size_r2(a, b) == pytest.approx(expected, rel=1e-12)
  subset = np.arange(20)
  expected = stats.linregress(a[subset][finite[subset]], b[subset][finite[subset]]).rvalue ** 2
  assert gwas_metrics.effect_size_r2(a, b, subset) == pytest.approx(expected, rel=1e-12)
  with pytest.raises(ConfigError, match="3 or more"):
    gwas_metrics.effect_size_r2(a, b, [7, 8])
