"""Few labels on frozen features, the Allo pattern (issue 24; the post "Neural
Network-Generated Illustrations in Allo"): a digits CNN pre-trained on digits 0-4, frozen;
heads learned from 1-50 labels per class for things it was never trained on (which of the
held-out digits 5-9, and stroke thickness, slant and size computed from the pixels with rater
noise), against the same CNN trained from scratch on those labels and a logistic regression on
raw pixels; the few units that carry each attribute; and illustrations composed from the
predicted attributes (jaxml/studies/allo.py).

Default (CPU, 2 cores; 3 seeds):
  python -m launch.main --config experiments/allo_study.py --workdir runs/allo
  -> runs/allo/artifacts/allo.md, allo_labels.png, allo_units.png, illustrations_s0.png
Rerun the same command after an interruption: finished runs and rows are reused.
Smoke (about a minute: one seed, 1 and 5 labels per class, 2 draws):
  python -m launch.main --config experiments/allo_study.py:smoke --workdir /tmp/jaxml/allo
Other sizes: --config.labels_per_class="(1,5,20)" --config.draws=3
--config.pretrain.num_steps=300 (--config.pretrain.<key> for any encoder setting).
"""

import ml_collections

from experiments import base, classifier
from jaxml.core.config_args import parse_arg


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, seed=0)
  c = base.study_config("allo", seed=opts.seed)
  c.seeds = (0, 1, 2)
  c.labels_per_class = (1, 2, 5, 10, 20, 50)
  c.draws = 5  # random draws of the labelled images per n (the same for every method)
  c.l2 = 1e-2  # the frozen features' ridge (jaxml/evaluators/few_shot.py)
  # Attributes of the held-out images (jaxml/data/digit_attributes.py): classes at the
  # training images' quantiles; the few training labels get rater noise, the test labels not.
  c.attributes = ml_collections.ConfigDict({"bins": 3, "noise": 0.1})
  # The encoder: experiments/classifier.py's digits CNN on digits 0-4, evaluated and saved
  # at the end (the study reads the final weights).
  c.pretrain = classifier.get_config(f"seed={opts.seed}" + (",smoke" if opts.smoke else ""))
  c.pretrain.data.classes = (0, 1, 2, 3, 4)
  c.pretrain.num_steps = 600
  c.pretrain.eval_every = c.pretrain.checkpoint_every = c.pretrain.num_steps
  c.pretrain.linear_probe.enabled = False
  # The baseline: the encoder's CNN from scratch on the n x C labels, its first `draws`
  # draws (a jitted training loop per fit; the frozen-feature methods use every draw).
  c.scratch = ml_collections.ConfigDict({"steps": 200, "batch_size": 32,
                                         "learning_rate": 3e-3, "draws": 2})
  # Sparse unit probes at this many labels per class; the illustration's heads at this many.
  c.units = ml_collections.ConfigDict({"labels_per_class": 50})
  c.illustration = ml_collections.ConfigDict({"labels_per_class": 20, "rows": 8})
  if opts.smoke:
    c.seeds = (opts.seed,)
    c.labels_per_class = (1, 5)
    c.draws = 2
    c.pretrain.num_steps = 60
    c.pretrain.eval_every = c.pretrain.checkpoint_every = 60
    c.scratch.update(steps=20, draws=1)
    c.units.labels_per_class = 5
    c.illustration.labels_per_class = 5
  return c
