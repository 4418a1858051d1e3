"""A forced expiration as a curve: the expiratory flow model, and the one flow–volume derivation.

The model (used by the `spirometry` source). Let x = V / FVC be the fraction of the forced
vital capacity exhaled. Flow is a function of exhaled volume, as in the wave-speed picture of
forced expiration (past the peak, flow is effort-independent and set by lung volume):

    flow(V) = A * h(x) / max h,      h(x) = rise(x) * limb(x),
    rise(x) = sqrt(1 - exp(-x / x_r)),
    limb(x) = (1 - x)^k + tail * sqrt(1 - x).

- `rise` is the effort-dependent start: near x = 0 flow grows like sqrt(V), i.e. linearly in
  time, reaching the peak (PEF = A) at 5-9% of FVC within ~50-80 ms (x_r = 0.03; a poorer
  effort is a larger x_r: a slower rise and a lower peak).
- `limb` is the descending limb. k = 1 is the straight limb of a single-compartment lung;
  k > 1 bows it towards the volume axis: the concave, "scooped" limb of airflow obstruction.
  k grows with disease severity. The `tail` term makes flow fall to zero like sqrt(1 - x), so
  the blow ends in finite time (flow ~ A tail sqrt(1 - x) near the end).

Volume–time follows from dV/dt = flow(V): with tau(x) = int_0^x dx' max h / h(x'), the time
to exhale x is (FVC / A) tau(x). So FEV1 / FVC = r exactly when A = FVC tau(r) / 1 s; given
FVC, the ratio and the shape, PEF is an output, and the blow lasts tau(1) / tau(r) seconds
whatever the FVC. A blow's effort is a time modulation m(t) > 0 (jitter, a cough): flow is
m(t) flow(V), so V(t) = FVC x(tau(r) * int_0^t m) exactly (the modulation reparametrises
time). tau is computed on nodes x = (1 - cos(pi u)) / 2, dense at both ends, where dx / h
stays finite.

The flow–volume derivation (`flow_volume`) is shared with the UK Biobank reader, so real and
simulated blows become model inputs the same way. A blow is cumulative exhaled volume sampled
every 10 ms from the start of the blow (time zero); the first sample is taken as zero volume
and small dips are removed by a running maximum. Each new volume level is kept at the first
sample that reaches it; between two kept samples flow is their volume step over their time
step, placed at the middle of the volume step (so a 1 mL step after a 30 ms plateau is
0.033 L/s, not 0.1 and zeros). Flow is then linearly interpolated on `points` evenly spaced
volumes from 0 to FVC inclusive (the "relative" grid: each curve spans its own FVC, as the
paper's code does), or from 0 to a fixed `grid_volume` with zero flow beyond the FVC (the
"absolute" grid, which keeps the FVC visible to a model). Outside the kept midpoints flow is
held at the end values.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_SECONDS = 0.01  # 10 ms: the UK Biobank spirometer's (and the simulator's) sampling
GRID_POINTS = 1000  # flow–volume grid, as in Cosentino et al.'s code
FEV1_SAMPLE = 100  # the sample at t = 1 s
_NODES = 2001


@functools.cache
def _nodes() -> tuple[np.ndarray, np.ndarray]:
  u = np.linspace(0.0, 1.0, _NODES)
  x, dx_du = (1 - np.cos(np.pi * u)) / 2, np.pi / 2 * np.sin(np.pi * u)
  x.flags.writeable = dx_du.flags.writeable = False  # shared by every call
  return x, dx_du


def profile(x, curvature, rise, tail) -> np.ndarray:
  """h(x), un-normalised (see the module doc); broadcasts."""
  x = np.asarray(x, float)
  remaining = np.clip(1 - x, 0, None)
  return np.sqrt(-np.expm1(-x / rise)) * (remaining**curvature + tail * np.sqrt(remaining))


def exhalation_table(curvature: float, rise: float, tail: float):
  """(x nodes, tau at the nodes, shape h / max h at the nodes) for one blow's shape."""
  x, dx_du = _nodes()
  h = profile(x, curvature, rise, tail)
  peak = h.max()
  integrand = np.empty_like(x)
  with np.errstate(divide="ignore", invalid="ignore"):
    integrand[1:-1] = dx_du[1:-1] * peak / h[1:-1]
  # The limits at the ends (dx/du and h both vanish like u and 1 - u).
  integrand[0] = np.pi * np.sqrt(rise) * peak / (1 + tail)
  integrand[-1] = np.pi * peak / (tail * np.sqrt(-np.expm1(-1 / rise)))
  du = 1.0 / (_NODES - 1)
  tau = np.concatenate([[0.0], np.cumsum((integrand[1:] + integrand[:-1]) * du / 2)])
  return x, tau, h / peak


def natural_duration(table, ratio: float) -> float:
  """Seconds an unmodulated blow with this shape `table` and FEV1/FVC takes: tau(1) / tau(r)."""
  x, tau, _ = table
  return float(tau[-1] / np.interp(ratio, x, tau))


def expiration(fvc: float, ratio: float, table, modulation: np.ndarray,
               stop_seconds: float = np.inf) -> tuple[np.ndarray, float]:
  """One blow of a shape `table` (`exhalation_table`): (volume [T] in litres at 10 ms from
  time zero, PEF of the unmodulated curve in L/s). `modulation` [T] is m(t) at the samples
  (ones for an ideal blow); after `stop_seconds` the subject stops blowing."""
  x, tau, _ = table
  tau_r = np.interp(ratio, x, tau)
  steps = len(modulation)
  # int_0^t m at the samples, trapezoidal; the first sample is time zero.
  effective = np.concatenate([[0.0], np.cumsum((modulation[1:] + modulation[:-1]) / 2)])
  effective *= SAMPLE_SECONDS
  time = np.arange(steps) * SAMPLE_SECONDS
  effective = np.where(time > stop_seconds,
                       np.interp(stop_seconds, time, effective), effective)
  return fvc * np.interp(tau_r * effective, tau, x), fvc * tau_r


def _first_arrivals(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(times, volumes) of the first samples reaching each new volume level."""
  v = np.maximum.accumulate(np.asarray(volume, float) - float(volume[0]))
  new = np.concatenate([[True], np.diff(v) > 0])
  return np.flatnonzero(new) * SAMPLE_SECONDS, v[new]


def segment_flows(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(midpoint volumes, flows in L/s) of the blow's volume steps (see the module doc)."""
  times, levels = _first_arrivals(volume)
  flows = np.diff(levels) / np.diff(times)
  return (levels[1:] + levels[:-1]) / 2, flows


def flow_volume(volume: np.ndarray, points: int = GRID_POINTS,
                grid_volume: float | None = None) -> np.ndarray:
  """[points] float64 flow (L/s) on the volume grid of the module doc: 0..FVC ("relative",
  grid_volume None) or 0..grid_volume with zero flow beyond the FVC ("absolute")."""
  middles, flows = segment_flows(volume)
  fvc = float(np.max(volume) - volume[0])
  if len(flows) == 0:
    return np.zeros(points)
  grid = np.linspace(0.0, fvc if grid_volume is None else grid_volume, points)
  out = np.interp(grid, middles, flows)
  return out if grid_volume is None else np.where(grid <= fvc, out, 0.0)


def measures(volume: np.ndarray) -> dict[str, float]:
  """fev1 (volume at 1 s), fvc (the largest volume), ratio, pef (the largest segment flow)
  of one blow, in litres and L/s, from the samples alone (what the reader can compute)."""
  v = np.maximum.accumulate(np.asarray(volume, float) - float(volume[0]))
  fvc = float(v[-1])
  fev1 = float(v[min(FEV1_SAMPLE, len(v) - 1)])
  _, flows = segment_flows(volume)
  return {"fev1": fev1, "fvc": fvc, "ratio": fev1 / fvc if fvc > 0 else 0.0,
          "pef": float(flows.max()) if len(flows) else 0.0}


def time_at_volumes(volume: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """The time (s) the blow first reaches each target volume (linear between samples)."""
  times, levels = _first_arrivals(volume)
  return np.interp(targets, levels, times)


def concavity(curve: np.ndarray) -> float:
  """How scooped a flow–volume curve (on an evenly spaced volume grid) is: the area between
  the straight line from the peak to the curve's end and the curve, over the area under that
  line. 0 for a straight descending limb, > 0 scooped (concave), < 0 bulging."""
  curve = np.asarray(curve, float)
  peak = int(np.argmax(curve))
  limb = curve[peak:]
  if len(limb) < 3:
    return 0.0
  line = np.linspace(limb[0], limb[-1], len(limb))
  return float(np.sum(line - limb) / np.sum(line))
