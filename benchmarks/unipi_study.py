"""The UniPi studies on BabyAI, in one resumable command.

  python benchmarks/unipi_study.py --out runs/unipi_study [--episodes 100] [--smoke]

The studies (closed-loop success against behaviour cloning and the ablations, frame
consistency of plans, sample plan GIFs) are `jaxml/studies/unipi.py`; this only maps flags
onto its settings. OUT holds the trained runs, results.jsonl (one row per measurement, reused
by a rerun with the same settings and only then), artifacts/unipi_study.md with the tables,
and the plots and GIFs.
"""

from __future__ import annotations

import argparse

from jaxml import errors
from jaxml.studies import run_study
from jaxml.studies import unipi as unipi_study


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/unipi_study")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--episodes", type=int, default=100,
                      help="closed-loop episodes per level and per mission split")
  parser.add_argument("--windows", type=int, default=256,
                      help="windows per split for the frame-consistency measure")
  parser.add_argument("--record", type=int, default=2, help="episodes per split shown as GIFs")
  parser.add_argument("--studies", default=",".join(unipi_study.STUDIES))
  parser.add_argument("--smoke", action="store_true", help="smoke-size runs (seconds each)")
  args = parser.parse_args(argv)
  config = unipi_study.defaults()
  config.update(seed=args.seed, episodes=args.episodes, windows=args.windows,
                record=args.record, studies=tuple(args.studies.split(",")), smoke=args.smoke)
  try:
    return run_study(config, args.out)
  except errors.ConfigError as err:
    parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
  main()
