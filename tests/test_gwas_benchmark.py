"""`benchmarks/gwas.py --quick`: both tests' rows print, and jax's statistics equal plink2's
on the benchmark's own files where plink2 is installed."""

import contextlib
import io

import numpy as np

from jaxml.evaluators import gwas_plink2
from tests.launch_utils import load_benchmark


def test_quick_run():
  benchmark = load_benchmark("gwas")
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = benchmark.main(["--quick"])
  text = out.getvalue()
  for test in ("linear", "logistic"):
    assert f"\n{test}: first (compiling) jax call" in text
    ours = result[test]["jax"]
    assert ours.converged.sum() == benchmark.QUICK["snps"]
    if gwas_plink2.available():
      theirs = result[test]["plink2"]
      assert "plink2 / this" in text
      # float32 jax against plink2's 6 printed digits (tests/evaluators/test_gwas_plink2.py
      # checks this to the last digit in float64).
      np.testing.assert_allclose((theirs["BETA"] - ours.beta) / ours.se, 0, atol=1e-4)
      np.testing.assert_allclose(theirs["SE"], ours.se, rtol=1e-4)
