"""plink2, the GWAS peer: write the files it reads (`jaxml.data.plink`), run `plink2 --glm` as
a subprocess, read its per-variant table back.

plink2 is the Debian package `plink2` (`apt-get install plink2`; tested with v2.00a3.5). The
command run is

  plink2 --bfile PREFIX --pheno PHENO --pheno-name NAME [--covar COV --covar-variance-standardize]
         --glm omit-ref hide-covar no-firth [allow-no-covars] cols=... --out OUT

`omit-ref` makes plink2 report the `.bim` file's A1 (our counted allele; see
`jaxml.data.plink`), so its BETA and ours have one sign; `no-firth` is plain logistic
regression with a Wald test, jaxml's `logistic_association` (plink2's default would switch to
Firth regression where the fit fails). A binary phenotype (all 0/1) is written 1/2
(control/case) so plink2 runs the logistic test; any other the linear one. Its tables print
6 significant digits (BETA, SE, T_STAT/Z_STAT, P), which bounds any comparison.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np

from jaxml.data import plink
from jaxml.errors import ConfigError

PHENOTYPE = "phenotype"
_COLUMNS = "chrom,pos,ref,alt,nobs,beta,se,tz,p,err"


def available() -> bool:
  return shutil.which("plink2") is not None


def is_binary(phenotype) -> bool:
  values = np.asarray(phenotype, np.float64)
  values = values[~np.isnan(values)]
  return bool(np.all((values == 0) | (values == 1)))


def write_inputs(prefix: str, genotypes, phenotype, covariates=None, *,
                 write_genotypes: bool = True) -> dict[str, str]:
  """`prefix.bed/.bim/.fam` (unless `write_genotypes` is False: already written),
  `prefix.pheno` and, with covariates [N, C], `prefix.cov` (columns c0, c1, ...)."""
  phenotype = np.asarray(phenotype, np.float64)
  samples = plink.default_samples(len(phenotype))
  if write_genotypes:
    plink.write_bed(prefix, genotypes, samples=samples)
  paths = {"bfile": prefix, "pheno": plink.write_table(
      prefix + ".pheno", samples, {PHENOTYPE: phenotype},
      binary=(PHENOTYPE,) if is_binary(phenotype) else ())}
  if covariates is not None:
    covariates = np.asarray(covariates, np.float64).reshape(len(phenotype), -1)
    paths["covar"] = plink.write_table(
        prefix + ".cov", samples, {f"c{i}": covariates[:, i] for i in range(covariates.shape[1])})
  return paths


def glm_command(bfile: str, pheno: str, out: str, covar: str | None = None,
                threads: int | None = None) -> list[str]:
  modifiers = ["omit-ref", "hide-covar", "no-firth"] + ([] if covar else ["allow-no-covars"])
  command = ["plink2", "--bfile", bfile, "--pheno", pheno, "--pheno-name", PHENOTYPE]
  if covar:
    command += ["--covar", covar, "--covar-variance-standardize"]
  command += ["--glm", *modifiers, f"cols={_COLUMNS}", "--out", out]
  if threads:
    command += ["--threads", str(threads)]
  return command


def run_glm(bfile: str, pheno: str, out: str, covar: str | None = None, *,
            threads: int | None = None) -> str:
  """Runs plink2 --glm; returns the path of its table (`.glm.linear` or `.glm.logistic`)."""
  if not available():
    raise ConfigError("plink2 is not on PATH (Debian: apt-get install plink2)")
  tables = [f"{out}.{PHENOTYPE}.glm.{suffix}" for suffix in ("linear", "logistic")]
  for path in tables:  # an earlier run's table must not pass for this one's
    if os.path.exists(path):
      os.remove(path)
  done = subprocess.run(glm_command(bfile, pheno, out, covar, threads), capture_output=True,
                        text=True, check=False)
  if done.returncode:
    raise RuntimeError(f"plink2 --glm failed ({done.returncode}): {done.stderr or done.stdout}")
  for path in tables:
    if os.path.exists(path):
      return path
  raise RuntimeError(f"plink2 wrote no .glm table for {out}: {done.stdout[-2000:]}")


def read_glm(path: str) -> dict[str, np.ndarray]:
  """A plink2 `.glm.*` table as columns: ID, A1 (str), OBS_CT (int), BETA, SE, STAT (T_STAT or
  Z_STAT), P (float; NaN where plink2 wrote NA), ERRCODE (str)."""
  with open(path, encoding="ascii") as f:
    header = f.readline().lstrip("#").split()
    rows = [line.split() for line in f if line.strip()]
  columns = dict(zip(header, zip(*rows))) if rows else {name: () for name in header}
  floats = lambda name: np.array([np.nan if v == "NA" else float(v) for v in columns[name]])
  stat = "T_STAT" if "T_STAT" in columns else "Z_STAT"
  return {"ID": np.array(columns["ID"], str), "A1": np.array(columns["A1"], str),
          "OBS_CT": np.array(columns["OBS_CT"], np.int64), "BETA": floats("BETA"),
          "SE": floats("SE"), "STAT": floats(stat), "P": floats("P"),
          "ERRCODE": np.array(columns["ERRCODE"], str)}
