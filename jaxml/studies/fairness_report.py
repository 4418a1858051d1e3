"""The fairness study's tables, figures and summary, from its results rows (host-only).

  fico_table.md   each rule's FICO profit as a share of the max-profit rule's, beside the
                  paper's, and every rule's per-group thresholds and rates
  fico_roc.png    the groups' weighted ROC curves, each rule's operating points marked
  table.md        test accuracy, TPR gap and FPR gap with bootstrap intervals, per data set,
                  group attribute, rule and method (jaxml, fairlearn)
  tradeoff.png    test accuracy against TPR gap, the same rows, interval bars
"""

from __future__ import annotations

import os

import numpy as np

from jaxml.core import files
from jaxml.core.plots import save_figure

# Hardt, Price & Srebro (2016), section 6, as the issue quotes them ("about"): profit as a
# percentage of the max-profit rule's.
PAPER_SHARES = {"none": 100.0, "group_blind": 99.0, "equal_opportunity": 93.0,
                "equalized_odds": 80.0, "demographic_parity": 70.0}
# Our share "reproduces" the paper's when within this many percentage points.
AGREEMENT = 1.0
LABELS = {"none": "max profit / accuracy", "group_blind": "group blind",
          "equal_opportunity": "equal opportunity", "equalized_odds": "equalized odds",
          "demographic_parity": "demographic parity"}
MARKERS = {"none": "o", "group_blind": "s", "equal_opportunity": "^", "equalized_odds": "D",
           "demographic_parity": "v"}


def _wanted(config, row) -> bool:
  """Whether a logged row belongs to this config's sweep (a narrowed rerun shows less)."""
  if row["rule"] not in config.rules:
    return False
  if row["part"] == "fico":
    return bool(config.fico.enabled)
  return (row["dataset"] in config.datasets
          and row["attribute"] in config.attributes[row["dataset"]]
          and (row["method"] == "jaxml" or config.compare_fairlearn))


def fico_shares(rows) -> dict[str, float]:
  """{rule: profit as a fraction of the max-profit rule's}."""
  best = next(r["utility"] for r in rows if r["rule"] == "none")
  return {r["rule"]: r["utility"] / best for r in rows}


def report(config, log, curves, workdir: str | None) -> dict:
  """The summary of the study's rows, and its artifacts when `workdir` is given."""
  rows = [r for r in log.rows() if _wanted(config, r)]
  fico = [r for r in rows if r["part"] == "fico"]
  measured = [r for r in rows if r["part"] == "classifier"]
  summary = {"step": len(rows)}
  if fico:
    shares = fico_shares(fico)
    summary.update({f"fico/share/{rule}": share for rule, share in shares.items()})
  for r in measured:
    prefix = f"{r['dataset']}/{r['attribute']}/{r['rule']}/{r['method']}"
    summary.update({f"{prefix}/{m}": r["test"][m][0] for m in ("accuracy", "tpr_gap",
                                                              "fpr_gap")})
  if workdir is None:
    return summary
  artifacts = os.path.join(workdir, "artifacts")
  files.makedirs(artifacts)
  if fico:
    files.write_text(os.path.join(artifacts, "fico_table.md"), fico_table(config, fico))
    fico_roc(fico, curves, os.path.join(artifacts, "fico_roc.png"))
  if measured:
    files.write_text(os.path.join(artifacts, "table.md"), classifier_table(config, measured))
    tradeoff(measured, os.path.join(artifacts, "tradeoff.png"))
  return summary


def fico_table(config, rows) -> str:
  shares = fico_shares(rows)
  lines = [
      f"FICO (Hardt, Price & Srebro 2016, section 6): each rule fitted to the published "
      f"TransRisk score distribution by race, weighted by group size; a loan to a defaulter "
      f"costs {config.fico.fp_cost:g}, one to a repayer earns {config.fico.fn_cost:g}. Profit "
      f"as a percentage of the max-profit rule's (per-group thresholds, no constraint). "
      f"\"Paper (approx.)\" are the rounded shares the issue quotes from the paper; \"agrees\" "
      f"means within {AGREEMENT:g} point.", "",
      "| rule | profit (% of max) | paper (approx.) | agrees |", "|---|---|---|---|"]
  for r in rows:
    ours, paper = 100 * shares[r["rule"]], PAPER_SHARES.get(r["rule"])
    agrees = "—" if paper is None else ("yes" if abs(ours - paper) <= AGREEMENT else
                                        f"no ({ours - paper:+.1f})")
    lines.append(f"| {LABELS[r['rule']]} | {ours:.1f} | "
                 f"{'—' if paper is None else f'{paper:g}'} | {agrees} |")
  lines += ["", "Per-group rules (scores >= upper accept with p(above), scores in [lower, upper) "
            "with p(band), lower ones with p(below)); TPR: share of repayers given a loan, "
            "FPR: share of defaulters given one, as the rule expects on the data.", "",
            "| rule | group | lower | upper | p(below) | p(band) | p(above) | TPR | FPR | "
            "selection |", "|---" * 10 + "|"]
  for r in rows:
    for name, t in zip(r["groups"], r["thresholds"]):
      lines.append(f"| {LABELS[r['rule']]} | {name} | {t['lower']:.2f} | {t['upper']:.2f} | "
                   f"{t['p_below']:.3f} | {t['p_band']:.3f} | {t['p_above']:.3f} | "
                   f"{100 * t['tpr']:.1f} | {100 * t['fpr']:.1f} | "
                   f"{100 * t['selection_rate']:.1f} |")
  return "\n".join(lines) + "\n"


def _cell(values) -> str:
  estimate, low, high = (100 * v for v in values)
  return f"{estimate:.1f} [{low:.1f}, {high:.1f}]"


def classifier_table(config, rows) -> str:
  level = 100 * config.bootstrap.level
  first = {}
  for r in rows:
    first.setdefault((r["dataset"], r["attribute"]), r)
  groups = "; ".join(
      f"{d}/{a}: {', '.join(r['groups'])} ({r['num_validation']} validation, "
      f"{r['num_test']} test examples"
      + (f"; left out: {', '.join(r['left_out'])}" if r.get("left_out") else "") + ")"
      for (d, a), r in first.items())
  lines = [
      f"A jaxml classifier's score P(positive), post-processed per group: thresholds fitted "
      f"on a validation part ({config.validation_fraction:.0%}) of the test split (seed "
      f"{config.seed}), measured on the rest; costs fp {config.fp_cost:g}, fn "
      f"{config.fn_cost:g} (1 and 1: accuracy). "
      f"Decisions are the rules' acceptance probabilities (expected over their coins). "
      f"Percent, test estimate [{level:g}% bootstrap interval, {config.bootstrap.samples} "
      f"resamples, shared by the rows of one attribute]; gaps are the largest minus the "
      f"smallest group rate (never below 0, so near 0 a gap's interval sits above its "
      f"estimate, and small groups make it wide). fairlearn: ThresholdOptimizer (prefit, "
      f"accuracy objective) on the same validation scores. Groups with fewer than "
      f"{config.min_group_size} validation examples of either label are pooled into "
      f"\"other\" (left out of that attribute's analysis when the pool is itself short). "
      f"Groups: {groups}.", "",
      "| data set | attribute | rule | method | test accuracy | TPR gap | FPR gap | "
      "val. accuracy | val. TPR gap |", "|---" * 9 + "|"]
  for r in rows:
    val = r["validation"]
    lines.append(f"| {r['dataset']} | {r['attribute']} | {LABELS[r['rule']]} | {r['method']} "
                 f"| {_cell(r['test']['accuracy'])} | {_cell(r['test']['tpr_gap'])} | "
                 f"{_cell(r['test']['fpr_gap'])} | {100 * val['accuracy']:.2f} | "
                 f"{100 * val['tpr_gap']:.2f} |")
  return "\n".join(lines) + "\n"


def fico_roc(rows, curves, path: str) -> str:
  """The groups' ROC curves (share of defaulters vs of repayers given a loan) with each
  rule's operating point in every group."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel

  fig = Figure(figsize=(6, 5))
  ax = fig.subplots()
  colours = {name: f"C{i}" for i, name in enumerate(curves)}
  for name, (fpr, tpr) in curves.items():
    ax.plot(fpr, tpr, color=colours[name], lw=1, label=name)
  for r in rows:
    for name, t in zip(r["groups"], r["thresholds"]):
      ax.plot(t["fpr"], t["tpr"], MARKERS[r["rule"]], color=colours[name], ms=7,
              markeredgecolor="black", markeredgewidth=0.6)
  handles, labels = ax.get_legend_handles_labels()
  for r in rows:
    handles.append(Line2D([], [], ls="", marker=MARKERS[r["rule"]], color="gray",
                          markeredgecolor="black"))
    labels.append(LABELS[r["rule"]])
  ax.plot([0, 1], [0, 1], color="gray", lw=0.5, ls=":")
  ax.set_xlabel("FPR: share of defaulters given a loan")
  ax.set_ylabel("TPR: share of repayers given a loan")
  ax.set_title("FICO: group ROC curves and each rule's operating points", fontsize=9)
  ax.legend(handles, labels, fontsize=7, loc="lower right")
  fig.tight_layout()
  return save_figure(fig, path)


def tradeoff(rows, path: str) -> str:
  """Test accuracy against TPR gap, one panel per (data set, attribute), colour = rule,
  filled circle = jaxml, open square = fairlearn, bars = bootstrap intervals."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import

  panels = list(dict.fromkeys((r["dataset"], r["attribute"]) for r in rows))
  fig = Figure(figsize=(4 * len(panels), 3.6))
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  colours = {rule: f"C{i}" for i, rule in enumerate(LABELS)}
  for ax, panel in zip(axes, panels):
    for r in (r for r in rows if (r["dataset"], r["attribute"]) == panel):
      x, y = (100 * np.asarray(r["test"][m]) for m in ("tpr_gap", "accuracy"))
      jaxml = r["method"] == "jaxml"
      ax.errorbar(x[0], y[0], xerr=[[x[0] - x[1]], [x[2] - x[0]]],
                  yerr=[[y[0] - y[1]], [y[2] - y[0]]], marker="o" if jaxml else "s",
                  color=colours[r["rule"]], mfc=colours[r["rule"]] if jaxml else "none",
                  capsize=2, ms=6, lw=0.8,
                  label=f"{LABELS[r['rule']]} ({r['method']})")
    ax.set_title(f"{panel[0]} / {panel[1]}", fontsize=9)
    ax.set_xlabel("test TPR gap (points)")
    ax.set_ylabel("test accuracy (%)")
  axes[-1].legend(fontsize=6, loc="best")
  fig.tight_layout()
  return save_figure(fig, path)
