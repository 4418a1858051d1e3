"""Learning under concept drift (issue 20): every method on two drift sources with a known
truth, over seeds, with the single decays' timescales tuned on the held-out last training
period, and river's online learners on the same stream.

Default (CPU, about half an hour on 2 cores: 2 data sets x 3 seeds x 8 methods, the tuning
runs and the river peer):
  python -m launch.main --config experiments/drift_study.py --workdir runs/drift
  -> runs/drift/artifacts/drift.md, drift_curves.png, drift_timescales.png
Smoke (a minute: the mixture only, one seed, five methods, a two-point tuning):
  python -m launch.main --config experiments/drift_study.py:smoke --workdir /tmp/jaxml/drift
One data set or fewer seeds: --config.datasets="('drifting_mixture',)" --config.seeds="(0,)".
A run's settings: --config.runs.<data set>.<method>.<key>=..., e.g.
  --config.runs.drifting_digits.learned.drift.meta_lr=3e-3

What the study does per data set (jaxml/studies/drift.py):
  tune     exponential and linear decay at every timescale of `tune.<method>`, seed `seed`,
           trained on periods [0, T - 1) and scored on period T - 1 (the last training
           period held out); the best timescale is the one trained on every seed
  per seed every method of `methods` (experiments/drift.py's): trained on the training
           periods, scored on each later period; river's learners (`river_learners`) streamed
           over the same periods, frozen after training and prequential
"""

import ml_collections

from experiments import base, drift
from jaxml.core.config_args import parse_arg

DATASETS = ("drifting_mixture", "drifting_digits")
METHODS = ("uniform", "last", "sequential", "exponential", "linear", "joint", "learned",
           "continual")
SMOKE_METHODS = ("uniform", "sequential", "exponential", "learned", "continual")


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, seed=0)
  c = base.study_config("drift", seed=opts.seed)
  c.datasets = DATASETS
  c.methods = SMOKE_METHODS if opts.smoke else METHODS
  c.seeds = (0, 1, 2)
  # Every run's config, by data set and method (experiments/drift.py); the study sets the
  # seed and, for exponential and linear, drift.tau (and the data periods when tuning).
  c.runs = ml_collections.ConfigDict({
      data: ml_collections.ConfigDict({
          method: _run(method, data, opts.smoke) for method in c.methods})
      for data in DATASETS})
  # The single decays' timescales (periods) tried on the held-out last training period.
  c.tune = ml_collections.ConfigDict({"exponential": (1.0, 2.0, 4.0, 8.0, 16.0),
                                      "linear": (2.0, 4.0, 8.0, 16.0)})
  # river's online learners on the same stream (jaxml/studies/drift_peers.py; pip install
  # 'river>=0.26,<0.27', in the test and bench extras).
  c.compare_river = True
  # logistic is linear: at chance on the mixture, whose clusters each have their own boundary.
  c.river_learners = ("logistic", "knn", "hoeffding_adaptive", "arf")

  if opts.smoke:
    c.datasets = ("drifting_mixture",)
    c.seeds = (opts.seed,)
    c.tune = ml_collections.ConfigDict({"exponential": (1.0, 4.0), "linear": (4.0,)})
    c.river_learners = ("knn",)
  return c


def _run(method: str, data: str, smoke: bool) -> ml_collections.ConfigDict:
  c = drift.get_config(f"method={method}" + (",smoke" if smoke else ""))
  if data == "drifting_digits":  # sklearn's digits, rotating at 0, 3, 6, 10 degrees a period
    c.data = ml_collections.ConfigDict({
        "source": "drifting_digits", "seed": 0, "periods": 15, "train_periods": 10,
        "prefetch": 0, "classes": ()})
    if smoke:
      c.data.update(periods=6, train_periods=4)
  if smoke:
    c.num_steps = 80
  # Runs are short: evaluate and save at the end only.
  c.eval_every = c.checkpoint_every = c.num_steps
  return c
