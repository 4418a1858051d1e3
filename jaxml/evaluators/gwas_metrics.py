"""What a GWAS found, against the truth a simulation knows, on the host in NumPy.

  genomic_inflation   lambda_GC = median of the 1-df chi-square statistics implied by the
                      p-values / the chi-square(1) median (0.4549...): about 1 for a well
                      calibrated test of null SNPs, above 1 under uncorrected confounding
                      (population structure) or polygenicity.
  count_discoveries   significant SNPs (p < threshold, genome-wide 5e-8 by default), causal loci
                      recovered (a causal SNP with a significant SNP within `window` base pairs
                      on its chromosome, itself included), false discoveries (significant SNPs
                      with no causal SNP within `window`). With independent simulated SNPs a
                      window of 0 is exact; with linkage, use the LD span (e.g. 500 kb).
  effect_size_r2      agreement of two GWAS' effect sizes over a SNP set: the squared Pearson
                      correlation of the betas, the R^2 of regressing one on the other with an
                      intercept. It ignores the phenotypes' units, as the comparison of the
                      ML-phenotype and manual-phenotype effects (R^2 0.93 in Cosentino et al.)
                      must, since the two phenotypes are on different scales.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from jaxml.errors import ConfigError

GENOME_WIDE = 5e-8
_CHI2_MEDIAN = stats.chi2.ppf(0.5, 1)


def genomic_inflation(p) -> float:
  """lambda_GC over the finite p-values (NaN ones, SNPs with no test, are skipped)."""
  p = np.asarray(p, np.float64).ravel()
  p = p[np.isfinite(p)]
  if not len(p):
    raise ConfigError("genomic_inflation needs at least one finite p-value")
  return float(np.median(stats.chi2.isf(p, 1)) / _CHI2_MEDIAN)


@dataclasses.dataclass(frozen=True)
class Discoveries:
  significant: np.ndarray  # int indices of SNPs with p < threshold
  recovered: np.ndarray  # int indices (into the causal set) of causal SNPs found
  false: np.ndarray  # int indices of significant SNPs near no causal SNP
  num_causal: int

  @property
  def summary(self) -> dict:
    return {"significant": len(self.significant), "recovered": len(self.recovered),
            "causal": self.num_causal, "false_discoveries": len(self.false)}


def count_discoveries(p, causal, *, positions=None, chromosomes=None,
                      threshold: float = GENOME_WIDE, window: int = 0) -> Discoveries:
  """Discoveries at `threshold` against the true causal SNP indices (see the module docstring).

  `positions` default to the SNP indices and `chromosomes` to one chromosome.
  """
  p = np.asarray(p, np.float64)
  num = len(p)
  positions = np.arange(num) if positions is None else np.asarray(positions, np.int64)
  chromosomes = np.zeros(num, int) if chromosomes is None else np.asarray(chromosomes)
  causal = np.unique(np.asarray(causal, np.int64))
  if positions.shape != (num,) or chromosomes.shape != (num,):
    raise ConfigError(f"positions {positions.shape} and chromosomes {chromosomes.shape} must "
                      f"have one entry per p-value ({num})")
  if len(causal) and (causal.min() < 0 or causal.max() >= num):
    raise ConfigError(f"causal SNP indices must be in [0, {num})")
  if window < 0:
    raise ConfigError(f"window must be >= 0, got {window}")
  significant = np.flatnonzero(np.nan_to_num(p, nan=1.0) < threshold)
  # near[i, j]: significant SNP i lies within the window of causal SNP j.
  near = ((chromosomes[significant][:, None] == chromosomes[causal][None, :])
          & (np.abs(positions[significant][:, None] - positions[causal][None, :]) <= window))
  return Discoveries(significant=significant, recovered=np.flatnonzero(near.any(0)),
                     false=significant[~near.any(1)], num_causal=len(causal))


def effect_size_r2(beta_a, beta_b, snps=None) -> float:
  """Squared Pearson correlation of two GWAS' betas over `snps` (indices or a mask; all SNPs by
  default), skipping SNPs where either is NaN."""
  beta_a, beta_b = np.asarray(beta_a, np.float64), np.asarray(beta_b, np.float64)
  if beta_a.shape != beta_b.shape:
    raise ConfigError(f"betas of shapes {beta_a.shape} and {beta_b.shape} are not one SNP set")
  if snps is not None:
    beta_a, beta_b = beta_a[snps], beta_b[snps]
  both = np.isfinite(beta_a) & np.isfinite(beta_b)
  if both.sum() < 3:
    raise ConfigError(f"effect_size_r2 needs 3 or more SNPs with both betas, got {both.sum()}")
  return float(np.corrcoef(beta_a[both], beta_b[both])[0, 1] ** 2)
