"""Genotype principal components against a NumPy EIGENSTRAT reference and plink2 --pca;
chunked and sharded runs equal."""

import shutil
import subprocess

import jax
import numpy as np
import pytest

from jaxml.core.mesh import make_mesh
from jaxml.data import plink
from jaxml.evaluators import gwas_pca


def _two_populations(n=120, s=300, seed=0, missing=0.03):
  rng = np.random.default_rng(seed)
  population = rng.integers(0, 2, n)
  base = rng.uniform(0.1, 0.9, s)
  shifted = np.clip(base + rng.normal(0, 0.15, s), 0.02, 0.98)
  g = rng.binomial(2, np.where(population[:, None] == 1, shifted, base)).astype(np.int8)
  g[rng.random((n, s)) < missing] = -1
  g[:, 11] = 2  # constant: z = 0, still counted in M (plink2's convention)
  return g, population


def _reference(g, k):
  """Loop-free NumPy: standardise by called-sample frequencies, missing -> 0, divide each pair
  by the SNPs both have called."""
  called = g >= 0
  freq = np.where(called, g, 0).sum(0) / (2 * called.sum(0))
  sd = np.sqrt(2 * freq * (1 - freq))
  z = np.where(called & (sd > 0), (g - 2 * freq) / np.where(sd > 0, sd, 1), 0)
  grm = z @ z.T / (called.astype(float) @ called.T.astype(float))
  values, vectors = np.linalg.eigh(grm)
  return vectors[:, ::-1][:, :k], values[::-1][:k]


def _assert_same_components(a, b, atol):
  # Eigenvectors are defined up to sign: compare |cosines| with 1.
  cosines = np.abs(np.sum(a * b, 0)) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
  np.testing.assert_allclose(cosines, 1.0, atol=atol)


def test_equals_numpy_reference_and_separates_populations():
  g, population = _two_populations()
  with jax.enable_x64(True):
    components, values = gwas_pca.principal_components(g, 4, chunk_size=64)
  ref_vectors, ref_values = _reference(g, 4)
  np.testing.assert_allclose(values, ref_values, rtol=1e-10)
  _assert_same_components(components, ref_vectors, 1e-9)
  np.testing.assert_allclose(np.linalg.norm(components, axis=0), 1.0)
  # The top component is the population split.
  assert abs(np.corrcoef(components[:, 0], population)[0, 1]) > 0.95
  single, single_values = gwas_pca.principal_components(g, 4, chunk_size=64)
  np.testing.assert_allclose(single_values, values, rtol=1e-5)
  _assert_same_components(single[:, :1], components[:, :1], 1e-5)


def test_chunks_and_eight_devices_change_nothing():
  g, _ = _two_populations(missing=0.0, seed=1)
  grm = gwas_pca.genetic_relationship(g, chunk_size=64)
  np.testing.assert_allclose(gwas_pca.genetic_relationship(g, chunk_size=48), grm, atol=1e-5)
  sharded = gwas_pca.genetic_relationship(g, chunk_size=64, mesh=make_mesh())
  np.testing.assert_allclose(sharded, grm, atol=1e-5)


@pytest.mark.skipif(shutil.which("plink2") is None, reason="plink2 not installed")
@pytest.mark.parametrize("missing", [0.0, 0.03])
def test_equals_plink2_pca(tmp_path, missing):
  g, _ = _two_populations(n=150, s=400, seed=2, missing=missing)
  prefix = plink.write_bed(str(tmp_path / "x"), g)
  subprocess.run(["plink2", "--bfile", prefix, "--pca", "4", "--out", prefix], check=True,
                 capture_output=True)
  with jax.enable_x64(True):
    components, values = gwas_pca.principal_components(g, 4)
  # plink2 prints 6 significant digits.
  np.testing.assert_allclose(values, np.loadtxt(prefix + ".eigenval"), rtol=5e-6)
  theirs = np.loadtxt(prefix + ".eigenvec", skiprows=1, usecols=range(2, 6))
  _assert_same_components(components, theirs, 1e-5)
