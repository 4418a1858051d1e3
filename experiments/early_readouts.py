"""Early readouts against spurious features (issue 19): one config per (method, data set).

Methods, all on the same model and data (the classifier's `spurious=<data>` variant):
  erm        plain cross-entropy (jaxml/algos/classifier.py)
  sifer      the feature sieve: train steps, and every `sifer.forget_every` steps a forget step
             that trains only the layers below the readout to make it uniform
             (jaxml/algos/sifer.py); forget_every 0 is plain ERM with a readout
  distill    Hinton distillation from a trained teacher run (`distill.teacher`, a workdir)
             into a smaller student (jaxml/algos/distill.py)
  dedier     distillation whose per-example KL weight rises on examples the student's early
             readout gets confidently wrong (`distill.beta` > 0; beta 0 is `distill`)
  jtt        Just Train Twice: retrain with the first run's (`jtt.first_run`) training errors
             upsampled `jtt.upweight` times (jaxml/algos/jtt.py)
  group_dro  GroupDRO, the oracle: it reads the group field in training (jaxml/algos/group_dro.py)

Data: coloured_digits (default), patched_digits, slab; celeba and waterbirds (ResNet-18, for
accelerators; see experiments/classifier.py). E.g.
  python -m launch.main --config experiments/early_readouts.py:method=sifer \
      --workdir /tmp/jaxml/sifer [--config.sifer.forget_every=4 --config.model.readout.depth=1]
  python -m launch.main --config experiments/classifier.py:spurious=coloured_digits \
      --workdir /tmp/jaxml/teacher
  python -m launch.main --config experiments/early_readouts.py:method=dedier \
      --workdir /tmp/jaxml/dedier --config.distill.teacher=/tmp/jaxml/teacher
The study that runs every method on every data set is experiments/early_readouts_study.py.
Variant options: method=, data=, smoke, seed=.
"""

import ml_collections

from experiments import classifier
from jaxml.core.config_args import parse_arg
from jaxml.errors import ConfigError

METHODS = ("erm", "sifer", "distill", "dedier", "jtt", "group_dro")
ALGOS = {"erm": "classifier", "sifer": "sifer", "distill": "distill", "dedier": "distill",
         "jtt": "jtt", "group_dro": "group_dro"}


def get_config(arg=None):
  opts = parse_arg(arg, method="erm", data="coloured_digits", smoke=False, seed=0)
  if opts.method not in METHODS:
    raise ConfigError(f"variant option method={opts.method!r}: choose one of "
                      f"{', '.join(METHODS)}")
  if opts.data not in classifier.SPURIOUS:
    raise ConfigError(f"variant option data={opts.data!r}: choose one of "
                      f"{', '.join(classifier.SPURIOUS)}")
  c = classifier.get_config(
      f"spurious={opts.data},seed={opts.seed}" + (",smoke" if opts.smoke else ""))
  c.algo = ALGOS[opts.method]
  c.linear_probe.enabled = False  # the study reads group accuracies, not probes
  # Declared for every method so --config.model.readout.depth=k parses; depth 0: none.
  c.model.readout = ml_collections.ConfigDict({"depth": 0, "hidden": 0})
  readout_depth = 1  # after the first CNN stage / the first MLP hidden layer

  if opts.method == "sifer":
    c.model.readout.depth = readout_depth
    # Every `forget_every` train steps, one forget step: SGD with `learning_rate` on the
    # layers below the readout, towards a uniform readout. 0: never (ERM with a readout).
    c.sifer = ml_collections.ConfigDict({"forget_every": 4, "learning_rate": 1e-2})
  elif opts.method in ("distill", "dedier"):
    # loss = alpha * CE(labels) + (1 - alpha) * T^2 * mean_i(w_i * KL(teacher_T || student_T)),
    # w_i = exp(beta * margin_i) where the student's readout is wrong (margin: its top
    # probability minus the label's), else 1. teacher: a classifier run's workdir on the
    # same data ("" is refused: a student needs its teacher).
    c.distill = ml_collections.ConfigDict({
        "teacher": "", "alpha": 0.5, "temperature": 4.0,
        "beta": 2.0 if opts.method == "dedier" else 0.0})
    if opts.method == "dedier":
      c.model.readout.depth = readout_depth
    _smaller_student(c.model)
  elif opts.method == "jtt":
    # first_run: the ERM run whose training errors are upsampled (its workdir).
    c.jtt = ml_collections.ConfigDict({"first_run": "", "upweight": 20})
  elif opts.method == "group_dro":
    # group: the Task.groups field whose groups' worst loss is minimised; step_size: the
    # exponentiated-gradient step of the group weights (Sagawa et al. 2020).
    c.group_dro = ml_collections.ConfigDict({"group": "group", "step_size": 0.01})
  return c


def _smaller_student(model: ml_collections.ConfigDict) -> None:
  """The student: the teacher's architecture at a quarter of the width."""
  if model.name == "cnn":
    model.channels = tuple(max(4, w // 4) for w in model.channels)
    model.dense = max(8, model.dense // 4)
  elif model.name == "resnet":  # celeba, waterbirds
    model.width = max(4, model.get("width", 64) // 4)
  else:
    model.hidden = tuple(max(8, w // 4) for w in model.hidden)
