"""The Allo study's report (jaxml/studies/allo.py): accuracy against labels per class for
every task and method, the unit-count curves, the illustrations' agreement, and whether the
post's pattern holds here (artifacts/allo.md, allo_labels.png, allo_units.png)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from jaxml.core import files
from jaxml.studies import figures, tables

TASKS = ("identity", "thickness", "slant", "size")
METHODS = ("frozen_ridge", "frozen_logreg", "pixels_logreg", "scratch_cnn")
NAMES = {"frozen_ridge": "frozen features, ridge (jaxml)",
         "frozen_logreg": "frozen features, logistic (sklearn)",
         "pixels_logreg": "raw pixels, logistic (sklearn)",
         "scratch_cnn": "the CNN from scratch"}
FEW = 10  # "few labels": the claim is checked at n <= FEW per class
_UNITS = re.compile(r"^(\w+)/units(\d+)$")


def _part(rows: Sequence[dict], part: str) -> list[dict]:
  return [r for r in rows if r["part"] == part]


def label_stats(rows: Sequence[dict], task: str) -> dict[tuple, tuple[float, float, int]]:
  """{(method, n): (mean over seeds, sd, seeds)} of `task`'s few-shot accuracy."""
  flat = []
  for row in _part(rows, "fewshot"):
    for key, value in row.items():
      parts = key.split("/")
      if len(parts) == 3 and parts[0] == task and parts[2] in METHODS:
        flat.append({"method": parts[2], "n": int(parts[1]), "accuracy": value})
  return tables.aggregate(flat, key="method", x="n", value="accuracy")


def unit_stats(rows: Sequence[dict], task: str) -> tuple[list[int], list[float], int]:
  """(unit counts m, mean accuracy over seeds with the m top units, the feature dim)."""
  by_m: dict[int, list[float]] = {}
  dim = 0
  for row in _part(rows, "units"):
    dim = int(row.get(f"{task}/dim", dim))
    for key, value in row.items():
      match = _UNITS.match(key)
      if match and match.group(1) == task:
        by_m.setdefault(int(match.group(2)), []).append(float(value))
  ms = sorted(by_m)
  return ms, [float(np.mean(by_m[m])) for m in ms], dim


def claim_lines(rows: Sequence[dict]) -> list[str]:
  out = []
  for task in TASKS:
    stats = label_stats(rows, task)
    few = sorted(n for (m, n) in stats if m == "frozen_ridge" and n <= FEW)
    if not few:
      continue
    wins = {other: [stats[("frozen_ridge", n)][0] > stats[(other, n)][0] for n in few
                    if (other, n) in stats] for other in ("scratch_cnn", "pixels_logreg")}
    cells = "; ".join(
        f"n={n}: {100 * stats[('frozen_ridge', n)][0]:.1f} vs "
        f"{100 * stats.get(('scratch_cnn', n), (np.nan,))[0]:.1f} (scratch), "
        f"{100 * stats.get(('pixels_logreg', n), (np.nan,))[0]:.1f} (pixels)" for n in few)
    held = all(all(v) and v for v in wins.values())
    out.append(f"- {task}: frozen features beat the CNN from scratch and pixels at every n ≤ "
               f"{FEW} ({cells}) — **{'holds' if held else 'does not hold'}**.\n")
  for task in TASKS:
    ms, accuracy, dim = unit_stats(rows, task)
    if not ms:
      continue
    small = [a for m, a in zip(ms, accuracy) if m <= 4]
    out.append(f"- {task}: the 4 best of {dim} units reach {100 * max(small):.1f}% against "
               f"{100 * accuracy[-1]:.1f}% with all of them.\n")
  return out


def _agreement_lines(rows: Sequence[dict]) -> list[str]:
  found = _part(rows, "illustration")
  if not found:
    return []
  keys = [k for k in found[0] if k.startswith("agreement/")]
  lines = ["| | " + " | ".join(k.removeprefix("agreement/") for k in keys) + " |\n",
           "|---" * (len(keys) + 1) + "|\n"]
  values = [[r[k] for r in found] for k in keys]
  lines.append("| predicted vs true | " + " | ".join(
      f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in values) + " |\n")
  return lines


def summarise(rows: Sequence[dict]) -> dict:
  summary = {"step": len(rows)}
  for task in TASKS:
    for (method, n), (mean, _, _) in label_stats(rows, task).items():
      summary[f"{task}/{n}/{method}"] = mean
  for row in _part(rows, "illustration"):
    for key, value in row.items():
      if key.startswith("agreement/"):
        summary.setdefault(key, []).append(value)
  return {k: float(np.mean(v)) if isinstance(v, list) else v for k, v in summary.items()}


def report(config, rows: Sequence[dict], workdir: str | None) -> dict:
  """The summary; with a `workdir`, artifacts/allo.md and the plots."""
  summary = summarise(rows)
  if workdir is None:
    return summary
  artifacts = os.path.join(workdir, "artifacts")
  files.makedirs(artifacts)
  ns = list(config.labels_per_class)
  panels = {}
  for task in TASKS:
    stats = label_stats(rows, task)
    panels[task] = {NAMES[m]: ([n for n in ns if (m, n) in stats],
                               [stats[(m, n)][0] for n in ns if (m, n) in stats])
                    for m in METHODS}
  figures.curve_panels(panels, os.path.join(artifacts, "allo_labels.png"),
                       x_label="labels per class", y_label="test accuracy", y_limits=(0, 1))
  figures.curve_panels({task: {"top-m units": unit_stats(rows, task)[:2]} for task in TASKS},
                       os.path.join(artifacts, "allo_units.png"), x_label="units kept",
                       y_label="test accuracy", y_limits=(0, 1))
  run = config.pretrain
  lines = ["# Few labels on frozen features (the Allo pattern)\n\n",
           "The post: a few units of general-purpose networks respond to attributes they were "
           "never trained for, and small heads trained on far fewer human labels predict them; "
           "each predicted attribute picks a component of an illustration.\n\n",
           f"Here: the digits CNN trained {run.num_steps} steps on digits 0–4, frozen; tasks on "
           "the images of digits 5–9 it never saw: their identity, and stroke thickness, slant "
           f"and size in {config.attributes.bins} classes with rater noise "
           f"{config.attributes.noise} on the training labels. {config.draws} draws of the "
           f"labelled images per n ({config.scratch.draws} for the CNN from scratch), "
           f"{len(config.seeds)} seed(s); accuracy in % on the true test labels, mean ± sd over "
           "seeds.\n\n", "## Does the pattern hold here?\n\n", *claim_lines(rows)]
  for task in TASKS:
    table = tables.markdown_table(
        {(NAMES[m], n): v for (m, n), v in label_stats(rows, task).items()},
        [NAMES[m] for m in METHODS], ns, x_name="n")
    lines += [f"\n## {task}\n\n", table]
  lines += ["\n## Illustrations: agreement of predicted and true attributes (test images)\n\n",
            *_agreement_lines(rows),
            "\n![accuracy vs labels](allo_labels.png)\n![units](allo_units.png)\n"]
  files.write_text(os.path.join(artifacts, "allo.md"), "".join(lines))
  return summary
