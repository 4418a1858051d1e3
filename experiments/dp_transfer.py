"""Private fine-tuning from features: public pre-training -> frozen features -> DP-LS, DP-Newton,
DP-FC and DP-SGD linear heads at several ε, against the non-private head (Mehta et al.).

Digits (a few minutes on 2 CPU cores): a CNN is pre-trained on the "public" digits 0-4; the
private task is digits 5-9 (719 training images), ε ∈ {0.1, 1, 8}, δ = n^-1.1, 3 seeds:
  python -m launch.main --config experiments/dp_transfer.py --workdir runs/dp_transfer
  -> runs/dp_transfer/artifacts/table.md and accuracy_vs_epsilon.png
Smoke (seconds):
  python -m launch.main --config experiments/dp_transfer.py:smoke --workdir /tmp/jaxml/dpt
One method at one ε, with an encoder you trained already (any classifier or supcon workdir
whose inputs match the private data):
  python -m launch.main --config experiments/dp_transfer.py --workdir runs/fc_eps1 \
      --config.public_workdir=runs/supcon --config.methods=feature_covariance \
      --config.epsilons=1.0
Full scale via TFDS (GPU/TPU; `tfds build <name> --file_format=array_record` once, which
needs `pip install 'jaxml[tf]'`): CIFAR-10 private with a ResNet-18 pre-trained on the public
CIFAR-100, and CIFAR-100 private with one pre-trained on CIFAR-10:
  python -m launch.main --config experiments/dp_transfer.py:cifar10 --workdir /shared/runs/dpt10
  python -m launch.main --config experiments/dp_transfer.py:cifar100 --workdir ...
ImageNet-1k private (224x224, `tfds:imagenet2012` needs its manual download) with a ResNet-50
pre-trained on the public Places365 (`tfds:places365_small`), or on your own public encoder
via `--config.public_workdir`:
  python -m launch.main --config experiments/dp_transfer.py:imagenet --workdir /shared/runs/dpti
Options combine, e.g. `:smoke,seed=1` (seed of the public pre-training).
"""

import ml_collections

from experiments import base, classifier
from jaxml.core.config_args import one_of, parse_arg


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, cifar10=False, cifar100=False, imagenet=False, seed=0)
  scale = one_of(opts, "smoke", "cifar10", "cifar100", "imagenet")

  c = base.study_config("dp_features", seed=opts.seed)

  # The "public" pre-training: a whole classifier config, trained in <workdir>/public.
  public = classifier.get_config(f"seed={opts.seed}" + (",smoke" if scale == "smoke" else ""))
  public.data.classes = (0, 1, 2, 3, 4)
  public.model.dense = 32  # feature dimension: private noise grows with it
  public.linear_probe.enabled = False
  public.num_steps = 600 if scale is None else public.num_steps
  c.public = public
  c.public_workdir = ""  # or: a finished jaxml run to take the encoder from (public is unused)

  c.data = ml_collections.ConfigDict({"source": "digits", "classes": (5, 6, 7, 8, 9)})
  c.features = ml_collections.ConfigDict({
      "center": "public",  # subtract the public train split's mean feature (free), or none
      "normalize": True,  # scale every row to norm `clip` (False: only clip longer rows)
      "clip": 1.0,  # feature norm bound C, which sets every method's sensitivity
      "batch_size": 512,  # for the feature-extraction passes
  })

  c.methods = ("least_squares", "newton", "feature_covariance", "sgd")
  c.epsilons = (0.1, 1.0, 8.0)
  c.seeds = (0, 1, 2)
  c.delta = 0.0  # 0: n**-1.1 for n private training examples
  c.accountant = "rdp"  # rdp | pld (dp_accounting)
  # Each *_budget is the share of the privacy budget (in 1/σ²) its statistic gets; l2_noise
  # adds a ridge proportional to the noise's spectral norm (`linear_heads.noise_ridge`).
  # Chosen once on a held-out fifth of the digits 5-9 training split (5 noise seeds; never
  # the test split), for all ε together; tuning is not accounted, as in the paper.
  c.least_squares = ml_collections.ConfigDict({"l2": 1.0, "l2_noise": 0.3, "gram_budget": 0.3})
  c.newton = ml_collections.ConfigDict(
      {"l2": 1.0, "l2_noise": 0.3, "steps": 1, "hessian_budget": 0.3})
  c.feature_covariance = ml_collections.ConfigDict(
      {"l2": 0.1, "l2_noise": 1.0, "steps": 10, "learning_rate": 2.0, "gram_budget": 0.3})
  c.sgd = ml_collections.ConfigDict({  # sampling_probability 1: full-batch, zero-init head
      "l2_clip": 1.0, "sampling_probability": 1.0, "steps": 50, "learning_rate": 5.0,
      "l2": 0.0})

  if scale == "smoke":
    c.epsilons = (1.0, 8.0)
    c.seeds = (0,)
    c.feature_covariance.steps = 3
    c.sgd.steps = 10
  elif scale in ("cifar10", "cifar100"):
    other = "cifar100" if scale == "cifar10" else "cifar10"
    public = classifier.get_config(f"cifar10,seed={opts.seed}")
    public.data.source = f"tfds:{other}"
    public.linear_probe.enabled = False
    c.public = public
    c.data = ml_collections.ConfigDict({"source": f"tfds:{scale}", "data_dir": "", "classes": ()})
    c.features.batch_size = 1000
    # Not tuned at this scale (no accelerator was available): the digits settings, with the
    # noise-scaled ridge carrying most of the regularisation.
    c.sgd.steps = 200
  elif scale == "imagenet":
    public = classifier.get_config(f"cifar10,seed={opts.seed}")
    public.data = ml_collections.ConfigDict({
        "source": "tfds:places365_small", "data_dir": "", "image_size": 224,
        "test_split": "validation", "classes": (), "prefetch": 4})
    public.model.stem = "imagenet"
    public.model.depth = 50
    public.batch_size = 1024
    public.num_steps = 160_000  # ~90 epochs of Places365's 1.8M images
    public.optimizer.warmup_steps = 5000
    public.linear_probe.enabled = False
    c.public = public
    c.data = ml_collections.ConfigDict({"source": "tfds:imagenet2012", "data_dir": "",
                                        "image_size": 224, "test_split": "validation",
                                        "classes": ()})
    c.features.batch_size = 1024
    c.sgd.steps = 200
  return c
