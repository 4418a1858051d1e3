"""SupCon vs SimCLR vs cross-entropy on digits: linear-probe accuracy over seeds.

Each method trains the same encoder (experiments/supcon.py's CNN) on the same data; all are
scored by the same linear probe on frozen encoder features (probe/test_accuracy). The
cross-entropy row also reports its own classifier head's accuracy. Runs live in
OUT/<method>-seed<k> (rerunning resumes/skips finished runs); the table (markdown + json) and
a plot go to OUT/artifacts/.

  python benchmarks/supcon_compare.py --out runs/supcon_compare [--seeds 0,1,2] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics

import jax

from experiments import supcon as supcon_config
from jaxml.core import files
from jaxml.studies.runs import run_once

METHODS = {"supcon": "", "simclr": "simclr", "ce": "ce"}


def run_one(out: str, method: str, seed: int, smoke: bool) -> dict:
  workdir = os.path.join(out, f"{method}-seed{seed}")
  arg = ",".join(filter(None, [METHODS[method], f"seed={seed}", "smoke" if smoke else ""]))
  config = supcon_config.get_config(arg)
  config.progress = False
  return run_once(config, workdir)


def table(results: dict[str, list[dict]]) -> tuple[str, dict]:
  rows, stats = ["| method | linear-probe test accuracy (mean ± sd) | per seed | own head |",
                 "|---|---|---|---|"], {}
  for method, runs in results.items():
    accs = [r["probe/test_accuracy"] for r in runs]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    head = [r["eval/accuracy"] for r in runs if "eval/accuracy" in r]
    stats[method] = {"probe_mean": statistics.mean(accs), "probe_sd": sd, "probe": accs,
                     "head": head}
    rows.append(f"| {method} | {100 * statistics.mean(accs):.2f} ± {100 * sd:.2f} | "
                + ", ".join(f"{100 * a:.2f}" for a in accs) + " | "
                + (", ".join(f"{100 * a:.2f}" for a in head) if head else "—") + " |")
  return "\n".join(rows), stats


def plot(stats: dict, path: str) -> None:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(5, 3.2))
  ax = fig.subplots()
  for i, s in enumerate(stats.values()):
    ax.bar(i, 100 * s["probe_mean"], yerr=100 * s["probe_sd"], alpha=0.6, capsize=4)
    ax.scatter([i] * len(s["probe"]), [100 * a for a in s["probe"]], color="k", s=12, zorder=3)
  ax.set_xticks(range(len(stats)), list(stats))
  lows = [100 * min(s["probe"]) for s in stats.values()]
  ax.set_ylim(max(0, min(lows) - 3), 100)
  ax.set_ylabel("linear-probe test accuracy (%)")
  ax.set_title("digits: same encoder, same probe")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/supcon_compare")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--smoke", action="store_true", help="smoke-size runs (seconds each)")
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  results = {m: [run_one(args.out, m, s, args.smoke) for s in seeds] for m in METHODS}
  markdown, stats = table(results)
  artifacts = os.path.join(args.out, "artifacts")
  os.makedirs(artifacts, exist_ok=True)
  files.write_text(os.path.join(artifacts, "comparison.md"), markdown + "\n")
  files.write_json(os.path.join(artifacts, "comparison.json"), stats)
  plot(stats, os.path.join(artifacts, "comparison.png"))
  print(f"machine: {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__};"
        f" seeds {seeds}{' (smoke)' if args.smoke else ''}")
  print(markdown)
  print(f"written to {artifacts}/comparison.{{md,json,png}}")


if __name__ == "__main__":
  main()
