"""Learning under concept drift, in one resumable study (issue 20; the config and its
commands: experiments/drift_study.py).

Per data set (a generated drift source whose clusters drift at known, different rates), every
run is `config.runs.<data set>.<method>` (a run of experiments/drift.py) trained once
(`runs.run_once`) in <workdir>/runs/<data set>/<name>:

  tune/<method>_tau<tau>  exponential and linear decay at each `tune.<method>` timescale,
                          seed `config.seed`, on the training periods with the last one held
                          out as the test period (the paper's protocol: `periods` =
                          train_periods, `train_periods` - 1); the best held-out accuracy wins
  <method>_s<seed>        every method of `methods` on the real split: train on periods
                          [0, T), score each later period; exponential and linear at their
                          tuned timescale

Each row of <workdir>/results.jsonl, keyed by (data set, method, seed), is read from the run's
own final evaluation (the runner's group metrics over `period`): the accuracy of each future
period, their mean (the headline: mean over test periods) and the worst; for the learned
methods also the helper's mean timescale per cluster (`final_metrics`). With
`compare_river`, river's online learners (jaxml/studies/drift_peers.py) stream the same
periods: rows "river_<learner>" (frozen after training: the same protocol as the runs) and
"river_<learner>_prequential" (test-then-train through the test periods: they see each test
label after predicting it, which no run here does, so a reference, not a rival).

The report, artifacts/drift.md: the mean over test periods (method x data set, mean ± sd over
seeds), the accuracy per future period, the tuned timescales, the learned timescale of each
cluster against its true drift rate (with the rank correlation: the diagnostic that the
helper learned the drift, not something else), and whether each claim of the paper holds
here; artifacts/drift_curves.png (accuracy per future period, a panel per data set) and
artifacts/drift_timescales.png (learned timescale against drift rate).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from jaxml.core import files
from jaxml.errors import ConfigError
from jaxml.studies import drift_peers, figures, results, runs, tables
from jaxml.studies.base import Study, check_choices, check_seeds

METHODS = ("uniform", "last", "sequential", "exponential", "linear", "joint", "learned",
           "continual")
TUNED = ("exponential", "linear")  # one timescale, tuned on the held-out last period
LEARNED = ("learned", "continual")  # methods whose runs report timescale/cluster_<c>
DATASETS = ("drifting_mixture", "drifting_digits")
MEAN = "eval/period/mean_group/accuracy"
WORST = "eval/period/worst_group/accuracy"
# Which rows exist, not what is in them.
SWEEP = ("datasets", "methods", "seeds", "progress", "compare_river")
# (method, other, claim): the paper's claims as comparisons of means over test periods.
CLAIMS = (
    ("learned", "exponential", "learned vs exponential: the learned timescales beat the tuned "
     "exponential decay"),
    ("learned", "linear", "learned vs linear: the learned timescales beat the tuned linear decay"),
    ("learned", "joint", "learned vs joint: the factored helper beats an unconstrained "
     "w(x, age)"),
    ("learned", "uniform", "learned vs uniform: learned reweighting beats no reweighting (ERM)"),
    ("learned", "last", "learned vs last: learned reweighting beats the last period alone"),
    ("learned", "sequential", "learned vs sequential: learned reweighting beats sequential "
     "fine-tuning"),
    ("continual", "sequential", "continual vs sequential: the continual variant beats "
     "sequential fine-tuning"))


def build(config) -> Study:
  validate(config)
  headline = tuple(f"{d}/{m}/mean" for d in config.datasets for m in config.methods
                   if m in ("uniform", "exponential", "learned"))
  return Study(run=functools.partial(fit, config), headline=headline,
               outputs=(results.RESULTS, "artifacts/drift.md", "artifacts/drift_curves.png",
                        "artifacts/drift_timescales.png", "runs/"))


def validate(config) -> None:
  datasets = check_choices("datasets", config.datasets, DATASETS, "data sets")
  methods = check_choices("methods", config.methods, METHODS, "methods")
  check_seeds(config.seeds)
  for d in datasets:
    for m in methods:
      run = config.runs.get(d, {}).get(m)
      if run is None or run.get("algo") != "drift" or run.data.source != d:
        raise ConfigError(f"runs.{d}.{m} must be a 'drift' config on data.source {d!r} "
                          "(experiments/drift_study.py builds them)")
      if run.data.train_periods < 2:
        raise ConfigError(f"runs.{d}.{m}.data.train_periods={run.data.train_periods}: tuning "
                          "holds the last training period out, so at least 2 are needed")
  for m in TUNED:
    taus = list(config.tune[m])
    if not taus or any(isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0
                       for t in taus):
      raise ConfigError(f"tune.{m}={taus} must be timescales > 0 (periods), at least one")
  if config.compare_river:
    learners = list(config.river_learners)
    if not learners or any(name not in drift_peers.LEARNERS for name in learners):
      raise ConfigError(f"river_learners={learners}: choose from "
                        f"{', '.join(drift_peers.LEARNERS)}")
    drift_peers.require_river()


def run_config(config, dataset: str, method: str, seed: int, **changes):
  """The config of one run: `runs.<dataset>.<method>` at `seed`, with `changes` (dotted
  keys)."""
  return runs.configured(config.runs[dataset][method], seed, config.progress, changes)


def fit(config, workdir: str) -> dict:
  is_chief = jax.process_index() == 0
  log = results.ResultsLog(os.path.join(workdir, results.RESULTS),
                           results.fingerprint(config, exclude=SWEEP), write=is_chief)
  rows, tuned = [], {}
  for dataset in config.datasets:
    where = lambda name, d=dataset: os.path.join(workdir, "runs", d, name)
    tuned[dataset] = {m: tune(config, dataset, m, log, where) for m in TUNED
                      if m in config.methods}
    for seed in config.seeds:
      for method in config.methods:
        def compute(dataset=dataset, method=method, seed=seed, where=where):
          changes = {}
          if method in tuned[dataset]:
            changes["drift.tau"] = tuned[dataset][method][0]
          out = where(f"{method}_s{seed}")
          summary = runs.run_once(run_config(config, dataset, method, seed, **changes), out)
          return {**measure(summary), "workdir": os.path.relpath(out, workdir)}

        rows.append({"dataset": dataset, "method": method, "seed": seed,
                     **log.cached((dataset, method, seed), compute)})
      if config.compare_river:
        rows += river_rows(config, dataset, seed, log)
  return report(config, rows, tuned, workdir if is_chief else None)


def tune(config, dataset: str, method: str, log, where) -> tuple[float, list[dict]]:
  """(the timescale with the best accuracy on the held-out last training period, every
  timescale's row), at seed `config.seed`; the first of equals wins."""
  found = []
  for tau in config.tune[method]:
    def compute(tau=tau):
      base = config.runs[dataset][method]
      out = where(os.path.join("tune", f"{method}_tau{float(tau):g}"))
      c = run_config(config, dataset, method, config.seed, **{
          "drift.tau": float(tau), "data.periods": int(base.data.train_periods),
          "data.train_periods": int(base.data.train_periods) - 1})
      return {"accuracy": float(runs.run_once(c, out)[MEAN]), "tau": float(tau)}
    found.append(log.cached(("tune", dataset, method, float(tau)), compute))
  best = max(found, key=lambda row: row["accuracy"])
  return best["tau"], found


def measure(summary: dict) -> dict:
  """The row of a run: its mean and worst accuracy over the test periods, each test
  period's accuracy (`period/<p>`) and, for the learned methods, the timescale per cluster."""
  if MEAN not in summary:
    raise ConfigError(f"a run's summary lacks {MEAN}: its data set has no period groups")
  row = {"mean": float(summary[MEAN]), "worst": float(summary[WORST])}
  for key, value in summary.items():
    parts = key.split("/")
    if len(parts) == 4 and parts[:2] == ["eval", "period"] and parts[2].isdigit() and (
        parts[3] == "accuracy"):
      row[f"period/{parts[2]}"] = float(value)
    elif key.startswith("timescale/cluster_"):
      row[key] = float(value)
  return row


def river_rows(config, dataset: str, seed: int, log) -> list[dict]:
  """river's learners on the same stream at `seed` (the data of the uniform run's config):
  one row frozen after training, one prequential."""
  out = []
  for learner in config.river_learners:
    def compute(learner=learner):
      data = config.runs[dataset][config.methods[0]].data
      return drift_peers.river_curves(data, learner, seed)
    curves = log.cached(("river", dataset, learner, seed), compute)
    for protocol, suffix in (("eval_fix", ""), ("prequential", "_prequential")):
      per_period = {f"period/{p}": float(a) for p, a in curves[protocol].items()}
      out.append({"dataset": dataset, "method": f"river_{learner}{suffix}", "seed": seed,
                  "mean": float(np.mean(list(curves[protocol].values()))),
                  "worst": float(np.min(list(curves[protocol].values()))), **per_period})
  return out


def true_rates(config, dataset: str) -> np.ndarray:
  """The true drift rate of each cluster of `dataset` (its source's `drift_rates`)."""
  # Imported by name: the generated sources are modules of jaxml.data.sources.
  import importlib  # pylint: disable=import-outside-toplevel
  source = importlib.import_module(f"jaxml.data.sources.{dataset}")
  return np.asarray(source.drift_rates(config.runs[dataset][config.methods[0]].data))


def report(config, rows: list[dict], tuned: dict, workdir: str | None) -> dict:
  """The summary (each data set x method's mean over seeds of the mean over test periods,
  and `step`, the row count); with a `workdir`, the markdown report and the plots."""
  summary = {"step": len(rows)}
  datasets = list(config.datasets)
  methods = list(dict.fromkeys(r["method"] for r in rows))  # the runs', then river's
  stats = tables.aggregate(rows, key="method", x="dataset", value="mean")
  for (method, dataset), (mean, _, _) in stats.items():
    summary[f"{dataset}/{method}/mean"] = mean
  taus = {d: timescale_stats(config, rows, d) for d in datasets}
  for d, per_method in taus.items():
    for method, stats_of_method in per_method.items():
      summary[f"{d}/{method}/timescale_rank_correlation"] = stats_of_method[3]
  if workdir is None:
    return summary
  artifacts = os.path.join(workdir, "artifacts")
  files.makedirs(artifacts)
  lines = [f"# Concept drift: {len(config.seeds)} seed(s), mean ± sd, test accuracy (%)\n",
           "\n## Mean accuracy over the test periods\n\n",
           tables.markdown_table(stats, methods, datasets, x_name=""),
           "\nriver_<learner>: frozen after one pass over the training periods (the runs' "
           "protocol); river_<learner>_prequential: test-then-train through the test periods "
           "(it sees each test label after predicting it: a reference, not a rival).\n"]
  lines += ["\n## Claims (means over seeds of the mean over test periods)\n\n",
            *tables.claim_lines(stats, CLAIMS, methods, datasets)]
  curves = {}
  for d in datasets:
    per_period = period_stats(rows, d)
    periods = sorted({p for _, p in per_period})
    lines += [f"\n## {d}: accuracy per future period\n\n",
              tables.markdown_table(per_period, methods, periods, x_name="period")]
    curves[d] = {m: (periods, [per_period.get((m, p), (np.nan,))[0] for p in periods])
                 for m in methods if any((m, p) in per_period for p in periods)}
  lines += ["\n## Tuned timescales (accuracy on the held-out last training period, seed "
            f"{config.seed})\n\n| data set | method | tau | held-out accuracy |\n"
            "|---|---|---|---|\n"]
  for d, per_method in tuned.items():
    for method, (best, found) in per_method.items():
      for row in found:
        mark = " (chosen)" if row["tau"] == best else ""
        lines.append(f"| {d} | {method} | {row['tau']:g}{mark} | {100 * row['accuracy']:.1f} |\n")
  lines += ["\n## Learned timescale per cluster against its true drift rate\n\n"
            "The helper's mean assigned timescale E_a[tau] over each cluster's training "
            "examples (periods; mean ± sd over seeds). If the helper learned the drift, faster "
            "clusters get shorter timescales: a negative Spearman correlation (read it with the "
            "range: over timescales that barely differ it ranks noise).\n\n"
            "| data set | method | rates | timescales | range | Spearman ρ |\n"
            "|---|---|---|---|---|---|\n"]
  for d, per_method in taus.items():
    for method, (rates, means, sds, rho) in per_method.items():
      lines.append(f"| {d} | {method} | {', '.join(f'{r:g}' for r in rates)} | "
                   + ", ".join(f"{m:.1f} ± {s:.1f}" for m, s in zip(means, sds))
                   + f" | {np.ptp(means):.2f} | {rho:+.2f} |\n")
  files.write_text(os.path.join(artifacts, "drift.md"), "".join(lines))
  figures.curve_panels(curves, os.path.join(artifacts, "drift_curves.png"),
                        x_label="test period", y_label="accuracy (mean over seeds)",
                        linestyle=lambda m: ":" if m.endswith("_prequential") else (
                            "--" if m.startswith("river_") else "-"))
  run = config.runs[datasets[0]][config.methods[0]].drift  # the timescale grid's ends
  figures.curve_panels(
      {d: {m: (rates, means) for m, (rates, means, _, _) in taus[d].items()} for d in datasets},
      os.path.join(artifacts, "drift_timescales.png"), x_label="true drift rate of the cluster",
      y_label="learned timescale (periods)", log_y=True,
      y_limits=(0.8 * run.tau_min, 1.25 * run.tau_max))
  return summary


def period_stats(rows: list[dict], dataset: str) -> dict:
  """{(method, test period): (mean, sd, count)} of `dataset`'s per-period accuracies."""
  flat = [{"method": r["method"], "period": int(k.split("/")[1]), "accuracy": v}
          for r in rows if r["dataset"] == dataset
          for k, v in r.items() if k.startswith("period/")]
  return tables.aggregate(flat, key="method", x="period", value="accuracy")


def timescale_stats(config, rows: list[dict], dataset: str) -> dict:
  """{method: (rates, mean timescale per cluster, sd, Spearman rho of rate vs timescale)} for
  the learned methods studied."""
  from scipy import stats as scipy_stats  # pylint: disable=import-outside-toplevel
  rates = true_rates(config, dataset)
  out = {}
  for method in LEARNED:
    found = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
    if not found:
      continue
    values = np.array([[r[f"timescale/cluster_{c}"] for c in range(len(rates))] for r in found])
    rho = float(scipy_stats.spearmanr(rates, values.mean(0)).statistic)
    sd = values.std(0, ddof=1) if len(values) > 1 else np.zeros(len(rates))  # as tables'
    out[method] = (rates, values.mean(0), sd, rho)
  return out
