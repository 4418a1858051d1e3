"""The per-SNP logistic regression behind `gwas.logistic_association`: Newton iterations on
[Q, g~] for every SNP of a chunk at once (batched over the chunk's columns: the Hessians'
covariate blocks of all SNPs are one [c, N] x [N, K*K] matmul), Q the orthonormal covariate
basis and g~ the SNP residualised on it.

Why this parametrisation: the SNP's coefficient, its Wald SE and the likelihood do not change
when the covariates are replaced by any basis of their span or the SNP by itself minus a
vector in that span (the covariate coefficients absorb both), and orthonormal, mutually
orthogonal columns keep the (K+1) x (K+1) Hessians well conditioned in float32.

Every SNP starts at the covariates-only maximum (float64, on the host) with a SNP coefficient
of 0, where a null SNP already almost is: a fixed count of Newton steps (4, then 16 for the few
SNPs not converged by then; see `gwas.logistic_association`) is ample wherever the maximum
exists, and a fixed count keeps the loop a `lax.scan` with no data-dependent exit, one
compilation per chunk shape and count. Convergence is judged at the end by the Newton
decrement g' H^-1 g at the final estimate (twice the log-likelihood a further step would gain;
invariant to the parametrisation), which also yields the Hessian for the SE.
Samples whose call is missing weigh 0 in the likelihood, gradient and Hessian: each SNP is fit
on its called samples, as plink2 does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.evaluators.gwas import residualised_genotypes


def null_fit(basis: np.ndarray, phenotype: np.ndarray, iterations: int = 50) -> np.ndarray:
  """The covariates-only logistic maximum-likelihood coefficients on `basis`, float64 Newton."""
  theta = np.zeros(basis.shape[1])
  for _ in range(iterations):
    mu = 1.0 / (1.0 + np.exp(-(basis @ theta)))
    hessian = basis.T @ (basis * (mu * (1.0 - mu))[:, None])
    step = np.linalg.solve(hessian, basis.T @ (phenotype - mu))
    theta += step
    if np.max(np.abs(step)) < 1e-12 * (1.0 + np.max(np.abs(theta))):
      break
  return theta


def _pairs(k: int):
  """Upper-triangle (i <= j) index pairs of a K x K matrix, and for every (i, j) the position
  of its pair: the Hessian's covariate block is symmetric, so only the pairs are summed."""
  rows, cols = np.triu_indices(k)
  position = np.zeros((k, k), np.int32)
  position[rows, cols] = position[cols, rows] = np.arange(len(rows))
  return rows, cols, position


def _gradient_hessian(coefficients, beta, x, mask, basis, pair_rows, position, phenotype):
  """Gradient [c, K+1] and Hessian [c, K+1, K+1] of every SNP's masked log-likelihood in
  (covariate coefficients [K, c], SNP coefficient [c]); x, mask [N, c]. Every product has
  the N axis contracted with the chunk's SNPs last, XLA's fast orientation on CPU."""
  mu = jax.nn.sigmoid(basis @ coefficients + x * beta[None, :])
  residual = mask * (phenotype[:, None] - mu)
  weight = mask * mu * (1.0 - mu)
  weighted_x = weight * x
  gradient = jnp.concatenate([basis.T @ residual, jnp.sum(x * residual, 0)[None]], 0)
  covariate_block = (pair_rows.T @ weight)[position]  # [K, K, c]
  cross = basis.T @ weighted_x  # [K, c]
  corner = jnp.sum(weighted_x * x, 0)
  hessian = jnp.concatenate([
      jnp.concatenate([covariate_block, cross[:, None, :]], 1),
      jnp.concatenate([cross[None, :, :], corner[None, None, :]], 1)], 0)
  return gradient.T, jnp.moveaxis(hessian, -1, 0)


@functools.cache
def chunk_kernel(iterations: int):
  """The jitted chunk function for `iterations` Newton steps (one per count, cached):
  (beta, SE, z, called samples, varies, Newton decrement) per SNP."""

  @jax.jit
  def kernel(chunk, basis, phenotype, start):
    x, observed, varies = residualised_genotypes(chunk, basis)
    mask = observed.astype(basis.dtype)
    rows, cols, position = _pairs(basis.shape[1])
    pair_rows = basis[:, rows] * basis[:, cols]  # [N, K(K+1)/2]
    c = x.shape[1]
    fit = functools.partial(_gradient_hessian, x=x, mask=mask, basis=basis,
                            pair_rows=pair_rows, position=position, phenotype=phenotype)

    def newton(params, _):
      coefficients, beta = params
      gradient, hessian = fit(coefficients, beta)
      step = jnp.linalg.solve(hessian, gradient[..., None])[..., 0]  # [c, K+1]
      return (coefficients + step[:, :-1].T, beta + step[:, -1]), None

    params = (jnp.broadcast_to(start[:, None], (start.shape[0], c)), jnp.zeros(c, x.dtype))
    (coefficients, beta), _ = jax.lax.scan(newton, params, None, length=iterations)
    gradient, hessian = fit(coefficients, beta)
    inverse = jnp.linalg.inv(hessian)
    se = jnp.sqrt(inverse[:, -1, -1])
    decrement = jnp.einsum("ci,cij,cj->c", gradient, inverse, gradient)
    return beta, se, beta / se, observed.sum(0), varies, decrement

  return kernel
