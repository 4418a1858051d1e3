"""The smooth-activations study's tables, PD-vs-loss plot and summary, from its result rows
(jaxml/studies/smooth_activations.py). Host-only."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  # pylint: disable=wrong-import-position

from jaxml.core import files  # noqa: E402
from jaxml.core.plots import save_figure  # noqa: E402
from jaxml.studies.tables import slug  # noqa: E402

TITLES = {
    "activations": "Activations (replicas differ in {vary})",
    "ensemble": "ReLU ensembles of 2",
    "beta": "SmeLU's transition width β",
    "shuffle": "Shuffling: equal init, data order differs within a window or fully",
}
PD_NAMES = {"relative": "relative PD of p(class 1)", "l1": "L1 PD of the class distributions"}


def report(rows: list[dict], workdir: str | None) -> dict:
  """The summary (every row's loss, accuracy and PD by name, and `step`, the row count);
  with a `workdir`, artifacts/smooth_activations.md and artifacts/pd_vs_loss.png too."""
  summary = {"step": len(rows)}
  for row in rows:
    name = f"{row['part']}/{row['dataset']}/{slug(row['label'])}"
    for key in ("loss", "accuracy", "pd", "top1"):
      summary[f"{name}/{key}"] = row[f"{key}_mean"]
  if workdir is not None:
    artifacts = os.path.join(workdir, "artifacts")
    files.makedirs(artifacts)
    files.write_text(os.path.join(artifacts, "smooth_activations.md"), markdown(rows))
    plot(rows, os.path.join(artifacts, "pd_vs_loss.png"))
  return summary


def _cell(row: dict, key: str, scale: float = 1.0) -> str:
  mean, sd = row.get(f"{key}_mean"), row.get(f"{key}_sd")
  if mean is None:
    return "—"
  text = f"{scale * mean:.4f}"
  return text + (f" ± {scale * sd:.4f}" if sd is not None and math.isfinite(sd) else "")


def markdown(rows: list[dict]) -> str:
  """One table per part and data set: loss, accuracy (mean ± sd over replicas), PD, L1 PD,
  top-1 disagreement and swap rate (mean ± sd over replica pairs)."""
  out = ["# Smooth activations and reproducibility\n",
         "Loss and accuracy: mean ± sd over the replicas (or ensembles). PD, L1, top-1 and "
         "swap: mean ± sd over their pairs. PD is the relative PD of p(class 1) for 2 "
         "classes and the L1 PD for more; swap is the top-10 swap rate of blocks of 100 test "
         "examples ranked by p(class 1).\n"]
  for part in TITLES:
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
      mine = [r for r in rows if r["part"] == part and r["dataset"] == dataset]
      if not mine:
        continue
      vary = mine[0]["vary"] or "init, order and keys"
      out.append(f"\n## {TITLES[part].format(vary=vary)}: {dataset} "
                 f"({mine[0]['members']} {'ensembles' if part == 'ensemble' else 'replicas'})\n")
      out.append("| activation | log loss | accuracy | PD | L1 PD | top-1 disagreement | swap |")
      out.append("|---|---|---|---|---|---|---|")
      for r in mine:
        out.append(f"| {r['label']} | {_cell(r, 'loss')} | {_cell(r, 'accuracy')} | "
                   f"{_cell(r, 'pd')} | {_cell(r, 'l1')} | {_cell(r, 'top1')} | "
                   f"{_cell(r, 'swap')} |")
  return "\n".join(out) + "\n"


def plot(rows: list[dict], path: str) -> str:
  """PD against log loss per data set, as in the paper's figure: a point per activation
  (error bars: sd over pairs and over replicas), the β sweep as a line, the ensemble as a
  star; lower-left is better on both."""
  datasets = list(dict.fromkeys(r["dataset"] for r in rows))
  fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.4), squeeze=False)
  for ax, dataset in zip(axes[0], datasets):
    mine = [r for r in rows if r["dataset"] == dataset]
    for r in (r for r in mine if r["part"] == "activations"):
      ax.errorbar(r["loss_mean"], r["pd_mean"], xerr=_finite(r["loss_sd"]),
                  yerr=_finite(r["pd_sd"]), fmt="o", capsize=2, label=r["label"])
    betas = [r for r in mine if r["part"] == "beta"]
    if betas:
      ax.plot([r["loss_mean"] for r in betas], [r["pd_mean"] for r in betas], "k.--", lw=0.8,
              label="SmeLU β sweep")
      for r in betas:
        ax.annotate(r["label"], (r["loss_mean"], r["pd_mean"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    for r in (r for r in mine if r["part"] == "ensemble"):
      ax.plot(r["loss_mean"], r["pd_mean"], "*", ms=12, color="black", label=r["label"])
    kind = mine[0]["pd_kind"]
    ax.set(title=dataset, xlabel="test log loss (mean over replicas)",
           ylabel=PD_NAMES.get(kind, kind))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  saved = save_figure(fig, path)
  plt.close(fig)
  return saved


def _finite(value) -> float:
  return value if value is not None and math.isfinite(value) else 0.0
