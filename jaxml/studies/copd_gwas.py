"""GWAS of COPD phenotypes on a simulated spirometry cohort, against the truth it knows
(issue 23; Cosentino et al., Nature Genetics 2023: the ML liability score as a GWAS phenotype
finds the known loci and more, with effect sizes agreeing with the manual phenotype's).

`gwas_rows(cohort, phenotypes, ...)` runs one per-SNP association per phenotype on the
cohort's genotypes (`jaxml.data.sources.spirometry.cohort`) and returns a flat row of numbers
per phenotype. A phenotype is an [N] float array over the cohort's individuals, NaN for the
individuals outside that GWAS (e.g. the model's training split); names in `binary` are 0/1 and
take the logistic test, the others the linear one (`jaxml.evaluators.gwas`).

Covariates: age, sex, height and `num_pcs` genotype principal components (an intercept is
added by the gwas module). The components are computed ONCE, on the union of the individuals
any phenotype has (its non-NaN rows), and every phenotype's regression uses them on its own
rows: one set of ancestry axes for the whole analysis, as a biobank GWAS computes its PCs once
for the cohort, so phenotypes that cover the same individuals get identical covariates.

A row (every value a float or int; NaN where a quantity is undefined, e.g. an R^2 over fewer
than 3 SNPs):

  num_samples        individuals in the regression; num_cases too for a binary phenotype
  significant        SNPs with p < threshold (genome-wide 5e-8 by default)
  causal_found       causal SNPs with p < threshold (the simulator's SNPs are independent, so
                     a locus is its SNP); causal_total; power = causal_found / causal_total
  false_discoveries  significant non-causal SNPs
  causal_found_p<t>, power_p<t>, false_discoveries_p<t>
                     the same at each of LOOSER_THRESHOLDS (1e-5 is about Bonferroni for the
                     simulator's default 2,000 SNPs, 2.5e-5): a small simulated cohort may
                     have little power at 5e-8, so both are reported
  lambda_gc          genomic inflation over all tested SNPs (as a real study reports it)
  min_causal_p       the smallest p among the causal SNPs
  truth_r, truth_slope
                     Pearson r and the OLS slope (with intercept) of the betas on the
                     simulator's true per-allele `effects` (on the liability) over the causal
                     SNPs: about 1 and 1 for the liability itself; the sign follows the
                     phenotype's direction (FEV1/FVC falls as liability rises)
With `reference` (one of the phenotypes), agreement of this phenotype's betas with the
reference's (y = this phenotype's beta, x = the reference's), over three SNP sets:
  *_causal           the causal SNPs (the simulation's truth)
  *_both             SNPs significant (p < threshold) in both GWAS: the post's analogue
                     ("agreement on the effect sizes for the variants discovered by both our
                     ML approach and the manual one (R2=0.93)")
  *_either           SNPs significant in either
  each as effect_r2_<set> (squared Pearson r, `gwas_metrics.effect_size_r2`; scale-free, so
  a liability score and a ratio compare), effect_slope_<set>, sign_agreement_<set> (fraction
  of the set whose betas have the same sign: near 0, not 1, for phenotypes that run in
  opposite directions, such as FEV1/FVC against a liability; the slope's sign says which)
  and num_<set> (SNPs in the set with both betas; num_causal is causal_total less any causal
  SNP without a test).

Cost (2 shared CPU cores, measured under load): at the simulator's default 3,000 people
(2,000 SNPs) the PCA's dense N x N eigendecomposition in `gwas_pca` dominates (~12 s of
~16-24 s); the association tests take about a second once compiled.

Plots in `artifacts_dir` (when given): gwas_<name>_manhattan.png (causal SNPs ringed),
gwas_<name>_qq.png, and for each phenotype other than the reference
gwas_<name>_effects.png (its betas against the reference's, causal SNPs marked).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection

import numpy as np

from jaxml.core import files
from jaxml.errors import ConfigError
from jaxml.evaluators import gwas, gwas_metrics, gwas_pca, gwas_plots

LOOSER_THRESHOLDS = (1e-5, 1e-4)
DEMOGRAPHICS = ("age", "sex", "height")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # becomes part of a file name


def threshold_key(threshold: float) -> str:
  """`p1e-05` for 1e-5: the suffix of a row's keys at a looser threshold."""
  return f"p{threshold:.0e}"


def _checked(cohort: dict, phenotypes: dict, binary: Collection[str],
             reference: str | None) -> dict[str, np.ndarray]:
  """Float64 phenotypes, every input checked: one ConfigError naming the first bad one."""
  missing = [k for k in ("genotypes", "causal", "effects", *DEMOGRAPHICS) if k not in cohort]
  if missing:
    raise ConfigError(f"copd_gwas: the cohort lacks {', '.join(missing)} "
                      "(pass spirometry.cohort's dict)")
  n = np.shape(cohort["genotypes"])[0]
  if not phenotypes:
    raise ConfigError("copd_gwas: no phenotypes given")
  unknown = sorted(set(binary) - set(phenotypes))
  if unknown:
    raise ConfigError(f"copd_gwas: binary names {unknown} are not among the phenotypes "
                      f"{sorted(phenotypes)}")
  if reference is not None and reference not in phenotypes:
    raise ConfigError(f"copd_gwas: reference={reference!r} is not among the phenotypes "
                      f"{sorted(phenotypes)}")
  out = {}
  for name, values in phenotypes.items():
    if not isinstance(name, str) or not _NAME.match(name):
      raise ConfigError(f"copd_gwas: phenotype name {name!r} must be letters, digits, '_', "
                        "'.', '-' (it names the plots)")
    values = np.asarray(values, np.float64)
    if values.shape != (n,):
      raise ConfigError(f"copd_gwas: phenotype {name!r} has shape {values.shape}; the cohort "
                        f"has {n} individuals")
    if np.isinf(values).any():
      raise ConfigError(f"copd_gwas: phenotype {name!r} has infinite values at rows "
                        f"{np.flatnonzero(np.isinf(values))[:5].tolist()} (NaN marks an "
                        "individual outside the GWAS)")
    if name in binary:
      bad = ~np.isnan(values) & (values != 0) & (values != 1)
      if bad.any():
        raise ConfigError(f"copd_gwas: binary phenotype {name!r} must be 0/1 (NaN outside "
                          f"the GWAS); rows {np.flatnonzero(bad)[:5].tolist()} hold "
                          f"{np.unique(values[bad])[:5].tolist()}")
    out[name] = values
  return out


def _check_num_pcs(num_pcs) -> None:
  if isinstance(num_pcs, bool) or not isinstance(num_pcs, int) or num_pcs < 0:
    raise ConfigError(f"copd_gwas: num_pcs={num_pcs!r} must be an integer >= 0")


def covariates(cohort: dict, rows: np.ndarray, num_pcs: int = 4, *, mesh=None) -> np.ndarray:
  """[N, 3 + num_pcs] float64: age, sex, height and the top `num_pcs` principal components of
  the genotypes of the individuals `rows` (bool [N]); NaN on the other rows, which every
  regression then leaves out."""
  _check_num_pcs(num_pcs)
  rows = np.asarray(rows, bool)
  out = np.full((len(rows), len(DEMOGRAPHICS) + num_pcs), np.nan)
  for j, key in enumerate(DEMOGRAPHICS):
    out[rows, j] = np.asarray(cohort[key], np.float64)[rows]
  if num_pcs:
    if num_pcs >= rows.sum():
      raise ConfigError(f"copd_gwas: num_pcs={num_pcs} needs more than {num_pcs} individuals; "
                        f"the phenotypes cover {int(rows.sum())}")
    components, _ = gwas_pca.principal_components(np.asarray(cohort["genotypes"])[rows],
                                                  num_pcs, mesh=mesh)
    out[rows, len(DEMOGRAPHICS):] = components
  return out


def associations(cohort: dict, phenotypes: dict[str, np.ndarray], *,
                 binary: Collection[str] = (), num_pcs: int = 4,
                 mesh=None) -> dict[str, gwas.Association]:
  """Each phenotype's per-SNP association with the covariates of `covariates` computed on the
  union of the phenotypes' rows (inputs checked as `gwas_rows` does)."""
  phenotypes = _checked(cohort, phenotypes, binary, None)
  _check_num_pcs(num_pcs)
  rows = np.any([~np.isnan(v) for v in phenotypes.values()], axis=0)
  num_covariates = len(DEMOGRAPHICS) + num_pcs + 2
  for name, values in phenotypes.items():
    count = int((~np.isnan(values)).sum())
    if count <= num_covariates:
      raise ConfigError(f"copd_gwas: phenotype {name!r} has {count} individuals, not more than "
                        f"its {num_covariates} regression columns (intercept, "
                        f"{len(DEMOGRAPHICS)} demographics, {num_pcs} PCs, the SNP)")
  design = covariates(cohort, rows, num_pcs, mesh=mesh)
  genotypes = np.asarray(cohort["genotypes"])
  out = {}
  for name, values in phenotypes.items():
    test = gwas.logistic_association if name in binary else gwas.linear_association
    try:
      out[name] = test(genotypes, values, design, mesh=mesh)
    except ConfigError as error:
      raise ConfigError(f"copd_gwas: phenotype {name!r}: {error}") from error
  return out


def _agreement(beta: np.ndarray, beta_reference: np.ndarray, snps: np.ndarray) -> dict:
  """effect_r2, effect_slope, sign_agreement and num over `snps` where both betas exist."""
  x, y = beta_reference[snps], beta[snps]
  both = np.isfinite(x) & np.isfinite(y)
  x, y = x[both], y[both]
  out = {"num": int(len(x)), "effect_r2": np.nan, "effect_slope": np.nan,
         "sign_agreement": float(np.mean(np.sign(x) == np.sign(y))) if len(x) else np.nan}
  if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
    out["effect_r2"] = gwas_metrics.effect_size_r2(y, x)
    out["effect_slope"] = float(np.polyfit(x, y, 1)[0])
  return out


def _truth(beta: np.ndarray, causal: np.ndarray, effects: np.ndarray) -> dict:
  b = beta[causal]
  ok = np.isfinite(b)
  if ok.sum() < 3:
    return {"truth_r": np.nan, "truth_slope": np.nan}
  return {"truth_r": float(np.corrcoef(b[ok], effects[ok])[0, 1]),
          "truth_slope": float(np.polyfit(effects[ok], b[ok], 1)[0])}


def _row(result: gwas.Association, values: np.ndarray, is_binary: bool, causal: np.ndarray,
         effects: np.ndarray, threshold: float) -> dict:
  keep = ~np.isnan(values)
  row = {"num_samples": int(keep.sum())}
  if is_binary:
    row["num_cases"] = int(values[keep].sum())
  found = gwas_metrics.count_discoveries(result.p, causal, threshold=threshold)
  row.update(significant=len(found.significant), causal_found=len(found.recovered),
             causal_total=found.num_causal, power=len(found.recovered) / found.num_causal,
             false_discoveries=len(found.false))
  for looser in LOOSER_THRESHOLDS:
    more = gwas_metrics.count_discoveries(result.p, causal, threshold=looser)
    key = threshold_key(looser)
    row[f"causal_found_{key}"] = len(more.recovered)
    row[f"power_{key}"] = len(more.recovered) / more.num_causal
    row[f"false_discoveries_{key}"] = len(more.false)
  row["lambda_gc"] = gwas_metrics.genomic_inflation(result.p)
  causal_p = result.p[causal]
  row["min_causal_p"] = (float(np.nanmin(causal_p)) if np.isfinite(causal_p).any()
                         else np.nan)
  row.update(_truth(result.beta, causal, effects))
  return row


def _effects_plot(beta: np.ndarray, beta_reference: np.ndarray, causal: np.ndarray,
                  path: str, *, name: str, reference: str) -> str:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import

  from jaxml.core.plots import save_figure  # pylint: disable=import-outside-toplevel

  fig = Figure(figsize=(4.5, 4.5))
  ax = fig.subplots()
  other = np.ones(len(beta), bool)
  other[causal] = False
  ax.scatter(beta_reference[other], beta[other], s=4, color="0.6", label="non-causal",
             rasterized=True)
  ax.scatter(beta_reference[causal], beta[causal], s=18, color="#c0392b", label="causal")
  ax.axhline(0, color="0.3", linewidth=0.5)
  ax.axvline(0, color="0.3", linewidth=0.5)
  ax.set_xlabel(f"beta ({reference})")
  ax.set_ylabel(f"beta ({name})")
  r2 = _agreement(beta, beta_reference, causal)["effect_r2"]
  ax.set_title(f"{name} vs {reference}: causal R² = {r2:.2f}")
  ax.legend(loc="best")
  fig.tight_layout()
  return save_figure(fig, path)


def gwas_rows(cohort: dict, phenotypes: dict[str, np.ndarray], *,
              binary: Collection[str] = (), num_pcs: int = 4, threshold: float = 5e-8,
              reference: str | None = None, artifacts_dir: str | None = None,
              mesh=None) -> dict[str, dict]:
  """One row of numbers per phenotype (see the module docstring), plots into `artifacts_dir`.

  `cohort`: `spirometry.cohort`'s dict (genotypes, causal, effects, age, sex, height);
  `phenotypes`: name -> [N] float, NaN outside that GWAS; `binary`: the 0/1 ones (logistic);
  `reference`: the phenotype the others' betas are compared with; `mesh`: shards the SNP axis.
  """
  if not 0 < threshold < 1:
    raise ConfigError(f"copd_gwas: threshold={threshold!r} must be in (0, 1)")
  checked = _checked(cohort, phenotypes, binary, reference)
  results = associations(cohort, checked, binary=binary, num_pcs=num_pcs, mesh=mesh)
  causal = np.asarray(cohort["causal"], np.int64)
  effects = np.asarray(cohort["effects"], np.float64)
  rows = {name: _row(result, checked[name], name in binary, causal, effects, threshold)
          for name, result in results.items()}
  if reference is not None:
    base = results[reference]
    base_significant = np.nan_to_num(base.p, nan=1.0) < threshold
    for name, result in results.items():
      significant = np.nan_to_num(result.p, nan=1.0) < threshold
      for label, snps in (("causal", causal),
                          ("both", np.flatnonzero(significant & base_significant)),
                          ("either", np.flatnonzero(significant | base_significant))):
        agreement = _agreement(result.beta, base.beta, snps)
        rows[name].update({f"{k}_{label}": v for k, v in agreement.items()})
  if artifacts_dir is not None:
    files.makedirs(artifacts_dir)
    for name, result in results.items():
      stem = os.path.join(artifacts_dir, f"gwas_{name}")
      gwas_plots.manhattan_plot(result.p, f"{stem}_manhattan.png", causal=causal,
                                threshold=threshold, title=name)
      gwas_plots.qq_plot(result.p, f"{stem}_qq.png", title=name)
      if reference is not None and name != reference:
        _effects_plot(result.beta, results[reference].beta, causal, f"{stem}_effects.png",
                      name=name, reference=reference)
  return rows
