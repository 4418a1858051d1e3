"""The per-SNP logistic test (jaxml/evaluators/gwas_logistic.py, through
`gwas.logistic_association`) against statsmodels' Logit one SNP at a time, with and without
missing calls; separation reported as not converged; unconverged SNPs refitted."""

import jax
import numpy as np
import pytest
import statsmodels.api as sm

from jaxml.errors import ConfigError
from jaxml.evaluators import gwas
from tests.evaluators.test_gwas import _assert_matches, _data


@pytest.mark.parametrize("missing", [0.0, 0.08])
def test_logistic_equals_statsmodels_logit(missing):
  g, _, y, covariates = _data(missing=missing, seed=1)
  with jax.enable_x64(True):
    exact = gwas.logistic_association(g, y, covariates, chunk_size=16)
  _assert_matches(exact, g, y, covariates, sm.Logit, rtol=1e-8)
  single = gwas.logistic_association(g, y, covariates, chunk_size=16)
  _assert_matches(single, g, y, covariates, sm.Logit, rtol=2e-5)
  assert exact.converged.all() and single.converged.all()


def test_separation_is_reported_not_converged():
  g, _, yb, covariates = _data(seed=6)
  yb = (g[:, 2] > 0).astype(np.float64)  # SNP 2 predicts the phenotype perfectly
  result = gwas.logistic_association(g, yb, covariates[:, :1])
  assert not result.converged[2] and np.isnan(result.p[2])
  assert result.converged[[0, 1, 3, 4]].all()


def test_unconverged_snps_are_refitted_with_more_iterations():
  """One Newton step leaves SNPs with effects short of the maximum: they are refitted with
  `retry_iterations` and then equal the many-step fit; with no retry they are reported."""
  g, _, yb, covariates = _data(seed=7)
  full = gwas.logistic_association(g, yb, covariates, iterations=12, retry_iterations=12)
  one_step = gwas.logistic_association(g, yb, covariates, iterations=1, retry_iterations=1)
  retried = gwas.logistic_association(g, yb, covariates, iterations=1, retry_iterations=12)
  assert full.converged.all() and retried.converged.all()
  assert (~one_step.converged).sum() > g.shape[1] // 2  # measured 35 of 37
  np.testing.assert_allclose((retried.beta - full.beta) / full.se, 0, atol=1e-4)
  with pytest.raises(ConfigError, match="iterations"):
    gwas.logistic_association(g, yb, covariates, iterations=5, retry_iterations=4)
