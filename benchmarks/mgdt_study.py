"""The Multi-Game Decision Transformer studies on MinAtar, in one resumable command.

  python benchmarks/mgdt_study.py --out runs/mgdt_study [--seeds 0,1,2] [--smoke]

The studies (return conditioning over seeds, specialists, fine-tuning to a held-out game,
model sizes, attention maps) are `jaxml/studies/mgdt.py`; this only maps flags onto its
settings. OUT holds the trained runs, results.jsonl (one row per play, reused by a rerun with
the same settings and only then), artifacts/mgdt_study.md with the tables, and the plots.
"""

from __future__ import annotations

import argparse

from jaxml import errors
from jaxml.studies import mgdt as mgdt_study
from jaxml.studies import run_study


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/mgdt_study")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--envs", type=int, default=16, help="environments per game per play")
  parser.add_argument("--steps", type=int, default=0, help="play steps (0: the config's)")
  parser.add_argument("--best_of", type=int, default=16)
  parser.add_argument("--kappa_scale", default="game", choices=("game", "global"))
  parser.add_argument("--target_return", type=float, default=20.0)
  parser.add_argument("--studies", default=",".join(mgdt_study.STUDIES))
  parser.add_argument("--smoke", action="store_true", help="smoke-size runs (seconds each)")
  args = parser.parse_args(argv)
  config = mgdt_study.defaults()
  config.update(seeds=tuple(int(s) for s in args.seeds.split(",")), envs=args.envs,
                steps=args.steps, best_of=args.best_of, kappa_scale=args.kappa_scale,
                target_return=args.target_return, studies=tuple(args.studies.split(",")),
                smoke=args.smoke)
  try:
    return run_study(config, args.out)
  except errors.ConfigError as err:
    parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
  main()
