"""PLINK 1 files: the .bed bit layout against a hand-packed file, round trips, bad files, the
.pheno/.cov text, and plink2 reading our A1 as the counted allele."""

import shutil
import subprocess

import numpy as np
import pytest

from jaxml.data import plink
from jaxml.errors import ConfigError


def _random_dosages(n, s, seed=0, missing=0.1):
  rng = np.random.default_rng(seed)
  g = rng.binomial(2, rng.uniform(0.05, 0.95, s), (n, s)).astype(np.int8)
  g[rng.random((n, s)) < missing] = -1
  return g


def test_bed_bytes_match_a_hand_packed_file(tmp_path):
  # One SNP, 5 samples with A1 dosages 2, 1, 0, missing, 2 -> codes 00, 10, 11, 01, 00,
  # first sample in the lowest bits: 0b01_11_10_00 = 0x78, then 0b00 (3 zero padding pairs).
  prefix = plink.write_bed(str(tmp_path / "x"), np.array([[2], [1], [0], [-1], [2]], np.int8))
  assert (tmp_path / "x.bed").read_bytes() == bytes([0x6C, 0x1B, 0x01, 0x78, 0x00])
  assert plink.read_bed(prefix)[:, 0].tolist() == [2, 1, 0, -1, 2]


@pytest.mark.parametrize("n", [1, 4, 7, 13])
def test_round_trip(tmp_path, n):
  g = _random_dosages(n, 11, seed=n)
  variants = plink.Variants(chromosome=np.array(["1"] * 6 + ["2"] * 5),
                            snp_id=np.array([f"rs{i}" for i in range(11)]),
                            position=np.arange(11, dtype=np.int64) * 7 + 3,
                            allele1=np.array(list("ACGTACGTACG")),
                            allele2=np.array(list("GTACGTACGTA")))
  samples = plink.default_samples(n, sex=np.arange(n) % 2)
  prefix = plink.write_bed(str(tmp_path / "sub" / "x"), g, variants, samples)
  back = plink.read_bed(prefix)
  assert back.dtype == np.int8
  np.testing.assert_array_equal(back, g)
  np.testing.assert_array_equal(plink.read_bed(prefix, slice(3, 9)), g[:, 3:9])
  assert plink.read_bed(prefix, slice(5, 5)).shape == (n, 0)
  bim, fam = plink.read_bim(prefix), plink.read_fam(prefix)
  for field in ("chromosome", "snp_id", "position", "allele1", "allele2"):
    np.testing.assert_array_equal(getattr(bim, field), getattr(variants, field))
  np.testing.assert_array_equal(fam.individual_id, samples.individual_id)
  np.testing.assert_array_equal(fam.sex, np.arange(n) % 2 + 1)
  assert (tmp_path / "sub" / "x.bed").stat().st_size == 3 + 11 * -(-n // 4)


def test_bad_inputs_and_files(tmp_path):
  with pytest.raises(ConfigError, match="sample 1, SNP 0 is 3"):
    plink.write_bed(str(tmp_path / "x"), np.array([[0], [3]], np.int8))
  with pytest.raises(ConfigError, match="integer dosages"):
    plink.write_bed(str(tmp_path / "x"), np.zeros((2, 2)))
  prefix = plink.write_bed(str(tmp_path / "x"), _random_dosages(6, 3))
  data = (tmp_path / "x.bed").read_bytes()
  (tmp_path / "x.bed").write_bytes(data[:-1])
  with pytest.raises(ConfigError, match="need 9"):
    plink.read_bed(prefix)
  (tmp_path / "x.bed").write_bytes(b"\x6c\x1b\x00" + data[3:])
  with pytest.raises(ConfigError, match="not a SNP-major"):
    plink.read_bed(prefix)
  (tmp_path / "x.bim").write_text("1\tsnp0\t0\t1\tA\n")
  with pytest.raises(ConfigError, match="line 1: 5 fields"):
    plink.read_bim(prefix)


def test_pheno_and_covariate_tables(tmp_path):
  samples = plink.default_samples(3)
  path = plink.write_table(str(tmp_path / "x.pheno"), samples,
                           {"case": np.array([0, 1, np.nan]), "fev1": np.array([1.5, np.nan,
                                                                                 1 / 3])},
                           binary=("case",))
  assert open(path).read().splitlines() == [
      "#FID\tIID\tcase\tfev1", "s0\ts0\t1\t1.5", "s1\ts1\t2\tNA", "s2\ts2\tNA\t0.333333333"]
  with pytest.raises(ConfigError, match="must be 0/1"):
    plink.write_table(str(tmp_path / "y"), samples, {"case": np.array([0, 2, 1])},
                      binary=("case",))


@pytest.mark.skipif(shutil.which("plink2") is None, reason="plink2 not installed")
def test_plink2_counts_our_a1_allele(tmp_path):
  """plink2 --freq reports ALT (= our A1) frequencies equal to our mean dosage / 2 over the
  called samples, and the missing-call counts we wrote."""
  g = _random_dosages(37, 9, seed=3)
  prefix = plink.write_bed(str(tmp_path / "x"), g)
  subprocess.run(["plink2", "--bfile", prefix, "--freq", "cols=+machr2,+nobs", "--out", prefix],
                 check=True, capture_output=True)
  rows = [line.split() for line in open(prefix + ".afreq")]
  header = rows[0]
  table = {name: [row[header.index(name)] for row in rows[1:]] for name in header}
  assert table["ALT"] == ["A"] * 9 and table["REF"] == ["G"] * 9
  called = g >= 0
  np.testing.assert_allclose(np.array(table["ALT_FREQS"], float),
                             np.where(called, g, 0).sum(0) / (2 * called.sum(0)), rtol=1e-5)
  np.testing.assert_array_equal(np.array(table["OBS_CT"], int), 2 * called.sum(0))
