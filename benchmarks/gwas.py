"""GWAS (issue 23): association throughput (SNPs x individuals per second) of jaxml's JAX
per-SNP regressions against plink2 `--glm` on the same `.bed/.bim/.fam` files, linear and
logistic, with the statistics compared.

Everything runs in one process, in this order:

  data      generated here: N individuals, S SNPs with allele frequencies U(0.05, 0.5),
            --causal SNPs acting on a liability (each explains ~0.5% of its variance), raw-scale
            covariates (age, sex, height and --pcs standard normal columns standing in for
            principal components). Phenotypes: quantitative (the liability plus noise) and
            case/control (a logistic draw from it, ~30% cases). Written by
            `jaxml.data.plink` / `gwas_plink2.write_inputs` to a temporary directory.
  jax       `gwas.linear_association` / `gwas.logistic_association` (4 Newton iterations, 16
            for SNPs not converged by then) on the in-memory int8 genotypes, chunks of --chunk
            SNPs, float32, one device. Timed after a first, compiling call (its time printed
            apart). A second row times
            `plink.read_bed` of the file + the association: the same work as plink2's run,
            except that plink2 also parses the small .pheno/.cov text files.
  plink2    `plink2 --bfile --pheno --covar --covar-variance-standardize --glm omit-ref
            hide-covar no-firth` as a subprocess with --threads = the CPU cores, timed from
            start to exit: its file reading and writing of the results table included.
            plink2 computes in float64.

--repeats round-robin repeats over the runners (a change in the machine's load falls on all
alike); the medians are printed, with throughput N x S / time and the ratio
plink2 time / jax time (> 1: jax is faster). The largest differences between the two result
tables (beta in SE units, SE relative) are printed as a check: plink2 prints 6 digits.

  python benchmarks/gwas.py            # defaults: N 4,000, S 20,000; ~3 minutes on 2 CPU cores
  python benchmarks/gwas.py --quick    # tiny sizes, seconds (tests)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time

import jax
import numpy as np

from jaxml.data import plink
from jaxml.evaluators import gwas, gwas_plink2

QUICK = {"samples": 200, "snps": 300, "chunk": 128, "repeats": 2}


def cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def simulate(samples: int, snps: int, causal: int, pcs: int, seed: int = 0):
  """(genotypes int8 [N, S], quantitative [N], case/control [N], covariates [N, 3 + pcs],
  causal SNP indices)."""
  rng = np.random.default_rng(seed)
  freq = rng.uniform(0.05, 0.5, snps)
  genotypes = rng.binomial(2, freq, (samples, snps)).astype(np.int8)
  covariates = np.column_stack([rng.normal(55, 8, samples), rng.integers(0, 2, samples),
                                rng.normal(170, 9, samples), rng.normal(size=(samples, pcs))])
  chosen = rng.choice(snps, causal, replace=False)
  standardised = (genotypes[:, chosen] - 2 * freq[chosen]) / np.sqrt(
      2 * freq[chosen] * (1 - freq[chosen]))
  liability = standardised @ np.full(causal, np.sqrt(0.005)) + 0.02 * (covariates[:, 0] - 55)
  quantitative = liability + rng.normal(size=samples)
  binary = (rng.random(samples) < 1 / (1 + np.exp(-(liability - 0.85)))).astype(np.float64)
  return genotypes, quantitative, binary, covariates, np.sort(chosen)


def _timed(fn):
  began = time.perf_counter()
  out = fn()
  return time.perf_counter() - began, out


def _agreement(ours: gwas.Association, theirs: dict) -> str:
  tested = (theirs["ERRCODE"] == ".") & ours.converged
  beta_gap = np.max(np.abs(theirs["BETA"] - ours.beta)[tested] / ours.se[tested])
  se_gap = np.max(np.abs(theirs["SE"] / ours.se - 1)[tested])
  return (f"{tested.sum()} SNPs tested by both, max |beta diff| {beta_gap:.1e} SE, "
          f"max SE rel diff {se_gap:.1e}")


def run(test: str, prefix: str, genotypes, phenotype, covariates, args) -> dict:
  """One test (linear or logistic): the medians and ratios, printed and returned."""
  association = gwas.linear_association if test == "linear" else gwas.logistic_association
  paths = gwas_plink2.write_inputs(prefix, genotypes, phenotype, covariates,
                                   write_genotypes=False)
  out = f"{prefix}.{test}"
  compile_s, ours = _timed(lambda: association(genotypes, phenotype, covariates,
                                               chunk_size=args.chunk))
  runners = {
      "jax": lambda: association(genotypes, phenotype, covariates, chunk_size=args.chunk),
      "jax + read_bed": lambda: association(plink.read_bed(prefix), phenotype, covariates,
                                            chunk_size=args.chunk),
  }
  if gwas_plink2.available():
    runners["plink2"] = lambda: gwas_plink2.run_glm(paths["bfile"], paths["pheno"], out,
                                                    paths["covar"], threads=cores())
  times = {name: [] for name in runners}
  for _ in range(args.repeats):
    for name, runner in runners.items():
      times[name].append(_timed(runner)[0])
  medians = {name: statistics.median(t) for name, t in times.items()}
  work = genotypes.shape[0] * genotypes.shape[1]
  print(f"\n{test}: first (compiling) jax call {compile_s:.2f} s; medians of {args.repeats}")
  for name, seconds in medians.items():
    ratio = (f", plink2 / this {medians['plink2'] / seconds:.2f}x" if "plink2" in medians
             and name != "plink2" else "")
    print(f"  {name:15s} {seconds:8.3f} s  {work / seconds:12.3e} SNP x individuals/s"
          f"  (range {min(times[name]):.3f}-{max(times[name]):.3f}){ratio}")
  result = {"medians": medians, "jax": ours, "converged": int(ours.converged.sum())}
  if "plink2" in medians:
    theirs = gwas_plink2.read_glm(gwas_plink2.run_glm(paths["bfile"], paths["pheno"], out,
                                                      paths["covar"], threads=cores()))
    result["plink2"] = theirs
    print(f"  agreement: {_agreement(ours, theirs)}")
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", type=int, default=4000)
  parser.add_argument("--snps", type=int, default=20000)
  parser.add_argument("--causal", type=int, default=10)
  parser.add_argument("--pcs", type=int, default=4, help="PC-like covariates besides 3")
  parser.add_argument("--chunk", type=int, default=1024, help="SNPs per jitted chunk")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tests", default="linear,logistic")
  parser.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
  args = parser.parse_args(argv)
  if args.quick:
    args.samples, args.snps, args.chunk, args.repeats = (QUICK[k] for k in (
        "samples", "snps", "chunk", "repeats"))
  tests = args.tests.split(",")
  if set(tests) - {"linear", "logistic"} or min(args.samples, args.snps, args.chunk,
                                                 args.repeats) < 1:
    parser.error("--tests is linear and/or logistic; sizes and --repeats must be >= 1")
  print("GWAS: per-SNP association throughput, jaxml (JAX) against plink2 --glm")
  print(f"machine: {platform.platform()}, {cores()} CPU cores, load average (1, 5, 15 min) "
        "at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  peer = "plink2 not on PATH: jax rows only (Debian: apt-get install plink2)"
  if gwas_plink2.available():
    peer = subprocess.run(["plink2", "--version"], capture_output=True, text=True,
                          check=False).stdout.strip()
  print(f"python {platform.python_version()}, jax {jax.__version__} "
        f"({jax.devices()[0].platform}, {jax.device_count()} devices, 1 used), jaxlib "
        f"{importlib.metadata.version('jaxlib')}, numpy {np.__version__}; {peer}")
  genotypes, quantitative, binary, covariates, causal = simulate(
      args.samples, args.snps, args.causal, args.pcs)
  print(f"data: {args.samples} individuals x {args.snps} SNPs, {args.causal} causal, "
        f"{covariates.shape[1]} covariates + intercept, {binary.mean():.0%} cases; chunks of "
        f"{args.chunk} SNPs")
  directory = tempfile.mkdtemp(prefix="jaxml-gwas-bench-")
  try:
    prefix = plink.write_bed(os.path.join(directory, "data"), genotypes)
    results = {test: run(test, prefix, genotypes,
                         quantitative if test == "linear" else binary, covariates, args)
               for test in tests}
  finally:
    shutil.rmtree(directory, ignore_errors=True)
  results["causal"] = causal
  return results


if __name__ == "__main__":
  main()
