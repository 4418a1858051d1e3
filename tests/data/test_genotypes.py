"""Simulated genotypes: Balding–Nichols drift at the stated F_ST, Hardy–Weinberg genotypes,
the genetic score's variance equal to the heritability, and per-person streams."""

import numpy as np
import pytest

from jaxml.data import genotypes


def test_drift_has_the_stated_fst_and_mean():
  ancestral, groups = genotypes.frequencies(0, 20_000, 4, 0.05)
  assert groups.shape == (4, 20_000)
  assert ancestral.min() >= 0.05 and ancestral.max() <= 0.5
  # Var(p_g | p) = F p (1 - p) and E[p_g | p] = p (up to the [0.001, 0.999] clip).
  fst = np.mean((groups - ancestral) ** 2) / np.mean(ancestral * (1 - ancestral))
  assert fst == pytest.approx(0.05, rel=0.05)
  assert np.mean(groups - ancestral) == pytest.approx(0, abs=0.002)
  same, flat = genotypes.frequencies(0, 100, 3, 0.0)
  np.testing.assert_array_equal(flat, np.tile(same, (3, 1)))


def test_genotypes_are_hardy_weinberg_and_the_score_has_the_heritability():
  ancestral, groups = genotypes.frequencies(1, 400, 1, 0.0)
  people = np.zeros(4000, int)
  g = genotypes.genotype_matrix(1, people, groups)
  assert g.dtype == np.int8 and set(np.unique(g)) == {0, 1, 2}
  np.testing.assert_allclose(g.mean(0), 2 * ancestral, atol=4 * np.sqrt(0.5 / 4000))
  het = (g == 1).mean(0)
  np.testing.assert_allclose(het, 2 * ancestral * (1 - ancestral), atol=4 * np.sqrt(0.25 / 4000))
  causal, effects = genotypes.causal_effects(1, 400, 25, ancestral, 0.4)
  assert len(np.unique(causal)) == 25
  p = ancestral[causal]
  assert np.sum(effects**2 * 2 * p * (1 - p)) == pytest.approx(0.4)
  score = genotypes.genetic_score(g, causal, effects, ancestral)
  assert score.var() == pytest.approx(0.4, rel=4 * np.sqrt(2 / 4000))
  assert abs(score.mean()) < 4 * np.sqrt(0.4 / 4000)


def test_a_person_keeps_their_genotypes_whatever_the_cohort():
  _, groups = genotypes.frequencies(2, 50, 2, 0.1)
  small = genotypes.genotype_matrix(2, np.array([0, 1, 1]), groups)
  large = genotypes.genotype_matrix(2, np.array([0, 1, 1, 0, 0]), groups)
  np.testing.assert_array_equal(large[:3], small)
  np.testing.assert_array_equal(small[1], genotypes.person_genotypes(2, 1, groups[1]))
