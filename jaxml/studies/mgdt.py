"""The Multi-Game Decision Transformer studies on MinAtar, in one resumable study.

Every model is trained by the runner from experiments/mgdt.py (runs in <workdir>/<name>, each
trained once: `runs.run_once`) with in-run play off; every score comes from the same jitted
evaluation: `envs` environments per game, each env's first episode, normalised so the
dataset's random policy is 0 and its best episode 1 (`jaxml.algos.mgdt.scores`), and the IQM
across games.

1. returns (seeds): one multi-game DT per seed played with κ = 0, 3, 10, best of `best_of`
   return samples, and a fixed target return; and behaviour cloning (same model and data, no
   returns) per seed.
2. specialists: one model per game (seed 0), same size and steps, vs the multi-game model.
3. finetune: the multi-game model (never trained on Seaquest) fine-tuned on a few Seaquest
   episodes per behaviour policy vs the same training from scratch (eval loss curves + play).
4. sizes: tiny, small (the default) and base models (seed 0).
5. attention: the action token's attention over a frame's patches (last layer, mean over
   heads) for one test window of every game, as a PNG.

Each play is a row of <workdir>/results.jsonl keyed by (study, method, seed, run) under a
fingerprint of every other setting (envs, steps, kappa_scale, best_of, target_return, smoke),
so a rerun with the same settings skips it and one with other settings plays again. Tables go
to artifacts/mgdt_study.md, plots next to it. Command line: benchmarks/mgdt_study.py.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import ml_collections
import numpy as np

from experiments import mgdt as mgdt_config
from jaxml import trained
from jaxml.algos import mgdt as mgdt_algo
from jaxml.core import files, rng
from jaxml.core.plots import save_figure
from jaxml.core.metrics import read_metrics
from jaxml.errors import ConfigError
from jaxml.studies import figures, results, runs, tables
from jaxml.studies.base import Study

STUDIES = ("returns", "specialists", "finetune", "sizes", "attention")
KAPPAS = (0.0, 3.0, 10.0)
SIZES = ("tiny", "small", "base")
# The sweep's axes: which rows exist (seeds are in each row's key), not what is in them.
SWEEP = ("seeds", "studies")


def defaults() -> ml_collections.ConfigDict:
  """The study's settings, as benchmarks/mgdt_study.py's flags default them."""
  return ml_collections.ConfigDict({
      "study": "mgdt", "seeds": (0, 1, 2),
      "envs": 16,  # environments per game per play
      "steps": 0,  # play steps (0: the trained config's play.steps)
      "best_of": 16, "kappa_scale": "game", "target_return": 20.0,
      "studies": STUDIES, "smoke": False})  # smoke: smoke-size runs (seconds each)


def validate(config) -> None:
  if not config.seeds or any(int(s) != s or s < 0 for s in config.seeds):
    raise ConfigError(f"seeds={list(config.seeds)} must be a non-empty list of seeds >= 0")
  if not config.studies or any(s not in STUDIES for s in config.studies):
    raise ConfigError(f"studies={list(config.studies)}: choose from {', '.join(STUDIES)}")
  for key, low in (("envs", 1), ("steps", 0), ("best_of", 1)):
    if int(config[key]) != config[key] or config[key] < low:
      raise ConfigError(f"{key}={config[key]} must be an integer >= {low}")
  if config.kappa_scale not in ("game", "global"):
    raise ConfigError(f"kappa_scale={config.kappa_scale!r}: choose game or global")


def methods(config) -> dict[str, list[str]]:
  """The methods (table rows) of every selected study but attention."""
  out = {"returns": ["κ=0", "κ=3", "κ=10", f"best of {config.best_of}",
                     f"fixed R={config.target_return:g}", "BC"],
         "specialists": ["multi-game", "specialist"], "finetune": ["fine-tuned", "scratch"],
         "sizes": list(SIZES)}
  return {s: out[s] for s in config.studies if s in out}


def metric_name(study_name: str, method: str) -> str:
  return f"{study_name}/{tables.slug(method)}/iqm"


def build(config) -> Study:
  validate(config)
  headline = tuple(metric_name(s, m) for s, names in methods(config).items() for m in names)
  return Study(run=functools.partial(run, config), headline=headline,
               outputs=(results.RESULTS, "artifacts/mgdt_study.md", "artifacts/mgdt_*.png"))


def train(out: str, name: str, arg: str, smoke: bool, **fields) -> str:
  """Trains experiments/mgdt.py:<arg> (+ `fields`, dotted names) in OUT/name once."""
  workdir = os.path.join(out, name)
  config = mgdt_config.get_config(",".join(filter(None, [arg, "smoke" if smoke else ""])))
  config.progress = False
  config.play.envs = 0  # the study plays every model itself, with the same protocol
  for dotted, value in fields.items():
    *parents, leaf = dotted.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  runs.run_once(config, workdir)
  return workdir


class Plays:
  """Plays of trained runs, each measured once per fingerprint: rows {study, method, seed,
  run, game, return, normalised}, one per game and one for the IQM. Tables show the plays
  asked for in this invocation only (the log may hold other seeds' plays too)."""

  def __init__(self, config, out: str):
    self.envs, self.steps = int(config.envs), int(config.steps)
    self.kappa_scale = config.kappa_scale
    self.log = results.ResultsLog(os.path.join(out, results.RESULTS),
                                  results.fingerprint(config, exclude=SWEEP),
                                  write=jax.process_index() == 0)
    self.played: dict[tuple, list[dict]] = {}

  def play(self, study_name: str, method: str, seed: int, workdir: str, **knobs) -> list[dict]:
    run_name = os.path.basename(os.path.normpath(workdir))
    key = (study_name, method, seed, run_name)
    measure = lambda: {"rows": self._measure(key, workdir, **knobs)}
    self.played[key] = self.log.cached(key, measure)["rows"]
    return self.played[key]

  def _measure(self, key, workdir: str, *, best_of: int = 0, fixed_return: bool = False,
               **knobs) -> list[dict]:
    study_name, method, seed, run_name = key
    run = trained.load(workdir)
    config, state = run.config, run.state
    config.play.update(best_of=best_of, fixed_return=fixed_return)
    config.play.kappa_scale = self.kappa_scale  # also for runs saved before the option
    started = time.time()
    result = mgdt_algo.play(config, state, rng.stream(jax.random.key(seed), "study-play"),
                            envs=self.envs, steps=self.steps or config.play.steps, **knobs)
    scores = mgdt_algo.scores(config, result)
    tag = {"study": study_name, "method": method, "seed": seed, "run": run_name}
    rows = [{**tag, "game": game, "return": scores[f"play/{game}/return"],
             "normalised": scores[f"play/{game}/normalised"]} for game in config.data.games]
    rows.append({**tag, "game": "IQM", "return": float("nan"),
                 "normalised": scores["play/iqm_normalised"]})
    print(f"played {study_name}/{method}/seed{seed} in {time.time() - started:.0f} s: IQM "
          f"{scores['play/iqm_normalised']:.3f}", flush=True)
    return rows

  def rows(self, study_name: str | None = None) -> list[dict]:
    return [r for rows in self.played.values() for r in rows
            if study_name is None or r["study"] == study_name]

  def table(self, study_name: str, names, games, value: str = "normalised") -> str:
    stats = tables.aggregate(self.rows(study_name), key="method", x="game", value=value)
    return tables.markdown_table(stats, names, games, x_name="",
                                 scale=100.0 if value == "normalised" else 1.0)


def eval_curve(workdir: str) -> tuple[list[int], list[float]]:
  rows = [r for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if "eval/loss" in r]
  return [r["step"] for r in rows], [r["eval/loss"] for r in rows]


def attention_png(workdir: str, path: str) -> str:
  """Per game: the frame (each cell coloured by its highest non-empty channel) and the
  action token's attention over its patches (last layer, mean over heads)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  run = trained.load(workdir)
  config, dataset, state = run.config, run.dataset, run.state
  games = list(config.data.games)
  fig = Figure(figsize=(2.4 * len(games), 4.8))
  axes = fig.subplots(2, len(games), squeeze=False)
  windows = dataset.test.read(np.arange(len(dataset.test)))
  bins = mgdt_algo.return_bins(config)
  for g, game in enumerate(games):
    # A window late in its game's test episodes (50 from the end, or the first of a smaller
    # smoke-size split), full (4 valid steps), with objects on screen.
    full = np.flatnonzero((windows["game"] == g) & (windows["step_mask"].min(1) > 0))
    index = int(full[-min(50, len(full))])
    window = {k: v[index] for k, v in windows.items()}
    window["return"] = np.asarray(bins.encode(window["return_to_go"]))
    window["reward"] = np.asarray(mgdt_algo.dt.encode_reward(window["reward"], window["done"]))
    maps = mgdt_algo.action_attention(config, state, window)[-1].mean(0)
    frame = window["frame"][-1]
    cells = np.where(frame.any(-1), frame.argmax(-1) + 1, 0)
    axes[0, g].imshow(np.ma.masked_equal(cells, 0), cmap="tab10", interpolation="nearest")
    axes[0, g].set_title(game, fontsize=9)
    shown = axes[1, g].imshow(np.kron(maps, np.ones((config.model.patch_size,) * 2)),
                              cmap="magma", interpolation="nearest")
    fig.colorbar(shown, ax=axes[1, g], fraction=0.046)
    for ax in axes[:, g]:
      ax.set_xticks([])
      ax.set_yticks([])
  axes[1, 0].set_ylabel("action token's attention\n(last layer, mean of heads)", fontsize=8)
  fig.tight_layout()
  save_figure(fig, path)
  return path


def run(config, out: str) -> dict:
  """Trains what the selected studies need, plays it (once per setting), writes the tables
  and plots; returns the summary (mean IQM per study and method)."""
  seeds = [int(s) for s in config.seeds]
  studies, smoke = list(config.studies), bool(config.smoke)
  names = methods(config)
  plays = Plays(config, out)
  artifacts = os.path.join(out, "artifacts")
  files.makedirs(artifacts)
  games = list(mgdt_config.get_config("smoke" if smoke else None).data.games)
  report = [f"machine: {os.cpu_count()} CPU cores, {jax.devices()[0].platform}; jax "
            f"{jax.__version__}; seeds {seeds}; {config.envs} envs per game; κ normalised per "
            f"{config.kappa_scale}" + (" (smoke)" if smoke else "")]
  multi = {s: train(out, f"dt-seed{s}", f"seed={s}", smoke) for s in seeds}

  if "returns" in studies:
    returns = names["returns"]
    for s in seeds:
      for kappa, method in zip(KAPPAS, returns):
        plays.play("returns", method, s, multi[s], kappa=kappa)
      plays.play("returns", returns[3], s, multi[s], best_of=int(config.best_of))
      plays.play("returns", returns[4], s, multi[s], fixed_return=True,
                 target_return=float(config.target_return))
      plays.play("returns", "BC", s, train(out, f"bc-seed{s}", f"bc,seed={s}", smoke))
    report += ["## Return conditioning (normalised score × 100, mean ± sd over seeds)",
               plays.table("returns", returns, games + ["IQM"])]
    iqm = [r for r in plays.rows("returns") if r["game"] == "IQM"]
    figures.bars_with_points(
        {m: [r["normalised"] for r in iqm if r["method"] == m] for m in returns},
        os.path.join(artifacts, "mgdt_returns.png"), y_label="IQM normalised score",
        title="multi-game DT: return conditioning vs BC")

  if "specialists" in studies:
    plays.play("specialists", "multi-game", 0, multi[seeds[0]])
    for game in games:
      plays.play("specialists", "specialist", 0,
                 train(out, f"specialist-{game}", f"games={game}", smoke))
    # Each specialist plays only its game: together they make the table's "specialist" row.
    report += ["## One multi-game model vs single-game specialists (κ = 3, seed 0)",
               plays.table("specialists", names["specialists"], games)]

  if "finetune" in studies:
    arg = "heldout=seaquest"
    tuned = train(out, "finetune-seaquest", arg, smoke, init_from=multi[seeds[0]])
    scratch = train(out, "scratch-seaquest", arg, smoke)
    plays.play("finetune", "fine-tuned", 0, tuned)
    plays.play("finetune", "scratch", 0, scratch)
    curves = {"fine-tuned": eval_curve(tuned), "scratch": eval_curve(scratch)}
    report += ["## Fine-tuning to the held-out game (Seaquest, few episodes per policy)",
               plays.table("finetune", names["finetune"], ["seaquest"]),
               "eval loss by step: " + "; ".join(
                   f"{m}: " + ", ".join(f"{s}→{l:.3f}" for s, l in zip(*c))
                   for m, c in curves.items())]
    figures.curves(curves, os.path.join(artifacts, "mgdt_finetune.png"),
                   x_label="fine-tuning step", y_label="held-out Seaquest eval loss")

  if "sizes" in studies:
    for size in SIZES:
      workdir = multi[seeds[0]] if size == "small" else train(out, f"size-{size}",
                                                              f"size={size}", smoke)
      plays.play("sizes", size, 0, workdir)
    report += ["## Model size (κ = 3, seed 0; widths/depths in experiments/mgdt.py SIZES)",
               plays.table("sizes", list(SIZES), games + ["IQM"])]

  if "attention" in studies:
    path = attention_png(multi[seeds[0]], os.path.join(artifacts, "mgdt_attention.png"))
    report.append(f"attention map: {path}")

  text = "\n\n".join(report) + "\n"
  files.write_text(os.path.join(artifacts, "mgdt_study.md"), text)
  print(text)
  summary = {metric_name(s, m): _mean_iqm(plays.rows(s), m)
             for s, ms in names.items() for m in ms}
  summary["step"] = len(plays.played)
  return summary


def _mean_iqm(rows: list[dict], method: str) -> float:
  values = [r["normalised"] for r in rows if r["method"] == method and r["game"] == "IQM"]
  return float(np.mean(values)) if values else float("nan")
