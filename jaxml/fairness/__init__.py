"""Fairness building blocks (no I/O): group ROC curves, exact post-processing of scores under
equal opportunity, equalized odds or demographic parity, and group metrics with bootstrap
confidence intervals.

    from jaxml import fairness
    derived = fairness.fit_thresholds(scores, labels, groups, constraint="equal_opportunity")
    decisions = derived.predict(scores, groups, key)
"""

from jaxml.fairness.roc import GroupRoc, roc_curves, upper_hull
from jaxml.fairness.metrics import bootstrap, group_metrics
from jaxml.fairness.solve import CONSTRAINTS
from jaxml.fairness.thresholds import DerivedPredictor, fit_thresholds

__all__ = ["CONSTRAINTS", "DerivedPredictor", "GroupRoc", "bootstrap", "fit_thresholds",
           "group_metrics", "roc_curves", "upper_hull"]
