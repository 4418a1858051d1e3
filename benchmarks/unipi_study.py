"""The UniPi studies on BabyAI, in one resumable command.

  python benchmarks/unipi_study.py --out runs/unipi_study [--episodes 100] [--smoke]

Every model is trained by the runner from experiments/unipi.py (runs in OUT/<name>; a finished
run is reused) with in-run control off; every success rate comes from the same closed loop
(`unipi.control`: `--episodes` fresh environments per level and per mission split, seeds far
from the dataset's, plan → inverse dynamics → act, replanning every `replan_every` steps).

1. control: UniPi (guidance w = 1) on seen and on held-out colour-object missions, against the
   text-conditioned behaviour-cloning policy trained on the same demonstrations; the ablations
   without first-frame conditioning and without the temporal hierarchy; w ∈ {0, 1, 3}; and
   uniformly random actions on the same episodes (chance).
2. consistency: `unipi.consistency_error` of plans from test windows (mean absolute error of
   planned frames against the observed first frame on the pixels the real episode never
   changes), with and without first-frame conditioning; "mismatched" pairs each plan with
   another window's scene, the error of a plan that ignores the scene it starts from.
3. plans: for a few seen and held-out missions, a GIF of the executed trajectory next to the
   plan in force at each step, and one PNG strip per episode.

Each result is a row of OUT/results.jsonl (rerunning skips rows already there); the tables go
to OUT/artifacts/unipi_study.md and the plots and GIFs next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from experiments import unipi as unipi_config
from jaxml import runner, trained
from jaxml.algos import unipi
from jaxml.core import rng
from jaxml.data.sources import babyai as babyai_source

GUIDANCE = (0.0, 1.0, 3.0)
STRIP_STEPS = 16
# (run name, experiments/unipi.py option) of every trained model
RUNS = {"unipi": "", "nff": "no_first_frame", "flat": "flat", "bc": "bc"}


def train(out: str, name: str, arg: str, smoke: bool, seed: int) -> str:
  """Trains experiments/unipi.py:<arg> in OUT/<name>-seed<seed> once, without control."""
  workdir = os.path.join(out, f"{name}-seed{seed}")
  options = ",".join(filter(None, [arg, "smoke" if smoke else "", f"seed={seed}"]))
  config = unipi_config.get_config(options)
  config.progress = False
  config.control.episodes = 0  # the study runs every policy itself, with the same protocol
  runner.run_once(config, workdir)
  return workdir


class Results:
  """Rows {study, method, run, ...} in OUT/results.jsonl; a (study, method, run) that is
  there already is not measured again."""

  def __init__(self, out: str):
    self.path = os.path.join(out, "results.jsonl")
    self.rows = []
    if os.path.exists(self.path):
      with open(self.path, encoding="utf-8") as f:
        self.rows = [json.loads(line) for line in f if line.strip()]

  def find(self, study_name: str, method: str, run: str) -> list[dict]:
    return [r for r in self.rows
            if (r["study"], r["method"], r["run"]) == (study_name, method, run)]

  def add(self, rows: list[dict]) -> list[dict]:
    with open(self.path, "a", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
    self.rows += rows
    return rows


def measured(results: Results, study_name: str, method: str, workdir: str, measure) -> list[dict]:
  """The rows of `study_name` for the trained run in `workdir`: `measure(config, dataset,
  state, key)`'s rows, tagged with study, method and run, unless they are in `results`."""
  run = os.path.basename(os.path.normpath(workdir))
  done = results.find(study_name, method, run)
  if done:
    return done
  run = trained.load(workdir)
  config, dataset, state = run.config, run.dataset, run.state
  key = rng.stream(jax.random.key(config.seed), f"study-{study_name}")
  started = time.time()
  rows = [{"study": study_name, "method": method, "run": run, **row}
          for row in measure(config, dataset, state, key)]
  print(f"{study_name} {method} in {time.time() - started:.0f} s", flush=True)
  return results.add(rows)


def control_rows(results: Results, method: str, workdir: str, episodes: int,
                 guidance=None, act=None) -> list[dict]:
  """Success rate and steps to success of the policy in `workdir` (or of `act` on the same
  episodes), per split and level."""

  def measure(config, _, state, key):
    config.control.episodes = episodes
    for want in ("seen", "heldout"):
      outcome = unipi.control(config, state, jax.random.fold_in(key, want == "heldout"),
                              want=want, guidance=guidance, act=act)
      for level, result in outcome.items():
        print(f"  {want}/{level}: success {result.success_rate:.2f}", flush=True)
        yield {"want": want, "level": level, "success": result.success_rate,
               "steps": result.mean_steps, "episodes": len(result.success)}

  return measured(results, "control", method, workdir, measure)


def consistency_rows(results: Results, method: str, workdir: str, windows: int,
                     guidance=None) -> list[dict]:
  """Frame consistency of plans from `windows` test windows, and the mismatched reference."""

  def measure(config, dataset, state, key):
    for split_name, split in (("test", dataset.test),
                              ("heldout", babyai_source.heldout_split(config.data))):
      plans, video = unipi.window_plans(config, state, split, key, count=windows,
                                        guidance=guidance)
      static = unipi.static_pixels(video)
      mismatched = np.roll(plans, 1, axis=0)  # another window's plan on this window's scene
      yield {"split": split_name, "windows": windows,
             "error": unipi.consistency_error(plans, video, static),
             "mismatched": unipi.consistency_error(mismatched, video, static)}

  return measured(results, "consistency", method, workdir, measure)


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


def success_plot(rows: list[dict], methods: list[str], path: str) -> str:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # slow import
  fig = Figure(figsize=(1.3 * len(methods) + 2, 3.4))
  ax = fig.subplots()
  width = 0.38
  for j, want in enumerate(("seen", "heldout")):
    values = [100 * _mean([r for r in rows if r["method"] == m], "success", want=want)
              for m in methods]
    ax.bar(np.arange(len(methods)) + (j - 0.5) * width, values, width,
           label="seen missions" if want == "seen" else "held-out combinations")
  ax.set_xticks(range(len(methods)), methods, fontsize=8, rotation=15)
  ax.set_ylabel("closed-loop success %")
  ax.set_ylim(0, 100)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path


def _upscale(frame, scale: int = 4) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.dtype != np.uint8:
    frame = np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)
  return np.kron(frame, np.ones((scale, scale, 1), np.uint8))


def _plan_in_force(record: dict, t: int, replan_every: int):
  """(plan, index in it) for executed step t: plans are made every `replan_every` steps."""
  p = min(t // replan_every, len(record["plans"]) - 1)
  return record["plans"][p], min(t - p * replan_every, len(record["plans"][p]) - 1)


def plan_gif(record: dict, replan_every: int, path: str, scale: int = 4) -> str:
  """Executed frame t (left) next to the plan's frame for step t (right), mission on top."""
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  images = []
  for t, frame in enumerate(record["frames"]):
    plan, i = _plan_in_force(record, t, replan_every)
    left, right = _upscale(frame, scale), _upscale(plan[i], scale)
    gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
    body = np.concatenate([left, gap, right], axis=1)
    canvas = Image.new("RGB", (body.shape[1], body.shape[0] + 28), "white")
    canvas.paste(Image.fromarray(body), (0, 28))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), record["mission"][:34], fill="black")
    draw.text((2, 14), f"t={t}  executed | planned", fill="gray")
    images.append(canvas)
  images[0].save(path, save_all=True, append_images=images[1:] + images[-1:] * 3,
                 duration=400, loop=0)
  return path


def plan_strip(records: list[tuple[str, dict]], replan_every: int, path: str) -> str:
  """Per episode two rows: executed frames and the planned frame for each of the first
  `STRIP_STEPS` steps (the GIFs show whole episodes)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  steps = min(STRIP_STEPS, max(len(r["frames"]) for _, r in records))
  fig = Figure(figsize=(0.75 * steps + 1, 1.6 * len(records)))
  axes = fig.subplots(2 * len(records), steps, squeeze=False)
  for e, (title, record) in enumerate(records):
    for t in range(steps):
      top, bottom = axes[2 * e, t], axes[2 * e + 1, t]
      if t < len(record["frames"]):
        plan, i = _plan_in_force(record, t, replan_every)
        top.imshow(record["frames"][t])
        bottom.imshow(np.clip(plan[i], 0, 1))
      for ax in (top, bottom):
        ax.set_axis_off()
    axes[2 * e, 0].set_title(f"{title}: {record['mission']}", fontsize=7, loc="left")
    axes[2 * e, 0].text(-4, 12, "executed", fontsize=6, ha="right", va="center")
    axes[2 * e + 1, 0].text(-4, 12, "planned", fontsize=6, ha="right", va="center")
    axes[2 * e + 1, 0].set_axis_on()  # keep the labels' axes drawn, without ticks
    axes[2 * e, 0].set_axis_on()
    for ax in (axes[2 * e, 0], axes[2 * e + 1, 0]):
      ax.set_xticks([])
      ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path


def sample_plans(workdir: str, artifacts: str, per_split: int) -> list[str]:
  """GIFs and a PNG strip of recorded closed-loop episodes (first level of each split)."""
  run = trained.load(workdir)
  config, state = run.config, run.state
  config.control.episodes = max(per_split, 1)
  key = rng.stream(jax.random.key(config.seed), "study-plans")
  paths, strips = [], []
  for want in ("seen", "heldout"):
    outcome = unipi.control(config, state, key, want=want, record=per_split)
    for level, result in outcome.items():
      for i, record in enumerate(result.recorded):
        tag = f"{want}-{level}-{i}"
        won = "success" if result.success[i] else "failure"
        paths.append(plan_gif(record, config.control.replan_every,
                              os.path.join(artifacts, f"unipi_plan_{tag}.gif")))
        strips.append((f"{want}/{level} ({won})", record))
  paths.append(plan_strip(strips, config.control.replan_every,
                          os.path.join(artifacts, "unipi_plans.png")))
  return paths


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/unipi_study")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--episodes", type=int, default=100,
                      help="closed-loop episodes per level and per mission split")
  parser.add_argument("--windows", type=int, default=256,
                      help="windows per split for the frame-consistency measure")
  parser.add_argument("--record", type=int, default=2, help="episodes per split shown as GIFs")
  parser.add_argument("--studies", default="control,consistency,plans")
  parser.add_argument("--smoke", action="store_true", help="smoke-size runs (seconds each)")
  args = parser.parse_args(argv)
  studies = args.studies.split(",")
  out, smoke = args.out, args.smoke
  artifacts = os.path.join(out, "artifacts")
  os.makedirs(artifacts, exist_ok=True)
  results = Results(out)
  runs = {name: train(out, name, arg, smoke, args.seed) for name, arg in RUNS.items()}
  levels = list(unipi_config.get_config("smoke" if smoke else None).control.levels)
  report = [f"machine: {os.cpu_count()} CPU cores, {jax.devices()[0].platform}; jax "
            f"{jax.__version__}; seed {args.seed}; {args.episodes} episodes per level and "
            f"split" + (" (smoke)" if smoke else "")]

  control_methods = [f"UniPi (w={w:g})" for w in GUIDANCE] + [
      "no first-frame conditioning", "no temporal hierarchy", "behaviour cloning",
      "random actions"]
  if "control" in studies:
    for w, method in zip(GUIDANCE, control_methods):
      control_rows(results, method, runs["unipi"], args.episodes, guidance=w)
    control_rows(results, control_methods[3], runs["nff"], args.episodes)
    control_rows(results, control_methods[4], runs["flat"], args.episodes)
    control_rows(results, control_methods[5], runs["bc"], args.episodes)
    control_rows(results, control_methods[6], runs["bc"], args.episodes, act=unipi.random_act)
    rows = [r for r in results.rows if r["study"] == "control"]
    order = [control_methods[i] for i in (1, 5, 6, 3, 4, 0, 2)]
    report += ["## Closed-loop success (%) on seen and held-out missions",
               control_table(rows, order, levels),
               "![success](unipi_success.png)"]
    success_plot(rows, order, os.path.join(artifacts, "unipi_success.png"))

  consistency_methods = ["first-frame conditioned (w=1)", "no first-frame conditioning",
                         "no temporal hierarchy"]
  if "consistency" in studies:
    consistency_rows(results, consistency_methods[0], runs["unipi"], args.windows)
    consistency_rows(results, consistency_methods[1], runs["nff"], args.windows)
    consistency_rows(results, consistency_methods[2], runs["flat"], args.windows)
    rows = [r for r in results.rows if r["study"] == "consistency"]
    report += ["## Frame consistency (mean |plan − first frame| on static pixels, lower is "
               "better)", consistency_table(rows, consistency_methods)]

  if "plans" in studies:
    paths = sample_plans(runs["unipi"], artifacts, args.record)
    report += ["## Sample plans (executed | planned)"] + [
        f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in paths]

  text = "\n\n".join(report)
  with open(os.path.join(artifacts, "unipi_study.md"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
