"""Smooth activations and reproducibility (Shamir, Lin & Coviello; issue 18): per activation,
R replicas trained side by side, their loss and their prediction difference (PD).

Default (CPU, tens of minutes: every model of experiments/classifier.py on the click-log
simulator, digits and Adult, trained as R = 3 replicas in one run each):
  python -m launch.main --config experiments/smooth_activations.py --workdir runs/smooth
  -> runs/smooth/artifacts/smooth_activations.md and pd_vs_loss.png
Smoke (about a minute; the click log only, smoke-size models, two activations, one beta):
  python -m launch.main --config experiments/smooth_activations.py:smoke \
      --workdir /tmp/jaxml/smooth
One data set, or other activations (specs of jaxml/models/activations.py):
  ... --config.datasets="('clicklog',)" --config.activations="('relu','smelu:0.5')"
Options combine, e.g. `:smoke,seed=1` (replica r of every run has seed `seed + r`).

Parts, each a table of artifacts/smooth_activations.md (rows of results.jsonl, resumable):
  activations  every activation: loss and accuracy (mean ± sd over replicas), PD (mean ± sd
               over replica pairs); replicas differ in init, data order and keys (`vary`).
  ensemble     the costly alternative: ReLU ensembles of 2, R of them (2R replicas).
  beta         SmeLU's transition width beta: where accuracy falls as it nears linear.
  shuffle      replicas with equal initialisation differing only in data order, moderately
               (within windows of `shuffle.window` examples) or fully reshuffled each epoch.
"""

import ml_collections

from experiments import base, classifier
from jaxml.core.config_args import parse_arg

DATASETS = ("clicklog", "digits", "adult")


def model_config(dataset: str, *, seed: int, smoke: bool) -> ml_collections.ConfigDict:
  """experiments/classifier.py's model of `dataset` (digits: the MLP), as every run starts."""
  arg = {"clicklog": "clicklog", "digits": "model=mlp", "adult": "adult"}[dataset]
  c = classifier.get_config(f"{arg},seed={seed}" + (",smoke" if smoke else ""))
  c.linear_probe.enabled = False  # the study reads predictions, not features
  c.data.prefetch = 0  # in-memory data: batches built inline are faster
  return c


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, seed=0)

  c = base.study_config("smooth_activations", seed=opts.seed)

  c.datasets = DATASETS
  c.models = ml_collections.ConfigDict(
      {name: model_config(name, seed=opts.seed, smoke=opts.smoke) for name in DATASETS})
  c.replicas = 3  # R >= 2 replicas per activation (PD sd over pairs needs R >= 3)
  c.vary = ""  # what differs between replicas: "" = init, data order and keys
  c.activations = ("relu", "smelu:1.0", "gsmelu:alpha=0.5,beta=1.5,left=0.1,right=1.0",
                   "gelu", "swish:1.0", "softplus:1.0")
  c.ensemble = True  # ReLU 2-ensembles (2R replicas)
  c.betas = (0.1, 0.3, 1.0, 3.0, 10.0)  # SmeLU's beta sweep; () skips it
  # Replicas with equal init and keys whose data order differs within windows of `window`
  # examples, against full reshuffles (window 0). datasets () skips it. A window should span
  # several batches: within one batch only the summation order changes (8192 is 8 of the
  # click log's batches, a sixth of its epoch).
  c.shuffle = ml_collections.ConfigDict({"datasets": ("clicklog",), "window": 8192,
                                         "activations": ("relu", "smelu:1.0")})

  if opts.smoke:  # the click log only: six smoke-size runs
    c.datasets = ("clicklog",)
    c.activations = ("relu", "smelu:1.0")
    c.betas = (3.0,)
    c.shuffle.window = 256  # 4 smoke batches
    c.shuffle.activations = ("relu",)
  return c
