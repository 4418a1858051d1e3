"""Principal components of a genotype matrix, the ancestry covariates of a GWAS, computed as
plink2 `--pca` and EIGENSTRAT do.

Each SNP j is standardised by its allele frequency p_j (of the counted allele, over the called
samples): z_ij = (g_ij - 2 p_j) / sqrt(2 p_j (1 - p_j)), and a missing call is z = 0 (the mean,
i.e. mean imputation); a constant SNP has z = 0. The genetic relationship matrix
GRM = Z Z' / M is accumulated over chunks of SNPs in JAX (the same padded, compile-once chunks
as the association tests, optionally sharded on the SNP axis) and eigendecomposed. M counts all
SNPs, constant ones too, and with missing calls it is, per pair of samples, the SNPs both have
called: plink2's normalisation and missingness correction, so the eigenvalues are plink2's
`.eigenval` (tests/evaluators/test_gwas_pca.py). The top eigenvectors are the components (unit
length, each signed so its largest-magnitude entry is positive).

Exact, N x N: fine to tens of thousands of samples (a GRM of 20,000 is 1.6 GB in float32);
plink2's `approx` randomised mode for biobank sizes is not implemented.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxml.core.mesh import DATA_AXIS
from jaxml.errors import ConfigError
from jaxml.evaluators.gwas import DEFAULT_CHUNK, checked_genotypes, float_dtype


def standardised(chunk, dtype):
  """z [N, c] and whether each SNP varies (the frequency is over called samples)."""
  observed = chunk >= 0
  g = jnp.where(observed, chunk, 0).astype(dtype)
  freq = g.sum(0) / (2.0 * jnp.maximum(observed.sum(0), 1))
  variance = 2.0 * freq * (1.0 - freq)
  varies = variance > 0
  z = (g - 2.0 * freq) / jnp.sqrt(jnp.where(varies, variance, 1.0))
  return jnp.where(observed & varies, z, 0.0), varies


@jax.jit
def _accumulate(grm, pairs, chunk):
  """Adds a chunk's Z Z' to `grm`, and to `pairs` the count of SNPs called in both samples of
  each pair ([N, N] where calls are missing; [] where none is). Padding columns are all
  missing, so they count nowhere."""
  z, _ = standardised(chunk, grm.dtype)
  called = chunk >= 0
  if pairs.ndim == 0:
    return grm + z @ z.T, pairs + called.any(0).sum()
  called = called.astype(grm.dtype)
  return grm + z @ z.T, pairs + called @ called.T


def genetic_relationship(genotypes, *, chunk_size: int = DEFAULT_CHUNK, mesh=None):
  """GRM [N, N] of int8 dosages [N, S] (-1 missing): Z Z', each entry divided by the number
  of SNPs called in both samples (plink2's missingness correction)."""
  # Not through gwas.run_chunks: this one carries a running sum instead of per-SNP outputs.
  genotypes = checked_genotypes(genotypes, np.asarray(genotypes).shape[0])
  n, s = genotypes.shape
  if mesh is not None and chunk_size % mesh.devices.size:
    raise ConfigError(f"chunk_size={chunk_size} is not divisible by the mesh's "
                      f"{mesh.devices.size} devices")
  dtype = float_dtype()
  missing = bool((genotypes < 0).any())
  grm, pairs = jnp.zeros((n, n), dtype), jnp.zeros((n, n) if missing else (), dtype)
  place = None
  if mesh is not None:
    place = NamedSharding(mesh, P(None, DATA_AXIS))
    grm, pairs = jax.device_put((grm, pairs), NamedSharding(mesh, P()))
  for start in range(0, s, chunk_size):
    block = np.full((n, chunk_size), -1, np.int8)
    block[:, :min(chunk_size, s - start)] = genotypes[:, start:start + chunk_size]
    grm, pairs = _accumulate(grm, pairs, block if place is None else jax.device_put(block, place))
  if float(jnp.min(pairs)) == 0:
    raise ConfigError("some pair of samples shares no called SNP: no relationship between them")
  return grm / pairs


def principal_components(genotypes, num_components: int = 10, *,
                         chunk_size: int = DEFAULT_CHUNK, mesh=None):
  """(components [N, k] float64, eigenvalues [k]) of the standardised genotypes, largest
  first; see the module docstring."""
  grm = genetic_relationship(genotypes, chunk_size=chunk_size, mesh=mesh)
  n = grm.shape[0]
  if not 0 < num_components < n:
    raise ConfigError(f"num_components={num_components} must be in [1, {n - 1}]")
  values, vectors = jnp.linalg.eigh(grm)
  values = np.asarray(values, np.float64)[::-1][:num_components]
  vectors = np.asarray(vectors, np.float64)[:, ::-1][:, :num_components]
  largest = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(num_components)]
  return vectors * np.sign(largest), values
