"""Equality of opportunity by post-processing (Hardt, Price & Srebro 2016): the paper's FICO
case study, and per-group thresholds on trained classifiers' scores against fairlearn.

Default (about a minute on 2 CPU cores: two MLPs trained, Adult and COMPAS; bootstrap 1000):
  python -m launch.main --config experiments/fairness.py --workdir runs/fairness
  -> runs/fairness/artifacts/fico_table.md, fico_roc.png, table.md and tradeoff.png
Smoke (under a minute; smoke-size classifiers, 100 bootstrap resamples):
  python -m launch.main --config experiments/fairness.py:smoke --workdir /tmp/jaxml/fairness
FICO only (no training, no fairlearn):
  python -m launch.main --config experiments/fairness.py --workdir runs/fico \
      --config.datasets="()"
fairlearn is the peer compared against: `pip install 'fairlearn>=0.15,<0.16'` (the `test` and
`bench` extras have it), or
`--config.compare_fairlearn=False`. Options combine, e.g. `:smoke,seed=1` (seed of the
classifiers, the validation/test cut and the bootstrap).
"""

import ml_collections

from experiments import base, classifier
from jaxml.core.config_args import parse_arg


def _classifier(dataset: str, *, seed: int, smoke: bool) -> ml_collections.ConfigDict:
  """The Adult MLP of experiments/classifier.py, on `dataset`."""
  c = classifier.get_config(f"adult,seed={seed}" + (",smoke" if smoke else ""))
  c.linear_probe.enabled = False  # the study reads scores, not features
  if dataset == "compas":
    # 4,320 train rows: 600 steps of 256 are ~36 epochs (Adult's 2000 are ~16 of 32,561).
    c.data = ml_collections.ConfigDict({"source": "compas", "dir": "", "drop": (),
                                        "test_fraction": 0.3, "split_seed": 0, "classes": (),
                                        "prefetch": 0})
    if not smoke:
      c.num_steps = 600
      c.eval_every = c.checkpoint_every = 300
  return c


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, seed=0)

  c = base.study_config("fairness", seed=opts.seed)

  # Rules fitted, from jaxml.fairness.CONSTRAINTS ("none": the best unconstrained per-group
  # thresholds; "group_blind": one threshold for everyone).
  c.rules = ("none", "group_blind", "equal_opportunity", "equalized_odds",
             "demographic_parity")
  # The paper's lending costs: a default loses 82, a repayment earns 18.
  c.fico = ml_collections.ConfigDict({
      "enabled": True, "fp_cost": 0.82, "fn_cost": 0.18,
      "data": ml_collections.ConfigDict({"source": "fico", "dir": ""})})

  c.datasets = ("adult", "compas")
  c.attributes = ml_collections.ConfigDict({"adult": ("sex", "race"), "compas": ("race",)})
  c.classifiers = ml_collections.ConfigDict(
      {name: _classifier(name, seed=opts.seed, smoke=opts.smoke) for name in ("adult", "compas")})
  c.fp_cost = 1.0  # costs of the classifiers' post-processing: 1 and 1 maximise accuracy
  c.fn_cost = 1.0
  c.validation_fraction = 0.5  # of the test split, to fit the thresholds on
  c.min_group_size = 20  # validation examples of each label a group needs to stand alone
  c.bootstrap = ml_collections.ConfigDict({"samples": 1000, "level": 0.95})
  c.compare_fairlearn = True  # fairlearn's ThresholdOptimizer on the same scores

  if opts.smoke:
    c.bootstrap.samples = 100
  return c
