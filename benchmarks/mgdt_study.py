"""The Multi-Game Decision Transformer studies on MinAtar, in one resumable command.

  python benchmarks/mgdt_study.py --out runs/mgdt_study [--seeds 0,1,2] [--smoke]

Every model is trained by the runner from experiments/mgdt.py (runs in OUT/<name>; a finished
run is reused) with in-run play off; every score comes from the same jitted evaluation:
`--envs` environments per game, each env's first episode, normalised so the dataset's random
policy is 0 and its best episode 1 (`mgdt.scores`), and the IQM across games.

1. return conditioning (seeds): one multi-game DT per seed played with κ = 0, 3, 10, best of
   `--best_of` return samples, and a fixed target return; and behaviour cloning (same model
   and data, no returns) per seed.
2. specialists: one model per game (seed 0), same size and steps, vs the multi-game model.
3. fine-tuning: the multi-game model (never trained on Seaquest) fine-tuned on a few Seaquest
   episodes per behaviour policy vs the same training from scratch (eval loss curves + play).
4. sizes: tiny, small (the default) and base models (seed 0).
5. attention: the action token's attention over a frame's patches (last layer, mean over
   heads) for one test window of every game, as a PNG.

Each play is one row of OUT/plays.jsonl (rerunning skips rows already there); the tables go to
OUT/artifacts/mgdt_study.md and the plots next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from experiments import mgdt as mgdt_config
from jaxml import runner, trained
from jaxml.algos import mgdt
from jaxml.core import rng
from jaxml.core.metrics import read_metrics
from jaxml.evaluators import study

KAPPAS = (0.0, 3.0, 10.0)


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
  runner.run_once(config, workdir)
  return workdir


class Plays:
  """Rows {study, method, seed, run, game, return, normalised} in OUT/plays.jsonl; a play
  whose (study, method, seed, run) is there already is not repeated."""

  def __init__(self, out: str, envs: int, steps: int | None, kappa_scale: str):
    self.path = os.path.join(out, "plays.jsonl")
    self.envs, self.steps, self.kappa_scale = envs, steps, kappa_scale
    self.rows = []
    if os.path.exists(self.path):
      with open(self.path, encoding="utf-8") as f:
        self.rows = [json.loads(line) for line in f if line.strip()]

  def play(self, study_name: str, method: str, seed: int, workdir: str, *, best_of: int = 0,
           fixed_return: bool = False, **knobs) -> list[dict]:
    run = os.path.basename(os.path.normpath(workdir))
    done = [r for r in self.rows if (r["study"], r["method"], r["seed"], r["run"]) ==
            (study_name, method, seed, run)]
    if done:
      return done
    run = trained.load(workdir)
    config, state = run.config, run.state
    config.play.update(best_of=best_of, fixed_return=fixed_return)
    config.play.kappa_scale = self.kappa_scale  # also for runs saved before the option
    key = rng.stream(jax.random.key(seed), "study-play")
    started = time.time()
    result = mgdt.play(config, state, key, envs=self.envs,
                       steps=self.steps or config.play.steps, **knobs)
    scores = mgdt.scores(config, result)
    rows = [{"study": study_name, "method": method, "seed": seed, "run": run, "game": game,
             "return": scores[f"play/{game}/return"],
             "normalised": scores[f"play/{game}/normalised"]} for game in config.data.games]
    rows.append({"study": study_name, "method": method, "seed": seed, "run": run, "game": "IQM",
                 "return": float("nan"), "normalised": scores["play/iqm_normalised"]})
    with open(self.path, "a", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
    self.rows += rows
    print(f"played {study_name}/{method}/seed{seed} in {time.time() - started:.0f} s: IQM "
          f"{scores['play/iqm_normalised']:.3f}", flush=True)
    return rows

  def table(self, study_name: str, methods, games, value: str = "normalised") -> str:
    rows = [r for r in self.rows if r["study"] == study_name]
    stats = study.aggregate(rows, key="method", x="game", value=value)
    return study.markdown_table(stats, methods, games, x_name="",
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
  bins = mgdt.return_bins(config)
  for g, game in enumerate(games):
    # A window late in its game's test episodes, full (4 valid steps), with objects on screen.
    index = int(np.flatnonzero((windows["game"] == g) & (windows["step_mask"].min(1) > 0))[-50])
    window = {k: v[index] for k, v in windows.items()}
    window["return"] = np.asarray(bins.encode(window["return_to_go"]))
    window["reward"] = np.asarray(mgdt.dt.encode_reward(window["reward"], window["done"]))
    maps = mgdt.action_attention(config, state, window)[-1].mean(0)
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
  fig.savefig(path, dpi=110)
  return path


def bar_plot(plays: Plays, study_name: str, methods, path: str, title: str) -> str:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  rows = [r for r in plays.rows if r["study"] == study_name and r["game"] == "IQM"]
  fig = Figure(figsize=(1.1 * len(methods) + 2, 3.2))
  ax = fig.subplots()
  for i, method in enumerate(methods):
    values = [r["normalised"] for r in rows if r["method"] == method]
    ax.bar(i, np.mean(values), alpha=0.6)
    ax.scatter([i] * len(values), values, color="k", s=10, zorder=3)
  ax.set_xticks(range(len(methods)), methods, fontsize=8)
  ax.set_ylabel("IQM normalised score")
  ax.set_title(title, fontsize=9)
  ax.axhline(0, color="gray", lw=0.5)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/mgdt_study")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--envs", type=int, default=16, help="environments per game per play")
  parser.add_argument("--steps", type=int, default=0, help="play steps (0: the config's)")
  parser.add_argument("--best_of", type=int, default=16)
  parser.add_argument("--kappa_scale", default="game", choices=("game", "global"))
  parser.add_argument("--target_return", type=float, default=20.0)
  parser.add_argument("--studies", default="returns,specialists,finetune,sizes,attention")
  parser.add_argument("--smoke", action="store_true", help="smoke-size runs (seconds each)")
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  studies = args.studies.split(",")
  out, smoke = args.out, args.smoke
  plays = Plays(out, args.envs, args.steps or None, args.kappa_scale)
  artifacts = os.path.join(out, "artifacts")
  os.makedirs(artifacts, exist_ok=True)
  games = list(mgdt_config.get_config("smoke" if smoke else None).data.games)
  report = [f"machine: {os.cpu_count()} CPU cores, {jax.devices()[0].platform}; jax "
            f"{jax.__version__}; seeds {seeds}; {args.envs} envs per game; κ normalised per "
            f"{args.kappa_scale}"
            + (" (smoke)" if smoke else "")]
  multi = {s: train(out, f"dt-seed{s}", f"seed={s}", smoke) for s in seeds}

  if "returns" in studies:
    methods = ["κ=0", "κ=3", "κ=10", f"best of {args.best_of}",
               f"fixed R={args.target_return:g}", "BC"]
    for s in seeds:
      for kappa, method in zip(KAPPAS, methods):
        plays.play("returns", method, s, multi[s], kappa=kappa)
      plays.play("returns", methods[3], s, multi[s], best_of=args.best_of)
      plays.play("returns", methods[4], s, multi[s], fixed_return=True,
                 target_return=args.target_return)
      plays.play("returns", "BC", s, train(out, f"bc-seed{s}", f"bc,seed={s}", smoke))
    report += ["## Return conditioning (normalised score × 100, mean ± sd over seeds)",
               plays.table("returns", methods, games + ["IQM"])]
    bar_plot(plays, "returns", methods, os.path.join(artifacts, "mgdt_returns.png"),
             "multi-game DT: return conditioning vs BC")

  if "specialists" in studies:
    plays.play("specialists", "multi-game", 0, multi[seeds[0]])
    for game in games:
      plays.play("specialists", "specialist", 0,
                 train(out, f"specialist-{game}", f"games={game}", smoke))
    # Each specialist plays only its game: together they make the table's "specialist" row.
    report += ["## One multi-game model vs single-game specialists (κ = 3, seed 0)",
               plays.table("specialists", ["multi-game", "specialist"], games)]

  if "finetune" in studies:
    arg = "heldout=seaquest"
    tuned = train(out, "finetune-seaquest", arg, smoke, init_from=multi[seeds[0]])
    scratch = train(out, "scratch-seaquest", arg, smoke)
    plays.play("finetune", "fine-tuned", 0, tuned)
    plays.play("finetune", "scratch", 0, scratch)
    curves = {"fine-tuned": eval_curve(tuned), "scratch": eval_curve(scratch)}
    report += ["## Fine-tuning to the held-out game (Seaquest, few episodes per policy)",
               plays.table("finetune", ["fine-tuned", "scratch"], ["seaquest"]),
               "eval loss by step: " + "; ".join(
                   f"{m}: " + ", ".join(f"{s}→{l:.3f}" for s, l in zip(*c))
                   for m, c in curves.items())]
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.subplots()
    for method, (steps, losses) in curves.items():
      ax.plot(steps, losses, marker="o", label=method)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("held-out Seaquest eval loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(artifacts, "mgdt_finetune.png"), dpi=110)

  if "sizes" in studies:
    sizes = ["tiny", "small", "base"]
    for size in sizes:
      workdir = multi[seeds[0]] if size == "small" else train(out, f"size-{size}",
                                                              f"size={size}", smoke)
      plays.play("sizes", size, 0, workdir)
    report += ["## Model size (κ = 3, seed 0; widths/depths in experiments/mgdt.py SIZES)",
               plays.table("sizes", sizes, games + ["IQM"])]

  if "attention" in studies:
    path = attention_png(multi[seeds[0]], os.path.join(artifacts, "mgdt_attention.png"))
    report.append(f"attention map: {path}")

  text = "\n\n".join(report) + "\n"
  with open(os.path.join(artifacts, "mgdt_study.md"), "w", encoding="utf-8") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
