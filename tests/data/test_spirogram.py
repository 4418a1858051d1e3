"""The expiratory flow model and the flow–volume derivation shared with the UK Biobank reader:
an ideal blow has the FEV1/FVC and PEF it was built with, the flow–volume curve integrates
back to the volume–time curve, and the limb exponent is what makes a curve scooped."""

import numpy as np
import pytest

from jaxml.data import spirogram

SAMPLES = 1500


def blow(fvc=4.0, ratio=0.75, curvature=1.5, rise=0.03, tail=0.12, modulation=None,
         stop=np.inf):
  table = spirogram.exhalation_table(curvature, rise, tail)
  m = np.ones(SAMPLES) if modulation is None else modulation
  return spirogram.expiration(fvc, ratio, table, m, stop)


@pytest.mark.parametrize("ratio,curvature", [(0.82, 1.2), (0.7, 2.0), (0.5, 3.5)])
def test_an_ideal_blow_has_the_ratio_and_peak_it_was_built_with(ratio, curvature):
  volume, pef = blow(ratio=ratio, curvature=curvature)
  measured = spirogram.measures(volume)
  assert measured["fev1"] == pytest.approx(4.0 * ratio, rel=1e-3)
  assert measured["fvc"] == pytest.approx(4.0, rel=2e-3)  # the blow ends within 15 s
  # The largest 10 ms segment flow is the model's A = FVC tau(r), up to the sampling.
  assert measured["pef"] == pytest.approx(pef, rel=0.02)
  assert np.all(np.diff(volume) >= 0)


def test_the_blow_lasts_tau1_over_taur_seconds_whatever_the_fvc():
  table = spirogram.exhalation_table(2.0, 0.03, 0.12)
  duration = spirogram.natural_duration(table, 0.7)
  for fvc in (2.0, 5.0):
    volume, _ = spirogram.expiration(fvc, 0.7, table, np.ones(SAMPLES))
    reached = np.flatnonzero(volume >= fvc * (1 - 1e-9))[0] * spirogram.SAMPLE_SECONDS
    assert reached == pytest.approx(duration, abs=0.02)


def test_flow_volume_integrates_back_to_the_volume_time_curve():
  rng = np.random.default_rng(0)
  modulation = np.exp(0.05 * np.cumsum(rng.standard_normal(SAMPLES)) / 10)
  for volume in (blow()[0], blow(ratio=0.55, curvature=3.0, modulation=modulation)[0],
                 np.round(blow(ratio=0.6, curvature=2.5)[0] * 1000) / 1000):
    curve = spirogram.flow_volume(volume)
    fvc = volume.max()
    grid = np.linspace(0, fvc, spirogram.GRID_POINTS)
    # t(V) = int_0^V dV / flow(V), trapezoidal on the grid, against the recorded samples.
    inverse = 1 / curve
    recomputed = np.concatenate([[0], np.cumsum((inverse[1:] + inverse[:-1]) / 2
                                                * np.diff(grid))])
    recorded = spirogram.time_at_volumes(volume, grid)
    upto = grid <= 0.95 * fvc
    np.testing.assert_allclose(recomputed[upto], recorded[upto], atol=0.03)


def test_the_limb_exponent_scoops_the_curve_and_lowers_nothing_else_at_fixed_ratio():
  values = [spirogram.concavity(spirogram.flow_volume(blow(ratio=0.7, curvature=k)[0]))
            for k in (1.0, 1.5, 2.0, 3.0, 4.0)]
  assert np.all(np.diff(values) > 0)
  assert abs(values[0]) < 0.1  # k = 1: a nearly straight descending limb
  assert spirogram.concavity(np.linspace(5, 0, 100)) == pytest.approx(0)


def test_absolute_grid_is_zero_beyond_the_fvc_and_relative_grid_spans_it():
  volume, _ = blow(fvc=3.0)
  absolute = spirogram.flow_volume(volume, 1000, grid_volume=8.0)
  grid = np.linspace(0, 8.0, 1000)
  assert not absolute[grid > volume.max()].any()
  assert absolute[(grid > 0.1) & (grid < 2.5)].min() > 0
  relative = spirogram.flow_volume(volume)
  assert relative.max() == pytest.approx(absolute.max(), rel=0.02)


def test_plateaus_are_merged_into_the_next_volume_step():
  # 1 mL every third sample is 1 mL / 30 ms, not 0.1 L/s alternating with zeros.
  volume = np.repeat(np.arange(200) / 1000, 3)
  _, flows = spirogram.segment_flows(volume)
  np.testing.assert_allclose(flows, 0.001 / 0.03)
