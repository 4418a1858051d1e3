"""Fair post-processing: jaxml `fit_thresholds` against fairlearn's ThresholdOptimizer, in one run.

Same work for both: post-process one real-valued score into a classifier of largest accuracy
(fp_cost = fn_cost = 1) whose groups satisfy a constraint on their rates, fitted on the same
synthetic scores, labels and groups.
  jaxml      `jaxml.fairness.fit_thresholds(scores, labels, groups, constraint=...)`: exact
             (Hardt, Price & Srebro's optimum on each group's ROC hull, rates equal to
             floating point)
  fairlearn  `fairlearn.postprocessing.ThresholdOptimizer(prefit=True,
             objective="accuracy_score", predict_method="predict")` around an estimator whose
             prediction is the score itself; grid_size 1000 (its default)
Constraints: equal_opportunity (fairlearn "true_positive_rate_parity"), equalized_odds,
demographic_parity.

Data, per (n, G): group codes drawn with unequal shares, labels with group-dependent base
rates, float32 scores N(0, 1) shifted by the label times a group-dependent separation; seeded.

Time: wall time of one fit, median over --repeats (jaxml gets one untimed warm-up fit first,
which also absorbs jax's first-call costs). fairlearn at n >= 1e6 is timed once (each fit takes
~20 s on 2 cores); the repeats used are printed per row.

Quality, on the fitting data, in expectation, computed here with NumPy from each method's
acceptance probabilities (jaxml: its rule, `lower`/`upper`/`levels`, applied in float64 and
checked against `acceptance_probability`, which is float32; fairlearn: `_pmf_predict`):
accuracy = sum(p*y + (1-p)*(1-y)) / n, and the constrained gap: the largest minus the smallest
group's TPR (equal opportunity), max(TPR gap, FPR gap) (equalized odds) or selection-rate gap
(demographic parity).

  python benchmarks/fairness.py [--sizes 1e4,1e5,1e6 --groups 2,4 --repeats 3]
  python benchmarks/fairness.py --quick     # seconds: sizes 1e3,1e4, one repeat
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from fairlearn.postprocessing import ThresholdOptimizer  # noqa: E402

from jaxml import fairness  # noqa: E402

FAIRLEARN_CONSTRAINT = {"equal_opportunity": "true_positive_rate_parity",
                        "equalized_odds": "equalized_odds",
                        "demographic_parity": "demographic_parity"}
# fairlearn fits at this size take ~20 s each on 2 cores: timed once.
FAIRLEARN_SINGLE_REPEAT_FROM = 1_000_000
SPEEDUP_GOAL, GOAL_SIZE = 10.0, 1_000_000  # with an equal or smaller gap


class ScoreAsPrediction(ClassifierMixin, BaseEstimator):
  """A prefit sklearn estimator whose prediction is the score in column 0."""

  def __init__(self):
    self.classes_ = np.array([0, 1])  # marks it fitted for sklearn's check_is_fitted

  def fit(self, x, y):
    del x, y
    return self

  def predict(self, x):
    # float64 (lossless): fairlearn 0.15's _pmf_predict writes probabilities into an array of
    # the prediction's dtype, which pandas refuses for float32.
    return np.asarray(x)[:, 0].astype(np.float64)


def make_data(n: int, num_groups: int, seed: int = 0):
  """(scores float32 [n], labels int64 [n], groups int64 [n]), every group with both labels."""
  rng = np.random.default_rng(seed)
  shares = np.linspace(1.0, 2.0, num_groups)
  groups = rng.choice(num_groups, n, p=shares / shares.sum())
  base_rate = np.linspace(0.25, 0.55, num_groups)[groups]
  labels = (rng.random(n) < base_rate).astype(np.int64)
  separation = np.linspace(1.0, 2.0, num_groups)[groups]
  scores = (rng.standard_normal(n) + labels * separation).astype(np.float32)
  return scores, labels, groups.astype(np.int64)


def expected_quality(probability, labels, groups, constraint):
  """(expected accuracy, constrained gap) of acceptance probabilities, independent of jaxml."""
  probability = np.asarray(probability, np.float64)
  accuracy = float(np.mean(probability * labels + (1 - probability) * (1 - labels)))
  codes = np.unique(groups)
  tpr = np.array([probability[(groups == g) & (labels == 1)].mean() for g in codes])
  fpr = np.array([probability[(groups == g) & (labels == 0)].mean() for g in codes])
  rate = np.array([probability[groups == g].mean() for g in codes])
  tpr_gap, fpr_gap, rate_gap = (float(r.max() - r.min()) for r in (tpr, fpr, rate))
  gap = {"equal_opportunity": tpr_gap, "equalized_odds": max(tpr_gap, fpr_gap),
         "demographic_parity": rate_gap}[constraint]
  return accuracy, gap


def rule_probability(derived, scores, groups):
  """float64 acceptance probabilities from a DerivedPredictor's public rule (its docstring):
  per group, levels[g, 0] below `lower`, levels[g, 1] in [lower, upper), levels[g, 2] at or
  above `upper`. `acceptance_probability` returns the same in float32 (levels rounded to
  float32, which moves the rates by ~1e-8); this keeps the fitted rule's own gap."""
  index = np.searchsorted(derived.groups, groups)
  band = ((scores >= derived.lower[index]).astype(np.int64)
          + (scores >= derived.upper[index]).astype(np.int64))
  return derived.levels[index, band]


def timed(fit, repeats):
  """(median seconds of `fit()`, its last result)."""
  seconds = []
  for _ in range(repeats):
    began = time.perf_counter()
    result = fit()
    seconds.append(time.perf_counter() - began)
  return statistics.median(seconds), result


def fairlearn_probability(optimizer, features, groups):
  if hasattr(optimizer, "_pmf_predict"):
    return optimizer._pmf_predict(features, sensitive_features=groups)[:, 1]
  return np.mean([optimizer.predict(features, sensitive_features=groups, random_state=k)
                  for k in range(200)], axis=0)  # a fallback estimate, 200 coins each


def bench_case(n, num_groups, constraint, data, repeats):
  scores, labels, groups = data

  def fit_jaxml():
    return fairness.fit_thresholds(scores, labels, groups, constraint=constraint)

  fit_jaxml()  # warm-up
  jaxml_s, derived = timed(fit_jaxml, repeats)
  jaxml_p = rule_probability(derived, scores.astype(np.float64), groups)
  float32_p = np.asarray(derived.acceptance_probability(scores, groups), np.float64)

  features = scores[:, None]

  def fit_fairlearn():
    optimizer = ThresholdOptimizer(
        estimator=ScoreAsPrediction(), constraints=FAIRLEARN_CONSTRAINT[constraint],
        objective="accuracy_score", prefit=True, predict_method="predict")
    return optimizer.fit(features, labels, sensitive_features=groups)

  fairlearn_repeats = 1 if n >= FAIRLEARN_SINGLE_REPEAT_FROM else repeats
  fairlearn_s, optimizer = timed(fit_fairlearn, fairlearn_repeats)
  fairlearn_p = fairlearn_probability(optimizer, features, groups)

  jaxml_acc, jaxml_gap = expected_quality(jaxml_p, labels, groups, constraint)
  fairlearn_acc, fairlearn_gap = expected_quality(fairlearn_p, labels, groups, constraint)
  return {"n": n, "groups": num_groups, "constraint": constraint, "jaxml_s": jaxml_s,
          "fairlearn_s": fairlearn_s, "speedup": fairlearn_s / jaxml_s,
          "jaxml_repeats": repeats, "fairlearn_repeats": fairlearn_repeats,
          "jaxml_accuracy": jaxml_acc, "fairlearn_accuracy": fairlearn_acc,
          "jaxml_gap": jaxml_gap, "fairlearn_gap": fairlearn_gap,
          "jaxml_float32_gap": expected_quality(float32_p, labels, groups, constraint)[1],
          "jaxml_float32_diff": float(np.max(np.abs(float32_p - jaxml_p)))}


def print_environment(args):
  print("Fair post-processing: jaxml fit_thresholds vs fairlearn ThresholdOptimizer")
  print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPU cores")
  print(f"python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, fairlearn {importlib.metadata.version('fairlearn')}")
  print("load average (1, 5, 15 min) at start: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
  print(f"sizes: n {args.sizes}, groups {args.groups}, constraints {args.constraints}; "
        f"float32 scores; accuracy objective; fairlearn grid_size 1000; median of "
        f"{args.repeats} fit(s) (jaxml after one warm-up fit; fairlearn timed once at "
        f"n >= {FAIRLEARN_SINGLE_REPEAT_FROM:.0e})")


def print_table(rows):
  print(f"\n{'n':>8} {'G':>2} {'constraint':<18} {'jaxml s':>9} {'fairlearn s':>11} "
        f"{'speed-up':>8} {'reps j/f':>8} {'acc jaxml':>9} {'acc fairl':>9} {'acc j-f':>8} "
        f"{'gap jaxml':>9} {'gap fairl':>9}")
  for r in rows:
    print(f"{r['n']:>8} {r['groups']:>2} {r['constraint']:<18} {r['jaxml_s']:>9.4f} "
          f"{r['fairlearn_s']:>11.3f} {r['speedup']:>7.1f}x "
          f"{r['jaxml_repeats']:>4}/{r['fairlearn_repeats']:<3} "
          f"{r['jaxml_accuracy']:>9.5f} {r['fairlearn_accuracy']:>9.5f} "
          f"{r['jaxml_accuracy'] - r['fairlearn_accuracy']:>8.1e} "
          f"{r['jaxml_gap']:>9.1e} {r['fairlearn_gap']:>9.1e}")
  print("  speed-up = fairlearn s / jaxml s (median fit times); reps j/f = timed fits; acc j-f = "
        "jaxml's accuracy minus fairlearn's; accuracy and gap are expected values on the fitting "
        "data")
  print("  jaxml's probabilities are its rule's, in float64 (see rule_probability); through "
        "acceptance_probability (float32): max |difference| "
        f"{max(r['jaxml_float32_diff'] for r in rows):.1e}, largest gap "
        f"{max(r['jaxml_float32_gap'] for r in rows):.1e}")
  largest = max(r["n"] for r in rows)
  at_largest = [r for r in rows if r["n"] == largest]
  if largest < GOAL_SIZE:
    print(f"goal (>= {SPEEDUP_GOAL:.0f}x at n = {GOAL_SIZE:.0e}): not measured in this run")
    return
  holds = all(r["speedup"] >= SPEEDUP_GOAL and r["jaxml_gap"] <= r["fairlearn_gap"] + 1e-9
              for r in at_largest)
  print(f"goal at n = {largest}: >= {SPEEDUP_GOAL:.0f}x faster with an equal or smaller gap in "
        f"every case: {'holds' if holds else 'DOES NOT HOLD'} (speed-ups "
        f"{min(r['speedup'] for r in at_largest):.1f}x to "
        f"{max(r['speedup'] for r in at_largest):.1f}x)")


def parse_list(text, kind):
  return [kind(float(x)) if kind is int else x.strip() for x in text.split(",") if x.strip()]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="1e4,1e5,1e6", help="comma-separated example counts")
  parser.add_argument("--groups", default="2,4", help="comma-separated group counts")
  parser.add_argument("--constraints", default=",".join(FAIRLEARN_CONSTRAINT),
                      help=f"comma-separated, among {', '.join(FAIRLEARN_CONSTRAINT)}")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--quick", action="store_true",
                      help="a seconds-long run: sizes 1e3,1e4 and one repeat")
  args = parser.parse_args(argv)
  if args.quick:
    args.sizes, args.repeats = "1e3,1e4", 1
  args.sizes, args.groups = parse_list(args.sizes, int), parse_list(args.groups, int)
  args.constraints = parse_list(args.constraints, str)
  if any(c not in FAIRLEARN_CONSTRAINT for c in args.constraints):
    parser.error(f"--constraints must be among {list(FAIRLEARN_CONSTRAINT)}, "
                 f"got {args.constraints}")
  if any(n < 100 for n in args.sizes) or any(g < 2 for g in args.groups) or args.repeats < 1:
    parser.error("--sizes must be >= 100, --groups >= 2 and --repeats >= 1")
  began = time.perf_counter()
  print_environment(args)
  rows = []
  for n in args.sizes:
    for num_groups in args.groups:
      data = make_data(n, num_groups)
      for constraint in args.constraints:
        rows.append(bench_case(n, num_groups, constraint, data, args.repeats))
        print(f"  done n={n} G={num_groups} {constraint}", flush=True)
  print_table(rows)
  print("load average (1, 5, 15 min) at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
  print(f"total wall time {time.perf_counter() - began:.0f} s")
  return rows


if __name__ == "__main__":
  main(sys.argv[1:])
