"""Reference values for spirometry: GLI-2012 (FEV1, FVC, FEV1/FVC) and NHANES III (PEF).

Both come from `pyspiro` (its coefficient tables; pinned to 1.0.x, whose GLI_2012 class has the
vectorised `_lms_arrays` that this module calls: the public scalar `lms()` is one Python call
per person, 100x slower, and tests/data/test_spirometry_reference.py holds the two equal).

GLI-2012 (Quanjer et al., Eur Respir J 2012) is an LMS model: a measured value y of a person
with median M, skewness L and coefficient of variation S has the z-score
z = ((y / M)^L - 1) / (L S), so y = M (1 + L S z)^(1/L), and the lower limit of normal (LLN)
is the 5th centile, z = -1.645. Ethnicity codes are GLI's: 1 Caucasian, 2 African-American,
3 North-East Asian, 4 South-East Asian, 5 other/mixed. Ages outside 3-95 are clamped.

GLI-2012 has no PEF equation. PEF's predicted value and LLN come from Hankinson et al. 1999
(NHANES III, adults 20-80), the reference the ATS used before GLI: linear in age, age^2 and
height^2, with a constant standard error, so predicted = (LLN + ULN) / 2. NHANES III has
Caucasian, African-American and Mexican-American equations only; GLI groups 3-5 use the
Caucasian one (stated approximation: the simulator only reports PEF against it). Heights and
ages outside its tables are clamped.
"""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np
import pandas as pd

PARAMETERS = ("FEV1", "FVC", "FEV1FVC")
ETHNICITIES = ("Caucasian", "African-American", "North-East Asian", "South-East Asian",
               "Other/mixed")  # GLI codes 1..5
LLN_Z = -1.645


@functools.cache
def _reference(name: str):
  """pyspiro's `name` reference (GLI_2012, HANKINSON_1999): ages and heights outside its
  tables clamped to the closest, its per-row warnings off."""
  import pyspiro  # noqa: PLC0415 (a data-set dependency: imported where it is used)
  reference = getattr(pyspiro, name)()
  reference.set_strategy("closest")
  reference.set_silence(True)
  return reference


def _gli():
  return _reference("GLI_2012")


def _nhanes():
  return _reference("HANKINSON_1999")


def gli_lms(parameter: str, sex, age, height, ethnicity) -> tuple[np.ndarray, ...]:
  """(L, M, S) float64 arrays of GLI-2012 for `parameter` in PARAMETERS; sex 0 female,
  1 male; age in years; height in cm; ethnicity a GLI code 1..5 (arrays of one length)."""
  reference = _gli()
  sex, age, height, ethnicity = (np.asarray(a) for a in (sex, age, height, ethnicity))
  code = reference.Parameters[parameter]
  l, m, s, na = reference._lms_arrays(sex.astype(int), age.astype(float),
                                      height.astype(float), ethnicity.astype(int), code)
  if na.any():  # "closest" clamps ages, so only a code GLI does not know lands here
    raise ValueError(f"GLI-2012 has no {parameter} for rows {np.flatnonzero(na)[:5]}")
  return l, m, s


def from_z(lms, z) -> np.ndarray:
  """The value whose LMS z-score is z."""
  l, m, s = lms
  return m * (1 + l * s * np.asarray(z)) ** (1 / l)


def to_z(lms, value) -> np.ndarray:
  """The LMS z-score of `value` (the same formula as pyspiro's `zscore`)."""
  l, m, s = lms
  return ((np.asarray(value) / m) ** l - 1) / (l * s)


def lln(lms) -> np.ndarray:
  """The lower limit of normal, the 5th centile."""
  return from_z(lms, LLN_Z)


def pef_reference(sex, age, height, ethnicity) -> tuple[np.ndarray, np.ndarray]:
  """(predicted PEF, LLN of PEF) in L/s from NHANES III; GLI ethnicity codes (3-5 use the
  Caucasian equation)."""
  nhanes = np.where(np.asarray(ethnicity) == 2, 2, 1)
  frame = pd.DataFrame({"sex": np.asarray(sex, int), "age": np.asarray(age, float),
                        "height": np.asarray(height, float), "ethnicity": nhanes})
  reference = _nhanes()
  with contextlib.redirect_stdout(io.StringIO()):  # it reports each clamped height
    out = reference.compute(frame, reference.Parameters.PEF, ethnicity_col="ethnicity",
                            metrics=("lln", "uln"))
  low, high = out["lln"].to_numpy(float), out["uln"].to_numpy(float)
  return (low + high) / 2, low
