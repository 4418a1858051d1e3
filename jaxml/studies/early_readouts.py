"""Early readouts against spurious features, in one resumable study (issue 19; the config and
its commands: experiments/early_readouts_study.py).

Per data set, every run is a config of `config.runs.<data set>.<method>` trained once
(`runs.run_once`) in <workdir>/runs/<data set>/<name>:

  search/<name>       SiFeR on the validation split at seed `config.seed`: no forgetting
                      (forget_every 0) and every readout depth x forget_every x learning
                      rate of `config.search`; the best validation average accuracy wins
  erm_s<seed>         ERM: the baseline, distill's and DeDiER's teacher
  jtt_first_s<seed>   ERM for `jtt_first_fraction` of the steps: JTT's first model
  <method>_s<seed>    sifer (the searched configuration), distill, dedier, jtt, group_dro;
                      distill_jtt and dedier_jtt: the distillers taught by the JTT run

Each measured run is a row of <workdir>/results.jsonl keyed by (data set, method, seed), its
numbers read from the run's own final evaluation on the test split (the runner's group
metrics, jaxml/evaluators/groups.py): average accuracy, worst-group accuracy over the
(label, shortcut) groups `group` and over `aligned` (aligned vs misaligned examples: with ten
classes each (label, colour) group holds 3-4 test digits, so the aligned split is the stabler
worst group). Search rows are keyed ("search", data set, name). The report is
artifacts/early_readouts.md (tables, the search, and whether each paper's claim holds here),
artifacts/worst_group.png and, for `saliency.dataset`, artifacts/saliency.png (Grad-CAM of
ERM and SiFeR on misaligned test images).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import numpy as np

from jaxml import trained
from jaxml.core import files
from jaxml.errors import ConfigError
from jaxml.studies import figures, results, runs, tables
from jaxml.studies.base import Study, check_choices, check_seeds

METHODS = ("erm", "sifer", "distill", "dedier", "jtt", "group_dro", "distill_jtt",
           "dedier_jtt")
ALGOS = {"erm": "classifier", "sifer": "sifer", "distill": "distill", "dedier": "distill",
         "jtt": "jtt", "group_dro": "group_dro"}
# The distillers' teachers: ERM's run, or (method "<distiller>_jtt", the run config of
# "<distiller>") JTT's, a less biased teacher of the same model.
TEACHERS = {"distill": "erm", "dedier": "erm", "distill_jtt": "jtt", "dedier_jtt": "jtt"}
DATASETS = ("coloured_digits", "patched_digits", "slab")
# The numbers of a row, from the run's summary.json.
MEASURES = {"accuracy": "eval/accuracy",
            "worst_group": "eval/group/worst_group/accuracy",
            "mean_group": "eval/group/mean_group/accuracy",
            "worst_aligned": "eval/aligned/worst_group/accuracy"}
TITLES = {"accuracy": "Average test accuracy",
          "worst_aligned": "Worst of aligned / misaligned (test accuracy of misaligned "
                           "examples)",
          "worst_group": "Worst (label, shortcut) group"}
# Which rows exist, not what is in them.
SWEEP = ("datasets", "methods", "seeds", "saliency", "progress")


@dataclasses.dataclass(frozen=True)
class SearchPoint:
  """One SiFeR configuration of the search."""
  depth: int
  forget_every: int
  learning_rate: float

  @property
  def name(self) -> str:
    if not self.forget_every:
      return "no_forgetting"
    return f"d{self.depth}_k{self.forget_every}_lr{self.learning_rate:g}"


def build(config) -> Study:
  validate(config)
  headline = tuple(f"{d}/{m}/worst_aligned" for d in config.datasets
                   for m in config.methods if m in ("erm", "sifer", "distill", "dedier"))
  return Study(run=functools.partial(fit, config), headline=headline,
               outputs=(results.RESULTS, "artifacts/early_readouts.md",
                        "artifacts/worst_group.png", "runs/"))


def validate(config) -> None:
  datasets = check_choices("datasets", config.datasets, DATASETS, "data sets")
  methods = check_choices("methods", config.methods, METHODS, "methods")
  check_seeds(config.seeds)
  for d in datasets:
    # erm: teacher and first runs; sifer: the search; jtt: the *_jtt distillers' teacher
    for m in {base_method(m) for m in methods} | {"erm", "sifer"} | (
        {"jtt"} if any(TEACHERS.get(m) == "jtt" for m in methods) else set()):
      run = config.runs.get(d, {}).get(m)
      if run is None or run.get("algo") != ALGOS[m] or run.data.source != d:
        raise ConfigError(f"runs.{d}.{m} must be a {ALGOS[m]!r} config on data.source {d!r} "
                          "(experiments/early_readouts_study.py builds them)")
  fraction = config.jtt_first_fraction
  if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) \
      or not 0 < fraction <= 1:
    raise ConfigError(f"jtt_first_fraction={fraction} must be a fraction in (0, 1]")
  search = config.search
  for key in ("depths", "forget_every"):
    values = list(search[key])
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1
                         for v in values):
      raise ConfigError(f"search.{key}={values} must be integers >= 1, at least one "
                        "(no forgetting is always searched)")
  rates = list(search.learning_rates)
  if not rates or any(not isinstance(r, (int, float)) or r <= 0 for r in rates):
    raise ConfigError(f"search.learning_rates={rates} must be numbers > 0, at least one")
  if config.saliency.dataset and config.saliency.dataset not in datasets:
    raise ConfigError(f"saliency.dataset={config.saliency.dataset!r} must be one of "
                      f"datasets={datasets} (or \"\" for none)")


def base_method(method: str) -> str:
  """The method whose run config `method` trains: a distiller taught by JTT is its distiller."""
  return method.removesuffix("_jtt")


def search_points(config) -> list[SearchPoint]:
  depths = list(config.search.depths)
  return [SearchPoint(depths[0], 0, 0.0)] + [
      SearchPoint(d, k, float(lr)) for d in depths for k in config.search.forget_every
      for lr in config.search.learning_rates]


def run_config(config, dataset: str, method: str, seed: int, **changes):
  """The config of one run: `runs.<dataset>.<base_method(method)>` at `seed`, with `changes`
  (dotted keys)."""
  return runs.configured(config.runs[dataset][base_method(method)], seed, config.progress,
                         changes)


def fit(config, workdir: str) -> dict:
  is_chief = jax.process_index() == 0
  log = results.ResultsLog(os.path.join(workdir, results.RESULTS),
                           results.fingerprint(config, exclude=SWEEP), write=is_chief)
  rows, searches = [], {}
  for dataset in config.datasets:
    where = lambda name, d=dataset: os.path.join(workdir, "runs", d, name)
    best, search_rows = search(config, dataset, log, where)
    searches[dataset] = (best, search_rows)
    for seed in config.seeds:
      trained_run = functools.partial(train, config, dataset, seed, best, where)
      for method in config.methods:
        def compute(method=method, trained_run=trained_run):
          out, summary = trained_run(method)
          return {**measure(summary), "workdir": os.path.relpath(out, workdir)}

        rows.append({"dataset": dataset, "method": method, "seed": seed,
                     **log.cached((dataset, method, seed), compute)})
  if is_chief and config.saliency.dataset:
    saliency(config, workdir)
  return report(config, rows, searches, workdir if is_chief else None)


def train(config, dataset: str, seed: int, best: SearchPoint, where, method: str):
  """(workdir, summary) of `method`'s run at `seed`, trained once (`runs.run_once`) after
  the runs it learns from: the distillers' teacher, JTT's first run."""
  changes = {}
  if method == "sifer":
    changes = {"model.readout.depth": best.depth, "sifer.forget_every": best.forget_every,
               "sifer.learning_rate": best.learning_rate or 1e-2}
  elif method in TEACHERS:
    changes = {"distill.teacher": train(config, dataset, seed, best, where,
                                        TEACHERS[method])[0]}
  elif method == "jtt":
    changes = {"jtt.first_run": first_run(config, dataset, seed, where)}
  out = where(f"{method}_s{seed}")
  return out, runs.run_once(run_config(config, dataset, method, seed, **changes), out)


def search(config, dataset: str, log, where) -> tuple[SearchPoint, list[dict]]:
  """SiFeR's search on the validation split: (the point with the best validation average
  accuracy, every point's row)."""
  found = []
  for point in search_points(config):
    def compute(point=point):
      out = where(os.path.join("search", point.name))
      c = run_config(config, dataset, "sifer", config.seed, **{
          "data.eval_split": "validation", "model.readout.depth": point.depth,
          "sifer.forget_every": point.forget_every,
          "sifer.learning_rate": point.learning_rate or 1e-2})
      return {**measure(runs.run_once(c, out)), **dataclasses.asdict(point)}
    found.append((point, log.cached(("search", dataset, point.name), compute)))
  best = max(found, key=lambda pair: pair[1]["accuracy"])[0]  # first of equals: no forgetting
  return best, [{"name": p.name, **row} for p, row in found]


def first_run(config, dataset: str, seed: int, where) -> str:
  """JTT's first model: the ERM config stopped after `jtt_first_fraction` of its steps."""
  out = where(f"jtt_first_s{seed}")
  steps = max(1, round(config.runs[dataset].erm.num_steps * config.jtt_first_fraction))
  runs.run_once(run_config(config, dataset, "erm", seed, num_steps=steps, eval_every=steps,
                           checkpoint_every=steps), out)
  return out


def measure(summary: dict) -> dict:
  missing = [v for v in MEASURES.values() if v not in summary]
  if missing:
    raise ConfigError(f"a run's summary lacks {missing}: its data set has no group fields")
  return {name: float(summary[key]) for name, key in MEASURES.items()}


def saliency(config, workdir: str) -> str:
  """Grad-CAM maps of the ERM and SiFeR runs (seed `config.seed` if studied, else the first)
  on the first misaligned test images of `saliency.dataset`."""
  # Imported here: only this part of the study draws maps.
  from jaxml.evaluators import saliency as saliency_lib  # pylint: disable=import-outside-toplevel
  dataset = config.saliency.dataset
  seed = config.seed if config.seed in config.seeds else config.seeds[0]
  loaded = {method: trained.load(os.path.join(workdir, "runs", dataset, f"{method}_s{seed}"))
            for method in ("erm", "sifer") if method in config.methods}
  test = next(iter(loaded.values())).dataset.test
  aligned = test.read(np.arange(len(test)))["aligned"]
  rows = np.flatnonzero(aligned == 0)[:int(config.saliency.examples)]
  path = os.path.join(workdir, "artifacts", "saliency.png")
  files.makedirs(os.path.dirname(path))
  return saliency_lib.for_runs(loaded, test, rows, int(config.saliency.depth), path)


def report(config, rows: list[dict], searches: dict, workdir: str | None) -> dict:
  """The summary (each data set x method's mean of every measure over seeds, and `step`, the
  row count); with a `workdir`, the markdown report and the worst-group plot."""
  summary = {"step": len(rows)}
  datasets, methods = list(config.datasets), list(config.methods)
  stats = {name: tables.aggregate(rows, key="method", x="dataset", value=name)
           for name in MEASURES}
  for (method, dataset), (mean, _, _) in stats["worst_aligned"].items():
    summary[f"{dataset}/{method}/worst_aligned"] = mean
  for (method, dataset), (mean, _, _) in stats["accuracy"].items():
    summary[f"{dataset}/{method}/accuracy"] = mean
  if workdir is None:
    return summary
  artifacts = os.path.join(workdir, "artifacts")
  files.makedirs(artifacts)
  lines = [f"# Early readouts: {len(config.seeds)} seed(s), mean ± sd, test accuracy (%)\n"]
  for name, title in TITLES.items():
    lines += [f"\n## {title}\n\n",
              tables.markdown_table(stats[name], methods, datasets, x_name="")]
  lines += ["\n## Claims\n\n", *claims(stats["worst_aligned"], methods, datasets)]
  lines += ["\n## SiFeR's search (validation average accuracy, seed "
            f"{config.seed})\n\n| data set | configuration | validation accuracy | "
            "worst aligned |\n|---|---|---|---|\n"]
  for dataset, (best, found) in searches.items():
    for row in found:
      mark = " (chosen)" if row["name"] == best.name else ""
      lines.append(f"| {dataset} | {row['name']}{mark} | {100 * row['accuracy']:.1f} | "
                   f"{100 * row['worst_aligned']:.1f} |\n")
  files.write_text(os.path.join(artifacts, "early_readouts.md"), "".join(lines))
  figures.grouped_bars(
      {d: [stats["worst_aligned"].get((m, d), (np.nan,))[0] for m in methods]
       for d in datasets}, methods, os.path.join(artifacts, "worst_group.png"),
      y_label="misaligned test accuracy (worst group)", y_max=1.0)
  return summary


def claims(stats, methods, datasets) -> list[str]:
  """Each paper's claim on worst-group accuracy, held or not per data set (means over seeds)."""
  pairs = [("dedier", "distill", "DeDiER beats plain distillation (ERM teacher)"),
           ("dedier_jtt", "distill_jtt", "DeDiER beats plain distillation (JTT teacher)"),
           ("sifer", "erm", "SiFeR beats ERM"), ("sifer", "jtt", "SiFeR beats JTT")]
  return tables.claim_lines(stats, pairs, methods, datasets, measure=" on worst-group accuracy")
