"""Simulated SNP genotypes with population structure and causal loci (for GWAS power checks).

The model:

- Ancestral allele frequencies p_j ~ Uniform(min_frequency, max_frequency), j < num_snps.
- Population structure (Balding & Nichols 1995): group g's frequency at SNP j is
  p_gj ~ Beta(p_j (1 - F) / F, (1 - p_j)(1 - F) / F), F = F_ST, so the groups drift apart
  with mean p_j and variance F p_j (1 - p_j). F = 0 gives every group the ancestral p_j.
  Frequencies are clipped to [0.001, 0.999] so no SNP is fixed within a group.
- Genotypes: person i of group g carries G_ij ~ Binomial(2, p_gj) copies of the effect
  allele, int8 in {0, 1, 2}, independent across SNPs (no linkage disequilibrium).
- Causal loci: `num_causal` SNPs drawn without replacement; effects beta_c ~ N(0, 1),
  rescaled so that the genetic score sum_c beta_c (G_ic - 2 p_c) has variance `heritability`
  under the ancestral frequencies (Hardy–Weinberg: var G_ic = 2 p_c (1 - p_c)). The score
  acts additively on a liability (see the `spirometry` source).

Streams: frequencies, drift, causal loci and effects each have their own stream keyed by the
seed; each person's genotypes are drawn from a stream keyed by (seed, person), so a person's
genotypes do not change with the cohort's size.
"""

from __future__ import annotations

import numpy as np

FREQUENCY_STREAM, DRIFT_STREAM, CAUSAL_STREAM, EFFECT_STREAM, PERSON_STREAM = 11, 12, 13, 14, 15


def frequencies(seed: int, num_snps: int, groups: int, fst: float,
                low: float = 0.05, high: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """(ancestral [S], per-group [groups, S]) effect-allele frequencies."""
  ancestral = np.random.default_rng([seed, FREQUENCY_STREAM]).uniform(low, high, num_snps)
  if fst <= 0:
    return ancestral, np.tile(ancestral, (groups, 1))
  scale = (1 - fst) / fst
  rng = np.random.default_rng([seed, DRIFT_STREAM])
  drifted = rng.beta(ancestral * scale, (1 - ancestral) * scale, (groups, num_snps))
  return ancestral, np.clip(drifted, 0.001, 0.999)


def causal_effects(seed: int, num_snps: int, num_causal: int, ancestral: np.ndarray,
                   heritability: float) -> tuple[np.ndarray, np.ndarray]:
  """(sorted causal SNP indices [C], per-allele effects [C]) scaled to the heritability."""
  causal = np.sort(np.random.default_rng([seed, CAUSAL_STREAM]).choice(
      num_snps, num_causal, replace=False))
  effects = np.random.default_rng([seed, EFFECT_STREAM]).standard_normal(num_causal)
  p = ancestral[causal]
  variance = np.sum(effects**2 * 2 * p * (1 - p))
  return causal, effects * np.sqrt(heritability / variance) if variance > 0 else effects * 0


def person_genotypes(seed: int, person: int, group_frequencies: np.ndarray) -> np.ndarray:
  """[S] int8 genotypes of one person, given their group's frequencies [S]."""
  rng = np.random.default_rng([seed, PERSON_STREAM, person])
  return rng.binomial(2, group_frequencies).astype(np.int8)


def genotype_matrix(seed: int, groups: np.ndarray,
                    group_frequencies: np.ndarray) -> np.ndarray:
  """[N, S] int8 genotypes of persons 0..N-1 with the given ancestry groups."""
  out = np.empty((len(groups), group_frequencies.shape[1]), np.int8)
  for person, group in enumerate(groups):
    out[person] = person_genotypes(seed, person, group_frequencies[group])
  return out


def genetic_score(genotypes: np.ndarray, causal: np.ndarray, effects: np.ndarray,
                  ancestral: np.ndarray) -> np.ndarray:
  """[N] sum_c beta_c (G_ic - 2 p_c), centred at the ancestral frequencies."""
  centred = genotypes[:, causal].astype(np.float64) - 2 * ancestral[causal]
  return centred @ effects
