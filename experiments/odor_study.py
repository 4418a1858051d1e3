"""Odour prediction (issue 21): the graph network against the fingerprint baselines over
cross-validation folds and seeds, the odour embedding, and few-label transfer to descriptors
the network never saw (jaxml/studies/odor.py).

Default (CPU, 2 cores: about 2 hours; each of the 16 network runs ~7 min, the baselines ~3 min
per fold with their tuning):
  pip install -e '.[molecules]'
  python -m launch.main --config experiments/odor_study.py --workdir runs/odor_study
  -> runs/odor_study/artifacts/odor.md, auroc.png, per_descriptor.png/.csv,
     embedding_map.png, odor_embedding.npz, transfer.png
Rerun the same command after an interruption: finished runs and rows are reused, a run cut
short resumes from its checkpoint.
Smoke (a minute or two: one fold, two seeds of a tiny network, untuned baselines):
  python -m launch.main --config experiments/odor_study.py:smoke --workdir /tmp/jaxml/odor_study
Fewer folds or seeds: --config.folds="(0, 1)" --config.seeds="(0,)". A run's settings:
--config.run.<key>=..., e.g. --config.run.model.steps=3 --config.run.data.split=scaffold.

What it measures (per fold of `folds`, on the fold's test molecules):
  gnn        the network of experiments/odor.py at each seed
  ensemble   the mean probability of those seeds' networks
  baselines  random forest, kNN (Tanimoto) and logistic regression on Morgan count
             fingerprints (radius 2, 2,048 bits; jaxml/studies/odor_peers.py), each tuned on
             an inner 80/20 split of the fold's training molecules
and, on one fold: the odour embedding of the first seed's network (families' clustering,
the PCA map, every molecule's embedding), and few-label transfer: a network trained without
`transfer.held_out` descriptors, whose embedding and the fingerprints each get logistic probes
from 10-100 labelled molecules of those descriptors.
"""

import ml_collections

from experiments import base, odor
from jaxml.core.config_args import parse_arg


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, seed=0)
  c = base.study_config("odor", seed=opts.seed)
  c.folds = (0, 1, 2, 3, 4)
  c.seeds = (0, 1, 2)
  c.baselines = ("random_forest", "knn", "logistic")
  # Each baseline's setting chosen per fold by macro AUROC on an inner validation split
  # (odor_peers.GRIDS); off: odor_peers.DEFAULTS.
  c.tune_baselines = True
  # The network run of every fold and seed (the study sets data.fold and the seed).
  c.run = _run(opts.smoke)
  c.fingerprint = ml_collections.ConfigDict({"radius": 2, "bits": 2048})
  # The embedding analysis: the first seed's network of this fold; families
  # (odor_embedding.FAMILIES) scored by their share of each molecule's nearest neighbours,
  # against `permutations` shufflings of membership.
  c.embedding = ml_collections.ConfigDict({"fold": 0, "neighbours": 15, "permutations": 20})
  # Few-label transfer on this fold: `held_out` descriptors (a seeded uniform draw among those
  # with >= 50 positives) left out of one network's training; probes on `sizes` labelled
  # training molecules, `repeats` draws each, ridge `l2` (odor_embedding.few_label_transfer).
  c.transfer = ml_collections.ConfigDict({
      "fold": 0, "held_out": 10, "selection_seed": 0, "sizes": (10, 20, 50, 100),
      "repeats": 5, "l2": 0.1})

  if opts.smoke:
    c.folds = (0,)
    c.seeds = (opts.seed, opts.seed + 1)
    c.baselines = ("knn", "logistic")
    c.tune_baselines = False
    c.embedding.permutations = 2
    c.transfer.update(held_out=3, sizes=(10,), repeats=1)
  return c


def _run(smoke: bool) -> ml_collections.ConfigDict:
  c = odor.get_config("smoke" if smoke else None)
  # Evaluated once, at the end (the study reads the final numbers); checkpoints as the run
  # config has them, so an interrupted study resumes mid-run.
  c.eval_every = c.num_steps
  return c
