"""Genome-wide association: one regression per SNP, vectorised in JAX over SNPs.

Inputs are plain arrays: genotypes int8 [N, S], the dosage of each SNP's counted allele A1
(0/1/2, -1 missing; the convention of `jaxml.data.plink`), a phenotype float [N] and covariates
float [N, C] (age, sex, height, principal components ...; an intercept is always added, so do
not pass a constant column). Samples whose phenotype or any covariate is NaN are left out of
every regression, as plink2 does.

  linear_association     phenotype ~ intercept + covariates + SNP, ordinary least squares:
                         beta, SE, t with N - C - 2 degrees of freedom (N the samples in the
                         regression), two-sided p. Computed by Frisch-Waugh-Lovell: the
                         phenotype and every SNP are residualised once on the covariates (an
                         orthonormal basis Q of [1, covariates], from a float64 QR on the
                         host), after which each SNP's regression is a dot product:
                         beta = <g~, y~> / <g~, g~>, SE^2 = RSS / dof / <g~, g~>.
                         That is the same beta and SE as the full regression, for every SNP.
                         g~ is never formed: a chunk costs one [K, N] x [N, chunk] matmul and
                         two column sums (`_linear_complete_chunk`), about one read of the
                         genotypes.
  logistic_association   a 0/1 phenotype: logistic regression per SNP by Newton (IRLS)
                         iterations, a fixed number of them, batched over a chunk's SNPs and
                         started from the covariates-only fit (`gwas_logistic`); Wald
                         z = beta / SE with SE from the inverse Hessian (observed = expected
                         information for the logit link) and a two-sided normal p, as
                         plink2's `--glm no-firth`.

Missing genotypes (-1): a SNP's regression uses only the samples with a call, exactly as
plink2 does (no imputation enters a statistic). For the linear test the SNPs with no missing
call take the fast path above; those with some are solved with the covariates re-projected on
their observed samples (K x K systems per SNP, K = C + 1), so the answers equal a regression
on the observed samples. The logistic test weighs each sample by its observed-call mask.

Both tests are invariant to any invertible linear transform of the covariates (the SNP's
coefficient and SE depend on the covariates' column space only), so plink2's internal
`--covar-variance-standardize` does not change them, and neither does using Q in their place.

Chunks: SNPs go through in chunks of `chunk_size` columns under one jitted function (the last
chunk is padded with constant columns whose results are dropped), so each test compiles once
per (N, chunk_size, K). With `mesh`, each chunk's SNP axis is sharded over the `data` axis
(data-parallel over SNPs: every device holds all samples and its share of the chunk's SNPs);
results equal the single-device ones. Precision: JAX's default float (float32 unless
`jax_enable_x64`); the covariate basis and null fit are float64 on the host, and p-values are
computed on the host in float64 from the statistic (`neg_log10_p` stays finite far below
float64's smallest p).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from scipy import stats

from jaxml.core.mesh import DATA_AXIS
from jaxml.errors import ConfigError

DEFAULT_CHUNK = 1024
# A covariate whose QR diagonal falls below this fraction of the largest is a linear
# combination of the others (plink2 refuses such covariates too).
_RANK_TOLERANCE = 1e-9
_FLOAT32_EXACT_SAMPLES = 2**24 // 4  # sum of g^2 <= 4 N must stay an exact float32 integer


@dataclasses.dataclass(frozen=True)
class Association:
  """Per-SNP results [S] (NaN where a SNP has no test: constant genotypes, or a logistic fit
  that did not converge)."""
  beta: np.ndarray
  se: np.ndarray
  stat: np.ndarray  # t (linear) or Wald z (logistic)
  p: np.ndarray
  neg_log10_p: np.ndarray
  num_samples: np.ndarray  # int: samples in each SNP's regression
  converged: np.ndarray  # bool; for the linear test, whether a statistic exists
  test: str  # "linear" or "logistic"


@dataclasses.dataclass(frozen=True)
class Design:
  """The samples every regression uses and an orthonormal basis of [1, covariates] on them."""
  keep: np.ndarray  # bool [N_all]
  basis: np.ndarray  # float64 [N, K], K = C + 1
  phenotype: np.ndarray  # float64 [N]


def design(phenotype, covariates=None) -> Design:
  """Drops samples with a NaN phenotype or covariate; QR of [1, covariates] in float64."""
  phenotype = np.asarray(phenotype, np.float64)
  if phenotype.ndim != 1:
    raise ConfigError(f"phenotype must be 1-D [N], got shape {phenotype.shape}")
  n_all = len(phenotype)
  covariates = (np.zeros((n_all, 0)) if covariates is None
                else np.asarray(covariates, np.float64))
  if covariates.ndim == 1:
    covariates = covariates[:, None]
  if covariates.shape[0] != n_all:
    raise ConfigError(f"covariates have {covariates.shape[0]} rows for {n_all} phenotypes")
  if np.isinf(phenotype).any() or np.isinf(covariates).any():
    raise ConfigError("phenotype and covariates must be finite (NaN marks a missing value)")
  keep = ~np.isnan(phenotype) & ~np.isnan(covariates).any(axis=1)
  x = np.concatenate([np.ones((int(keep.sum()), 1)), covariates[keep]], axis=1)
  if x.shape[0] <= x.shape[1] + 1:
    raise ConfigError(f"{x.shape[0]} complete samples cannot fit {x.shape[1]} covariate "
                      "columns (with intercept) and a SNP")
  basis, triangular = np.linalg.qr(x)
  diagonal = np.abs(np.diag(triangular))
  if diagonal.min() <= _RANK_TOLERANCE * diagonal.max():
    raise ConfigError(f"covariate column {int(diagonal.argmin()) - 1} is constant or a linear "
                      "combination of the others (the intercept is added for you)")
  return Design(keep=keep, basis=basis, phenotype=phenotype[keep])


def checked_genotypes(genotypes, num_samples: int) -> np.ndarray:
  genotypes = np.asarray(genotypes)
  if genotypes.ndim != 2 or genotypes.shape[0] != num_samples:
    raise ConfigError(f"genotypes must be [{num_samples} samples, SNPs], got shape "
                      f"{genotypes.shape}")
  if genotypes.dtype != np.int8:
    raise ConfigError(f"genotypes must be int8 dosages 0/1/2 (-1 missing), got "
                      f"{genotypes.dtype}")
  return genotypes


def float_dtype():
  return jnp.result_type(float)


def residualised_genotypes(chunk, basis):
  """float [N, c] SNPs, missing calls mean-imputed, minus their projection on the covariates;
  the observed-call mask; and whether the observed calls vary (a constant SNP has no test; its
  float residual is round-off, not 0). Imputed values only condition the numbers: every
  statistic masks them out."""
  observed = chunk >= 0
  g = jnp.where(observed, chunk, 0).astype(basis.dtype)
  count = jnp.maximum(observed.sum(0), 1)
  g = jnp.where(observed, g, (g.sum(0) / count)[None, :])
  varies = (jnp.where(observed, chunk, -1).max(0)
            != jnp.where(observed, chunk, 3).min(0))
  return g - basis @ (basis.T @ g), observed, varies


def outer_rows(basis):
  """[N, K*K]: row n is q_n q_n' flattened, so sum_n w_n q_n q_n' for a whole chunk of weight
  columns is one matmul (no [N, K, chunk] intermediate)."""
  return (basis[:, :, None] * basis[:, None, :]).reshape(basis.shape[0], -1)


@jax.jit
def _linear_complete_chunk(chunk, projector):
  """Every sample called: sums of g and g^2 (exact: float32 holds integers to 2^24, so up to
  4 million samples) and [Q_1:, y~]' g, one [K, N] x [N, c] matmul (the skinny operand first:
  XLA's CPU dot is ~8x slower the other way round). FWL needs nothing else:
  <g~, g~> = sum g^2 - (sum g)^2 / N - |Q_1:' g|^2 (Q's first column is the constant
  1 / sqrt(N)), and <g~, y~> = <g, y~> as y~ is orthogonal to Q."""
  g = chunk.astype(projector.dtype)
  return g.sum(0), (g * g).sum(0), projector.T @ g


@jax.jit
def _linear_missing_chunk(chunk, basis, residual):
  """Some calls missing: <g~, g~>, <g~, y~>, <y~, y~> of the regression on each SNP's observed
  samples, with the covariates re-projected there. Using the full-sample residuals g~, y~ in
  place of g, y is exact (they differ from g, y by vectors in the covariates' span, which only
  shift the covariate coefficients) and keeps the K x K systems well conditioned."""
  g, observed, varies = residualised_genotypes(chunk, basis)
  mask = observed.astype(basis.dtype)
  k = basis.shape[1]
  gram = jnp.moveaxis((outer_rows(basis).T @ mask).reshape(k, k, -1), -1, 0)  # Q'diag(m)Q
  u = basis.T @ (mask * g)  # [K, c]
  v = basis.T @ (mask * residual[:, None])
  a = jnp.linalg.solve(gram, u.T[..., None])[..., 0]  # [c, K]
  b = jnp.linalg.solve(gram, v.T[..., None])[..., 0]
  gg = jnp.sum(mask * g * g, 0) - jnp.sum(u.T * a, -1)
  gy = jnp.sum(mask * g * residual[:, None], 0) - jnp.sum(u.T * b, -1)
  yy = jnp.sum(mask * jnp.square(residual)[:, None], 0) - jnp.sum(v.T * b, -1)
  return gg, gy, yy, observed.sum(0), varies


def _linear_finish(gg, gy, yy, n, varies, k: int):
  """(beta, SE, t, n, tested) from the FWL sums, in float64 on the host."""
  gg, gy, yy = (np.asarray(x, np.float64) for x in (gg, gy, yy))
  with np.errstate(divide="ignore", invalid="ignore"):
    beta = gy / gg
    se = np.sqrt((yy - gy * beta) / (n - k - 1) / gg)
  return beta, se, beta / se, n, varies


def run_chunks(kernel, genotypes: np.ndarray, snps: np.ndarray, chunk_size: int, mesh,
               *operands) -> list[np.ndarray]:
  """`kernel(chunk [N, chunk_size] int8, *operands)` over the SNP columns `snps`, the last
  chunk padded with zero columns; outputs [..., len(snps)] per kernel output (the SNP axis
  last), on the host."""
  if chunk_size <= 0:
    raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
  if mesh is not None and chunk_size % mesh.devices.size:
    raise ConfigError(f"chunk_size={chunk_size} is not divisible by the mesh's "
                      f"{mesh.devices.size} devices")
  place = None
  if mesh is not None:
    place = NamedSharding(mesh, P(None, DATA_AXIS))
    operands = jax.device_put(operands, NamedSharding(mesh, P()))
  pending = []
  for start in range(0, len(snps), chunk_size):
    index = snps[start:start + chunk_size]
    block = np.zeros((genotypes.shape[0], chunk_size), np.int8)
    contiguous = index[-1] - index[0] == len(index) - 1  # a slice copies faster than a gather
    block[:, :len(index)] = genotypes[:, index[0]:index[-1] + 1] if contiguous else genotypes[
        :, index]
    block = jax.device_put(block, place) if place is not None else block
    pending.append((len(index), kernel(block, *operands)))  # dispatched asynchronously
  if not pending:
    return []
  outputs = [[np.asarray(out)[..., :size] for out in outs] for size, outs in pending]
  return [np.concatenate(parts, axis=-1) for parts in zip(*outputs)]


def _assemble(num_snps: int, groups, test: str, p_of_stat) -> Association:
  """Scatters (snp indices, [beta, se, stat, n, converged]) groups into [S] arrays."""
  beta, se, stat = (np.full(num_snps, np.nan) for _ in range(3))
  num_samples = np.zeros(num_snps, np.int64)
  converged = np.zeros(num_snps, bool)
  for snps, (b, s, z, n, ok) in groups:
    ok = ok & np.isfinite(z) & np.isfinite(s) & (s > 0)
    beta[snps] = np.where(ok, b, np.nan)
    se[snps] = np.where(ok, s, np.nan)
    stat[snps] = np.where(ok, z, np.nan)
    num_samples[snps], converged[snps] = n, ok
  p, neg_log10_p = p_of_stat(stat, num_samples)
  return Association(beta=beta, se=se, stat=stat, p=p, neg_log10_p=neg_log10_p,
                     num_samples=num_samples, converged=converged, test=test)


def two_sided_p(stat, dof=None) -> tuple[np.ndarray, np.ndarray]:
  """(p, -log10 p) of |stat| under t(dof), or the standard normal when dof is None."""
  dist = stats.norm if dof is None else stats.t(np.maximum(dof, 1))
  log_p = dist.logsf(np.abs(stat)) + math.log(2.0)
  return np.exp(log_p), -log_p / math.log(10.0)


def linear_association(genotypes, phenotype, covariates=None, *, chunk_size: int = DEFAULT_CHUNK,
                       mesh=None) -> Association:
  """Per-SNP linear regression of `phenotype` on each SNP of `genotypes` [N, S] int8 plus an
  intercept and `covariates` [N, C] (see the module docstring)."""
  d = design(phenotype, covariates)
  genotypes = checked_genotypes(genotypes, len(d.keep))
  if not d.keep.all():
    genotypes = genotypes[d.keep]
  dtype = float_dtype()
  basis = jnp.asarray(d.basis, dtype)
  residual = jnp.asarray(d.phenotype - d.basis @ (d.basis.T @ d.phenotype), dtype)
  if dtype == jnp.float32 and len(d.phenotype) > _FLOAT32_EXACT_SAMPLES:
    raise ConfigError(f"{len(d.phenotype)} samples: float32 sums of squared dosages are exact "
                      f"to {_FLOAT32_EXACT_SAMPLES}; enable jax_enable_x64 for more")
  has_missing = (genotypes < 0).any(axis=0)
  k = d.basis.shape[1]
  groups = []
  complete, missing = np.flatnonzero(~has_missing), np.flatnonzero(has_missing)
  if len(complete):
    projector = jnp.concatenate([basis[:, 1:], residual[:, None]], axis=1)
    s1, s2, products = run_chunks(_linear_complete_chunk, genotypes, complete, chunk_size, mesh,
                                  projector)
    s1, s2, products = s1.astype(np.int64), s2.astype(np.int64), products.astype(np.float64)
    n = len(d.phenotype)
    gg = (s2 - s1 * s1 / n) - np.sum(np.square(products[:-1]), axis=0)
    yy = np.full(len(complete), float(np.sum(np.square(np.asarray(residual, np.float64)))))
    groups.append((complete, _linear_finish(gg, products[-1], yy, n, s2 * n > s1 * s1, k)))
  if len(missing):
    groups.append((missing, _linear_finish(*run_chunks(
        _linear_missing_chunk, genotypes, missing, chunk_size, mesh, basis, residual), k)))
  return _assemble(genotypes.shape[1], groups, "linear",
                   lambda t, n: two_sided_p(t, n - k - 1))


def logistic_association(genotypes, phenotype, covariates=None, *,
                         chunk_size: int = DEFAULT_CHUNK, iterations: int = 4,
                         retry_iterations: int = 16, tolerance: float = 1e-8,
                         mesh=None) -> Association:
  """Per-SNP logistic regression of a 0/1 `phenotype` (NaN missing) on each SNP plus an
  intercept and `covariates`: Newton steps from the covariates-only fit, Wald z.

  Every SNP gets `iterations` steps; the few whose fit has not converged then are fitted again
  with `retry_iterations` (a second compiled chunk function, built only when needed). A fit has
  converged when it is finite and its Newton decrement g' H^-1 g (twice the log-likelihood a
  further step would gain; its square root is the remaining step in SE units) is at most
  `tolerance`: 1e-8 leaves the estimate within 1e-4 SE of the maximum; float32's round-off
  floor was measured at ~1e-11 (4,000 samples). From the null fit, 3 steps already reached the
  floor for every SNP of a simulated GWAS with hits at z ~ 7. Where it never converges
  (separation), `converged` is False and the SNP's results NaN, as plink2 `no-firth` reports NA.
  """
  from jaxml.evaluators import gwas_logistic  # pylint: disable=import-outside-toplevel

  d = design(phenotype, covariates)
  if not np.all((d.phenotype == 0) | (d.phenotype == 1)):
    bad = np.unique(d.phenotype[(d.phenotype != 0) & (d.phenotype != 1)])[:5]
    raise ConfigError(f"a logistic phenotype must be 0/1 (NaN missing), got {bad.tolist()}")
  if d.phenotype.min() == d.phenotype.max():
    raise ConfigError("a logistic phenotype needs both cases and controls")
  genotypes = checked_genotypes(genotypes, len(d.keep))
  if not d.keep.all():
    genotypes = genotypes[d.keep]
  if not 1 <= iterations <= retry_iterations:
    raise ConfigError(f"need 1 <= iterations ({iterations}) <= retry_iterations "
                      f"({retry_iterations})")
  dtype = float_dtype()
  null = gwas_logistic.null_fit(d.basis, d.phenotype)
  operands = (jnp.asarray(d.basis, dtype), jnp.asarray(d.phenotype, dtype),
              jnp.asarray(null, dtype))
  snps = np.arange(genotypes.shape[1])
  results = run_chunks(gwas_logistic.chunk_kernel(iterations), genotypes, snps, chunk_size,
                       mesh, *operands)
  decrement = results[-1]
  retry = np.flatnonzero(results[4] & ~(decrement <= tolerance))  # NaN decrements retry too
  if len(retry) and retry_iterations > iterations:
    again = run_chunks(gwas_logistic.chunk_kernel(retry_iterations), genotypes, retry,
                       chunk_size, mesh, *operands)
    for field, values in zip(results, again):
      field[retry] = values
  b, s, z, n, varies, decrement = results
  ok = varies & np.isfinite(decrement) & (decrement <= tolerance)
  return _assemble(genotypes.shape[1], [(snps, (b, s, z, n, ok))], "logistic",
                   lambda z, n: two_sided_p(z))
