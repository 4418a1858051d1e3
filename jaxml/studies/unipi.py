"""The UniPi studies on BabyAI, in one resumable study.

Every model is trained by the runner from experiments/unipi.py (runs in <workdir>/<name>-seed<k>,
each trained once: `runs.run_once`) with in-run control off; every success rate comes from the
same closed loop (`jaxml.algos.unipi.control`: `episodes` fresh environments per level and per
mission split, seeds far from the dataset's, plan → inverse dynamics → act, replanning every
`replan_every` steps).

1. control: UniPi (guidance w = 1) on seen and on held-out colour-object missions, against the
   text-conditioned behaviour-cloning policy trained on the same demonstrations; the ablations
   without first-frame conditioning and without the temporal hierarchy; w ∈ {0, 1, 3}; and
   uniformly random actions on the same episodes (chance).
2. consistency: `unipi.consistency_error` of plans from `windows` test windows (mean absolute
   error of planned frames against the observed first frame on the pixels the real episode
   never changes), with and without first-frame conditioning; "mismatched" pairs each plan
   with another window's scene, the error of a plan that ignores the scene it starts from.
3. plans: for a few seen and held-out missions, a GIF of the executed trajectory next to the
   plan in force at each step, and one PNG strip per episode.

Each measurement is a row of <workdir>/results.jsonl keyed by (study, method, run) under a
fingerprint of the settings that can change it (seed, smoke, and `episodes` for control rows,
`windows` for consistency rows), so a rerun with the same settings skips it and one with other
settings measures again. Tables go to artifacts/unipi_study.md, plots and GIFs next to it.
Command line: benchmarks/unipi_study.py.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import ml_collections
import numpy as np

from experiments import unipi as unipi_config
from jaxml import trained
from jaxml.algos import unipi as unipi_algo
from jaxml.core import rng
from jaxml.data.sources import babyai as babyai_source
from jaxml.errors import ConfigError
from jaxml.studies import figures, results, runs, tables
from jaxml.studies.base import Study

STUDIES = ("control", "consistency", "plans")
GUIDANCE = (0.0, 1.0, 3.0)
# (run name, experiments/unipi.py option) of every trained model
RUNS = {"unipi": "", "nff": "no_first_frame", "flat": "flat", "bc": "bc"}
CONTROL = [f"UniPi (w={w:g})" for w in GUIDANCE] + [
    "no first-frame conditioning", "no temporal hierarchy", "behaviour cloning",
    "random actions"]
CONTROL_ORDER = [CONTROL[i] for i in (1, 5, 6, 3, 4, 0, 2)]  # the table's rows
CONSISTENCY = ["first-frame conditioned (w=1)", "no first-frame conditioning",
               "no temporal hierarchy"]
# Settings that cannot change a study's rows: which studies run, how many episodes are shown
# as GIFs (never cached), and the other study's sample size.
EXCLUDE = {"control": ("studies", "record", "windows"),
           "consistency": ("studies", "record", "episodes")}


def defaults() -> ml_collections.ConfigDict:
  """The study's settings, as benchmarks/unipi_study.py's flags default them."""
  return ml_collections.ConfigDict({
      "study": "unipi", "seed": 0,
      "episodes": 100,  # closed-loop episodes per level and per mission split
      "windows": 256,  # windows per split for the frame-consistency measure
      "record": 2,  # episodes per split shown as GIFs
      "studies": STUDIES, "smoke": False})  # smoke: smoke-size runs (seconds each)


def validate(config) -> None:
  if not config.studies or any(s not in STUDIES for s in config.studies):
    raise ConfigError(f"studies={list(config.studies)}: choose from {', '.join(STUDIES)}")
  for key, low in (("seed", 0), ("episodes", 1), ("windows", 2), ("record", 0)):
    if int(config[key]) != config[key] or config[key] < low:
      raise ConfigError(f"{key}={config[key]} must be an integer >= {low}")


def build(config) -> Study:
  validate(config)
  headline = []
  if "control" in config.studies:
    headline += [f"control/{tables.slug(m)}/{want}" for m in CONTROL_ORDER
                 for want in ("seen", "heldout")]
  if "consistency" in config.studies:
    headline += [f"consistency/{tables.slug(m)}/test" for m in CONSISTENCY]
  return Study(run=functools.partial(run, config), headline=tuple(headline),
               outputs=(results.RESULTS, "artifacts/unipi_study.md", "artifacts/unipi_*"))


def train(out: str, name: str, arg: str, smoke: bool, seed: int) -> str:
  """Trains experiments/unipi.py:<arg> in OUT/<name>-seed<seed> once, without control."""
  workdir = os.path.join(out, f"{name}-seed{seed}")
  options = ",".join(filter(None, [arg, "smoke" if smoke else "", f"seed={seed}"]))
  config = unipi_config.get_config(options)
  config.progress = False
  config.control.episodes = 0  # the study runs every policy itself, with the same protocol
  runs.run_once(config, workdir)
  return workdir


class Measurements:
  """Rows {study, method, run, ...} of trained runs, each measured once per fingerprint.
  Tables show the measurements asked for in this invocation only."""

  def __init__(self, config, out: str):
    path = os.path.join(out, results.RESULTS)
    write = jax.process_index() == 0
    self.logs = {name: results.ResultsLog(path, results.fingerprint(config, exclude=exclude),
                                          write=write) for name, exclude in EXCLUDE.items()}
    self.measured: dict[tuple, list[dict]] = {}
    # One jitted policy per trained run: every measurement of it (both splits, control and
    # consistency, any guidance) reuses one compilation.
    self.policies: dict[str, object] = {}

  def rows(self, study_name: str) -> list[dict]:
    return [r for rows in self.measured.values() for r in rows if r["study"] == study_name]

  def measure(self, study_name: str, method: str, workdir: str, measure) -> list[dict]:
    """The rows of `study_name` for the trained run in `workdir`: `measure(config, dataset,
    state, key, policy)`'s rows, tagged with study, method and run, unless they are logged
    already."""
    run_name = os.path.basename(os.path.normpath(workdir))
    key = (study_name, method, run_name)

    def compute():
      run = trained.load(workdir)
      config, dataset, state = run.config, run.dataset, run.state
      stream = rng.stream(jax.random.key(config.seed), f"study-{study_name}")
      if workdir not in self.policies:
        self.policies[workdir] = unipi_algo.make_policy(config)
      started = time.time()
      rows = [{"study": study_name, "method": method, "run": run_name, **row}
              for row in measure(config, dataset, state, stream, self.policies[workdir])]
      print(f"{study_name} {method} in {time.time() - started:.0f} s", flush=True)
      return {"rows": rows}

    self.measured[key] = self.logs[study_name].cached(key, compute)["rows"]
    return self.measured[key]


def control_rows(measurements: Measurements, method: str, workdir: str, episodes: int,
                 guidance=None, act=None) -> list[dict]:
  """Success rate and steps to success of the policy in `workdir` (or of `act` on the same
  episodes), per split and level."""

  def measure(config, _, state, key, policy):
    config.control.episodes = episodes
    for want in ("seen", "heldout"):
      outcome = unipi_algo.control(config, state, jax.random.fold_in(key, want == "heldout"),
                                   want=want, guidance=guidance, act=act, policy=policy)
      for level, result in outcome.items():
        print(f"  {want}/{level}: success {result.success_rate:.2f}", flush=True)
        yield {"want": want, "level": level, "success": result.success_rate,
               "steps": result.mean_steps, "episodes": len(result.success)}

  return measurements.measure("control", method, workdir, measure)


def consistency_rows(measurements: Measurements, method: str, workdir: str, windows: int,
                     guidance=None) -> list[dict]:
  """Frame consistency of plans from `windows` test windows, and the mismatched reference."""

  def measure(config, dataset, state, key, policy):
    for split_name, split in (("test", dataset.test),
                              ("heldout", babyai_source.heldout_split(config.data))):
      plans, video = unipi_algo.window_plans(config, state, split, key, count=windows,
                                             guidance=guidance, policy=policy)
      static = unipi_algo.static_pixels(video)
      mismatched = np.roll(plans, 1, axis=0)  # another window's plan on this window's scene
      yield {"split": split_name, "windows": windows,
             "error": unipi_algo.consistency_error(plans, video, static),
             "mismatched": unipi_algo.consistency_error(mismatched, video, static)}

  return measurements.measure("consistency", method, workdir, measure)


def _mean(rows, field, **where) -> float:
  values = [r[field] for r in rows if all(r[k] == v for k, v in where.items())]
  values = [v for v in values if v == v]  # NaN steps: no success in that cell
  return float(np.mean(values)) if values else float("nan")


def control_table(rows: list[dict], methods: list[str], levels: list[str]) -> str:
  """Success % per split and level (and the mean over levels), steps to success per split."""
  columns = [(want, level) for want in ("seen", "heldout") for level in levels + ["mean"]]
  header = ("| method | " + " | ".join(f"{w} {l}" for w, l in columns)
            + " | steps (seen) | steps (held-out) |")
  lines = [header, "|---" * (len(columns) + 3) + "|"]
  for method in methods:
    mine = [r for r in rows if r["method"] == method]
    if not mine:
      continue
    cells = []
    for want, level in columns:
      where = {"want": want} if level == "mean" else {"want": want, "level": level}
      cells.append(f"{100 * _mean(mine, 'success', **where):.0f}")
    steps = [_mean(mine, "steps", want=w) for w in ("seen", "heldout")]
    steps = ["—" if x != x else f"{x:.1f}" for x in steps]  # NaN: no episode succeeded
    lines.append(f"| {method} | " + " | ".join(cells + steps) + " |")
  return "\n".join(lines) + "\n"


def consistency_table(rows: list[dict], methods: list[str]) -> str:
  lines = ["| plans from | test windows (seen missions) | held-out windows | "
           "mismatched scene (test) |", "|---|---|---|---|"]
  for method in methods:
    mine = {r["split"]: r for r in rows if r["method"] == method}
    if mine:
      lines.append(f"| {method} | {mine['test']['error']:.4f} | {mine['heldout']['error']:.4f} "
                   f"| {mine['test']['mismatched']:.4f} |")
  return "\n".join(lines) + "\n"


def sample_plans(workdir: str, artifacts: str, per_split: int) -> list[str]:
  """GIFs and a PNG strip of recorded closed-loop episodes (first level of each split)."""
  run = trained.load(workdir)
  config, state = run.config, run.state
  config.control.episodes = max(per_split, 1)
  key = rng.stream(jax.random.key(config.seed), "study-plans")
  every = config.control.replan_every
  paths, strips = [], []
  for want in ("seen", "heldout"):
    outcome = unipi_algo.control(config, state, key, want=want, record=per_split)
    for level, result in outcome.items():
      for i, record in enumerate(result.recorded):
        tag = f"{want}-{level}-{i}"
        won = "success" if result.success[i] else "failure"
        paths.append(figures.plan_gif(record, every,
                                      os.path.join(artifacts, f"unipi_plan_{tag}.gif")))
        strips.append((f"{want}/{level} ({won})", record))
  paths.append(figures.plan_strip(strips, every, os.path.join(artifacts, "unipi_plans.png")))
  return paths


def run(config, out: str) -> dict:
  """Trains the four models once, measures what the selected studies need (once per
  setting), writes the tables, plots and GIFs; returns the summary."""
  studies, smoke, episodes = list(config.studies), bool(config.smoke), int(config.episodes)
  artifacts = os.path.join(out, "artifacts")
  os.makedirs(artifacts, exist_ok=True)
  measurements = Measurements(config, out)
  trained = {name: train(out, name, arg, smoke, int(config.seed)) for name, arg in RUNS.items()}
  levels = list(unipi_config.get_config("smoke" if smoke else None).control.levels)
  report = [f"machine: {os.cpu_count()} CPU cores, {jax.devices()[0].platform}; jax "
            f"{jax.__version__}; seed {config.seed}; {episodes} episodes per level and "
            f"split" + (" (smoke)" if smoke else "")]
  summary = {}

  if "control" in studies:
    for w, method in zip(GUIDANCE, CONTROL):
      control_rows(measurements, method, trained["unipi"], episodes, guidance=w)
    control_rows(measurements, CONTROL[3], trained["nff"], episodes)
    control_rows(measurements, CONTROL[4], trained["flat"], episodes)
    control_rows(measurements, CONTROL[5], trained["bc"], episodes)
    control_rows(measurements, CONTROL[6], trained["bc"], episodes, act=unipi_algo.random_act)
    rows = measurements.rows("control")
    report += ["## Closed-loop success (%) on seen and held-out missions",
               control_table(rows, CONTROL_ORDER, levels), "![success](unipi_success.png)"]
    success = {want: [100 * _mean([r for r in rows if r["method"] == m], "success", want=want)
                      for m in CONTROL_ORDER] for want in ("seen", "heldout")}
    figures.grouped_bars({"seen missions": success["seen"],
                          "held-out combinations": success["heldout"]}, CONTROL_ORDER,
                         os.path.join(artifacts, "unipi_success.png"),
                         y_label="closed-loop success %", y_max=100)
    summary.update({f"control/{tables.slug(m)}/{want}": success[want][i] / 100
                    for i, m in enumerate(CONTROL_ORDER) for want in success})

  if "consistency" in studies:
    windows = int(config.windows)
    consistency_rows(measurements, CONSISTENCY[0], trained["unipi"], windows)
    consistency_rows(measurements, CONSISTENCY[1], trained["nff"], windows)
    consistency_rows(measurements, CONSISTENCY[2], trained["flat"], windows)
    rows = measurements.rows("consistency")
    report += ["## Frame consistency (mean |plan − first frame| on static pixels, lower is "
               "better)", consistency_table(rows, CONSISTENCY)]
    summary.update({f"consistency/{tables.slug(r['method'])}/{r['split']}": r["error"]
                    for r in rows})

  if "plans" in studies:
    paths = sample_plans(trained["unipi"], artifacts, int(config.record))
    report += ["## Sample plans (executed | planned)"] + [
        f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in paths]

  text = "\n\n".join(report)
  with open(os.path.join(artifacts, "unipi_study.md"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  print(text)
  summary["step"] = len(measurements.measured)
  return summary
