"""Learning under concept drift (issue 20): a classifier whose training examples are weighted
by their content and age (jaxml/algos/drift.py), on time-stamped data whose later periods are
the test split.

Methods (`method=`): offline, a `drift.weighting` over the whole training window: learned
(MUSCATEL: an instance-conditional mixture of K fixed timescales of decay, meta-learned on the
latest training period), uniform (ERM), last (the last training period only), exponential and
linear (one decay of timescale `tau`), joint (an unconstrained meta-learned w(x, age));
continual (`drift.schedule=continual`: one stage per training period, in temporal order, each
training only on its bucket of the latest `bucket_periods` periods): sequential (sequential
fine-tuning, uniform weights, one period per bucket) and continual (the method's continual
variant: learned weights inside buckets of 3 periods). E.g.
  python -m launch.main --config experiments/drift.py --workdir /tmp/jaxml/drift
  python -m launch.main --config experiments/drift.py:method=exponential,seed=1 \
      --workdir /tmp/jaxml/drift_exp --config.drift.tau=3
Smoke test (seconds):
  python -m launch.main --config experiments/drift.py:smoke --workdir /tmp/jaxml/drift_smoke
Variant options: method=, smoke, seed=.
"""

import ml_collections

from experiments import classifier
from jaxml.algos.drift import WEIGHTINGS
from jaxml.core.config_args import parse_arg
from jaxml.errors import ConfigError

# The continual methods: (weighting, bucket_periods) under drift.schedule=continual.
CONTINUAL = {"sequential": ("uniform", 1), "continual": ("learned", 3)}
METHODS = WEIGHTINGS + tuple(CONTINUAL)


def get_config(arg=None):
  opts = parse_arg(arg, method="learned", smoke=False, seed=0)
  if opts.method not in METHODS:
    raise ConfigError(f"variant option method={opts.method!r}: choose one of "
                      f"{', '.join(METHODS)}")
  weighting, bucket = CONTINUAL.get(opts.method, (opts.method, 1))
  # The classifier's blocks (model, augment, label_smoothing, a disabled dp block), an MLP.
  c = classifier.get_config(f"model=mlp,seed={opts.seed}" + (",smoke" if opts.smoke else ""))
  c.algo = "drift"
  c.linear_probe.enabled = False  # what matters is accuracy on the future periods
  # jaxml/data/sources/drifting_mixture.py's settings (its other keys take its DEFAULTS):
  # Gaussian clusters whose class boundaries rotate at per-cluster rates; `periods` in all,
  # the first `train_periods` for training, the later ones for test. The algorithm reads the
  # training periods from the data.
  c.data = ml_collections.ConfigDict({"source": "drifting_mixture", "seed": 0, "periods": 15,
                                      "train_periods": 10, "prefetch": 0, "classes": ()})
  c.model.hidden = (64, 64)
  c.augment = ml_collections.ConfigDict({"crop_pad": 0, "flip": False, "noise_std": 0.0})
  c.label_smoothing = 0.0
  c.num_steps = 2000
  c.optimizer.learning_rate = 1e-3
  c.eval_every = c.checkpoint_every = 500
  c.drift = ml_collections.ConfigDict({
      "weighting": weighting,
      # offline: every step samples the whole training window, ages count from its end;
      # continual: T stages in temporal order, stage s sampling periods
      # [s - bucket_periods + 1, s] with ages counted from s (sequential fine-tuning).
      "schedule": "continual" if opts.method in CONTINUAL else "offline",
      "bucket_periods": bucket,
      # learned: K timescales (in periods) log-spaced in [tau_min, tau_max] (K = 1: tau_min).
      "timescales": 4, "tau_min": 0.5, "tau_max": 16.0,
      "tau": 4.0,  # exponential: exp(-age/tau); linear: max(0, 1 - age/tau)
      "helper_hidden": 32,  # learned, joint: the helper MLP's hidden width
      # The helper's Adam and the look-ahead's SGD step. At meta_lr 1e-2 the helper's softmax
      # saturated within ~25 steps, while the model was still near its random init, and
      # stayed there; at inner_lr 0.1 the mean meta-gradient over 128-row batches pointed
      # every cluster to longer timescales where the full-batch one pointed to shorter ones
      # (jaxml/algos/drift.py, "Status").
      "meta_lr": 1e-3,
      "inner_lr": 0.01,
      "meta_periods": 1,  # the latest training periods forming the meta-validation set
      # learned: divide each decay kernel by its mean over the training examples' ages, so a
      # timescale moves an example's weight between ages, not its cluster's share of the
      # batch (without it the one-step meta-gradient on the timescales is a gradient on the
      # clusters' shares; see jaxml/algos/drift.py, "Status").
      "unit_mass": True,
  })
  if opts.smoke:
    c.model.hidden = (16,)
    c.drift.helper_hidden = 8
    c.data.update(periods=6, train_periods=4)
  return c
