"""Early readouts against spurious features (issue 19): every method on every data set, over
seeds, with SiFeR's readout position and forgetting searched on validation.

Default (CPU, about half an hour on 2 cores: 3 data sets x 3 seeds x 6 methods, plus SiFeR's
search and JTT's first runs):
  python -m launch.main --config experiments/early_readouts_study.py \
      --workdir runs/early_readouts
  -> runs/early_readouts/artifacts/early_readouts.md, worst_group.png, saliency.png
Smoke (a minute or two: slab only, one seed, a two-point search):
  python -m launch.main --config experiments/early_readouts_study.py:smoke \
      --workdir /tmp/jaxml/early_readouts
One data set or fewer seeds: --config.datasets="('coloured_digits',)" --config.seeds="(0,)".
A run's settings: --config.runs.<data set>.<method>.<key>=..., e.g.
  --config.runs.slab.dedier.distill.beta=4.0

What the study does per data set (jaxml/studies/early_readouts.py):
  search   SiFeR on the validation split (`data.eval_split=validation`), seed `seed`: no
           forgetting, and every readout depth x forget_every x forget learning rate; the
           configuration with the best validation average accuracy is the one trained on
           every seed (the paper's protocol)
  per seed ERM (also the teacher of distill/dedier), JTT's first run (ERM for
           `jtt_first_fraction` of the steps), then SiFeR, distill, DeDiER, JTT, GroupDRO,
           and distill/DeDiER again with the JTT run as the teacher (distill_jtt,
           dedier_jtt), measured on the test split: average accuracy, and worst-group
           accuracy over the (label, shortcut) groups and over aligned/misaligned
"""

import ml_collections

from experiments import base, early_readouts
from jaxml.core.config_args import parse_arg

# The spurious-feature data sets that train on CPU in minutes (celeba and waterbirds are
# runs of experiments/early_readouts.py on an accelerator).
DATASETS = ("coloured_digits", "patched_digits", "slab")


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, seed=0)
  c = base.study_config("early_readouts", seed=opts.seed)
  c.datasets = DATASETS
  # "<distiller>_jtt": the distiller's run config taught by the JTT run instead of ERM's.
  c.methods = early_readouts.METHODS + ("distill_jtt", "dedier_jtt")
  c.seeds = (0, 1, 2)
  # Every run's config, by data set and method (experiments/early_readouts.py); the study sets
  # the seed, distill.teacher, jtt.first_run and, in the search, the sifer keys.
  c.runs = ml_collections.ConfigDict({
      data: ml_collections.ConfigDict({
          method: _run(method, data, opts.smoke) for method in early_readouts.METHODS})
      for data in DATASETS})
  # JTT's first model: ERM stopped early (Liu et al. pick T on validation; we fix it), so
  # that its training errors are the examples the shortcut misleads rather than none.
  c.jtt_first_fraction = 0.1
  # SiFeR's search, besides "no forgetting": every depth x forget_every x learning rate.
  c.search = ml_collections.ConfigDict({
      "depths": (1, 2), "forget_every": (2, 8), "learning_rates": (1e-2,)})
  # Grad-CAM maps of ERM and SiFeR (seed `seed`) on misaligned test images of this data set
  # at this trunk depth (a feature map: a CNN stage; the first stage's is 4x4 on 8x8 digits,
  # the second's 2x2); "" skips them.
  c.saliency = ml_collections.ConfigDict(
      {"dataset": "coloured_digits", "depth": 1, "examples": 8})

  if opts.smoke:
    c.datasets = ("slab",)
    c.seeds = (opts.seed,)
    c.search = ml_collections.ConfigDict(
        {"depths": (1,), "forget_every": (4,), "learning_rates": (1e-2,)})
    c.jtt_first_fraction = 0.5
    c.saliency.dataset = ""
  return c


def _run(method: str, data: str, smoke: bool) -> ml_collections.ConfigDict:
  c = early_readouts.get_config(f"method={method},data={data}" + (",smoke" if smoke else ""))
  c.data.prefetch = 0  # in-memory data: batches built inline are faster
  if not smoke:
    c.num_steps = 600  # ~70 epochs of the 1,077 training digits, 38 of slab's 2,000
  # Runs are short: evaluate and save at the end only.
  c.eval_every = c.checkpoint_every = c.num_steps
  return c
