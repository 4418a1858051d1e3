"""Supervised contrastive learning (SupCon), its SimCLR and cross-entropy baselines.

Stage 1 pre-trains encoder + projection head with the contrastive loss, contrasting every
device's anchors against the whole (all-gathered) global batch; stage 2 is a linear probe on
the frozen encoder features, reported as probe/test_accuracy.

Digits (a few minutes on 2 CPU cores):
  python -m launch.main --config experiments/supcon.py --workdir runs/supcon
Smoke (seconds):
  python -m launch.main --config experiments/supcon.py:smoke --workdir /tmp/jaxml/supcon
Baselines on the same encoder, data and probe:
  python -m launch.main --config experiments/supcon.py:simclr --workdir runs/simclr
  python -m launch.main --config experiments/supcon.py:ce --workdir runs/ce
Paper recipe, ResNet-50 on TFDS CIFAR-10 / CIFAR-100 (GPU/TPU; batch 1024, lr 0.5 with
warmup and cosine, temperature 0.1, optional LARS):
  python -m launch.main --config experiments/supcon.py:cifar10 --workdir /shared/runs/sc10
  python -m launch.main --config experiments/supcon.py:cifar100,lars --workdir ...
Options combine, e.g. `:simclr,smoke,seed=2`.
"""

import ml_collections

from experiments import classifier
from jaxml.core.config_args import one_of, parse_arg


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, simclr=False, ce=False, cifar10=False, cifar100=False,
                   lars=False, seed=0)
  method = one_of(opts, "simclr", "ce") or "supcon"
  scale = one_of(opts, "smoke", "cifar10", "cifar100")

  # Everything a run shares with the classifier (runner settings, data, probe) comes from it.
  c = classifier.get_config(f"seed={opts.seed}" + (",smoke" if scale == "smoke" else ""))
  c.model = ml_collections.ConfigDict(
      {"name": "cnn", "channels": (32, 64), "dense": 128, "num_classes": 0})
  c.augment = ml_collections.ConfigDict(
      {"crop_pad": 1, "flip": False, "noise_std": 0.05, "color_jitter": 0.5, "erase_prob": 0.25})
  c.batch_size = 256
  c.num_steps = 1500
  c.optimizer.learning_rate = 2e-3
  c.linear_probe.l2 = 1e-3
  if method == "ce":  # same encoder, data, augmentations and probe; cross-entropy loss
    c.algo = "classifier"
  else:
    c.algo = "supcon"
    c.supcon = ml_collections.ConfigDict({
        "method": method,  # "supcon" (labels define positives) or "simclr" (views only)
        "num_views": 2,
        "temperature": 0.1,
        "base_temperature": 0.07,
        "contrast_mode": "all",  # or "one": only the first view is an anchor
        "form": "out",  # L_out (summation outside the log); "in" for L_in
        "projection_dim": 128,
        "projection_hidden": 0,  # 0: the encoder's feature width
    })

  if scale == "smoke":
    c.model.update(channels=(8, 16), dense=32)
    c.batch_size = 64
    c.num_steps = 60
    c.optimizer.learning_rate = 5e-3
  elif scale in ("cifar10", "cifar100"):
    c.data = ml_collections.ConfigDict(
        {"source": f"tfds:{scale}", "data_dir": "", "classes": (), "prefetch": 4})
    c.model = ml_collections.ConfigDict(
        {"name": "resnet", "depth": 50, "stem": "cifar", "norm": "batch", "num_classes": 0})
    c.augment = ml_collections.ConfigDict(
        {"crop_pad": 4, "flip": True, "noise_std": 0.0, "color_jitter": 1.0, "erase_prob": 0.0})
    c.batch_size = 1024
    c.eval_batch_size = 1000
    c.num_steps = 48_800  # ~1000 epochs of 50k images, as in the paper
    c.optimizer = ml_collections.ConfigDict({
        "name": "lars" if opts.lars else "sgd", "learning_rate": 0.5, "momentum": 0.9,
        "weight_decay": 1e-4, "warmup_steps": 490, "schedule": "cosine",
        "clip_global_norm": 0.0})
    if method != "ce":
      c.supcon.projection_hidden = 2048
    c.log_every, c.eval_every, c.checkpoint_every = 100, 5000, 2000
  c.model.activation = ""  # a spec of jaxml/models/activations.py; "": relu

  return c
