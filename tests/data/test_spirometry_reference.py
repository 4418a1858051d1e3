"""GLI-2012 and NHANES III reference values (jaxml/data/spirometry_reference.py) against
pyspiro's public per-row API, and the LMS formulas against each other."""

import numpy as np
import pytest

from jaxml.data import spirometry_reference as reference

pyspiro = pytest.importorskip("pyspiro")

# Both sexes, children to the old, every GLI ethnicity code, short and tall.
SEX = np.array([0, 1, 0, 1, 1, 0, 1])
AGE = np.array([8.0, 25.5, 40.0, 57.3, 70.0, 82.0, 94.0])
HEIGHT = np.array([130.0, 182.0, 160.0, 175.0, 168.0, 150.0, 171.0])
ETHNICITY = np.array([1, 2, 3, 4, 5, 1, 2])


def test_lms_arrays_equal_pyspiro_public_scalar_api():
  gli = pyspiro.GLI_2012()
  gli.set_strategy("closest")
  for name in reference.PARAMETERS:
    lms = reference.gli_lms(name, SEX, AGE, HEIGHT, ETHNICITY)
    for i in range(len(SEX)):
      expected = gli.lms(int(SEX[i]), float(AGE[i]), float(HEIGHT[i]), int(ETHNICITY[i]),
                         gli.Parameters[name], 0.0)
      np.testing.assert_allclose([x[i] for x in lms], [float(e) for e in expected], rtol=1e-5)


def test_z_scores_and_lower_limit_equal_pyspiro():
  pd = pytest.importorskip("pandas")
  gli = pyspiro.GLI_2012()
  gli.set_strategy("closest")
  lms = reference.gli_lms("FEV1", SEX, AGE, HEIGHT, ETHNICITY)
  values = reference.from_z(lms, np.linspace(-2.5, 2.5, len(SEX)))
  np.testing.assert_allclose(reference.to_z(lms, values), np.linspace(-2.5, 2.5, len(SEX)),
                             atol=1e-9)
  frame = pd.DataFrame({"sex": SEX, "age": AGE, "height": HEIGHT, "ethnicity": ETHNICITY,
                        "value": values})
  theirs = gli.compute(frame, gli.Parameters.FEV1, value_col="value", ethnicity_col="ethnicity",
                       metrics=("zscore", "lln"))
  np.testing.assert_allclose(reference.to_z(lms, values), theirs["zscore"], atol=1e-4)
  np.testing.assert_allclose(reference.lln(lms), theirs["lln"], rtol=1e-4)
  # The LLN is the 5th centile: its z-score is -1.645.
  np.testing.assert_allclose(reference.to_z(lms, reference.lln(lms)), reference.LLN_Z)


def test_pef_reference_is_nhanes_with_caucasian_for_the_groups_it_lacks():
  predicted, low = reference.pef_reference(SEX, AGE + 20, HEIGHT + 10, ETHNICITY)
  assert np.all(low < predicted)
  # GLI groups 3-5 (Asian, other) take NHANES III's Caucasian equation, group 2 its own.
  caucasian, _ = reference.pef_reference(SEX, AGE + 20, HEIGHT + 10, np.ones_like(ETHNICITY))
  asian_or_other = ETHNICITY >= 3
  np.testing.assert_allclose(predicted[asian_or_other], caucasian[asian_or_other])
  assert np.all(predicted[ETHNICITY == 2] != caucasian[ETHNICITY == 2])


def test_an_unknown_ethnicity_code_is_refused():
  with pytest.raises(ValueError, match="unknown ethnicity code 6"):
    reference.gli_lms("FVC", SEX[:1], AGE[:1], HEIGHT[:1], np.array([6]))
