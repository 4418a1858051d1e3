"""Few labels on frozen features, the Allo pattern (issue 24; the config and its commands:
experiments/allo_study.py).

Per seed of `seeds`:

  encoder   `config.pretrain` (the digits CNN on digits 0-4) trained once in
            <workdir>/runs/encoder_s<seed> (`runs.run_once`), then frozen.
  tasks     on the images of digits 5-9, which the encoder never saw:
              identity                 which of the five digits (5 classes);
              thickness, slant, size   attributes computed from the pixels
                                       (jaxml/data/digit_attributes.py) in `attributes.bins`
                                       classes at the training images' quantiles.
            The few TRAINING labels of an attribute get rater noise (`attributes.noise`: a
            wrong class, uniformly); test labels are the true ones.
  methods   for n in `labels_per_class`, the same `draws` random draws of n labelled images
            per class (`few_shot.draw_shots` on the labels as given) for every method:
              frozen_ridge    closed-form ridge on the frozen features (few_shot.evaluate)
              frozen_logreg   scikit-learn's LogisticRegression on the same features
              pixels_logreg   the same on the raw pixels
              scratch_cnn     the encoder's CNN trained from scratch on the n x C labels
                              (`scratch`; its first `scratch.draws` draws only)

Rows of <workdir>/results.jsonl, keyed (part, seed):

  fewshot       `<task>/<n>/<method>`: mean test accuracy over the draws (and `..._std`).
  units         per attribute and identity, sparse unit probes (jaxml/evaluators/
                sparse_probe.py) on `units.labels_per_class` labels per class:
                `<task>/units<m>` accuracy with the m top-ranked units; `<task>/dim`.
  illustration  attributes of the test images predicted by frozen-ridge heads on
                `illustration.labels_per_class` labels per class, each picking its glyph
                component (jaxml/evaluators/illustration.py): `agreement/<attribute>`,
                `agreement/all` (identical illustrations), `agreement/pixel_iou`;
                artifacts/illustrations_s<seed>.png (input | predicted | true).

The report (jaxml/studies/allo_report.py): artifacts/allo.md, allo_labels.png,
allo_units.png.
"""

from __future__ import annotations

import functools
import numbers
import os

import jax
import ml_collections
import numpy as np

from jaxml import trained
from jaxml.core import files
from jaxml.algos import classifier
from jaxml.core import mesh as mesh_lib
from jaxml.data import digit_attributes, load_dataset
from jaxml.data.base import ArraySplit, Dataset
from jaxml.data.pipeline import train_batch
from jaxml.errors import ConfigError
from jaxml.evaluators import few_shot, illustration, linear_probe, sparse_probe
from jaxml.studies import allo_report, results, runs
from jaxml.studies.base import Study, check_seeds
from jaxml.training.evaluate import collect
from jaxml.training.steps import Steps

HELD_OUT = (5, 6, 7, 8, 9)
TASKS = ("identity", *digit_attributes.ATTRIBUTES)
METHODS = ("frozen_ridge", "frozen_logreg", "pixels_logreg", "scratch_cnn")
PARTS = ("fewshot", "units", "illustration")
# Which rows exist or how they are shown, not what is in them.
SWEEP = ("seeds", "progress")


def build(config) -> Study:
  validate(config)
  n = max(config.labels_per_class)
  headline = tuple(f"{task}/{n}/{m}" for task in ("identity", "thickness")
                   for m in ("frozen_ridge", "scratch_cnn"))
  return Study(run=functools.partial(fit, config), headline=headline,
               outputs=(results.RESULTS, "artifacts/allo.md", "artifacts/allo_labels.png",
                        "artifacts/allo_units.png", "artifacts/illustrations_s<seed>.png",
                        "runs/"))


def _count(config, key: str, least: int = 1) -> int:
  value = config
  for part in key.split("."):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value < least:
    raise ConfigError(f"{key}={value!r} must be an integer >= {least}")
  return value


def validate(config) -> None:
  run = config.pretrain
  if run.get("algo") != "classifier" or run.data.source != "digits":
    raise ConfigError("pretrain must be a 'classifier' run config on data.source 'digits' "
                      "(experiments/allo_study.py builds it from experiments/classifier.py)")
  if set(int(c) for c in run.data.classes or range(10)) & set(HELD_OUT):
    raise ConfigError(f"pretrain.data.classes={tuple(run.data.classes)} overlaps the held-out "
                      f"digits {HELD_OUT}: the encoder must not see their labels")
  check_seeds(config.seeds)
  counts = list(config.labels_per_class)
  if not counts or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in counts):
    raise ConfigError(f"labels_per_class={counts} must be integers >= 1, at least one")
  for key in ("draws", "scratch.steps", "scratch.batch_size", "scratch.draws",
              "units.labels_per_class", "illustration.labels_per_class", "illustration.rows"):
    _count(config, key)
  _count(config, "attributes.bins", 2)
  noise = config.attributes.noise
  if not isinstance(noise, numbers.Real) or isinstance(noise, bool) or not 0 <= noise < 1:
    raise ConfigError(f"attributes.noise={noise!r} must be in [0, 1)")
  for key, value in (("l2", config.l2), ("scratch.learning_rate", config.scratch.learning_rate)):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
      raise ConfigError(f"{key}={value!r} must be a number > 0")


def encoder_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, "runs", f"encoder_s{seed}")


def held_out_images() -> dict[str, dict[str, np.ndarray]]:
  """{"train"|"test": {"image", "digit"}} of digits 5-9 (digit relabelled 0-4)."""
  data = load_dataset(ml_collections.ConfigDict(
      {"source": "digits", "prefetch": 0, "classes": HELD_OUT}))
  out = {}
  for name, split in (("train", data.train), ("test", data.test)):
    arrays = split.read(np.arange(len(split)))
    out[name] = {"image": arrays["image"], "digit": arrays["label"]}
  return out


def task_labels(config, images: dict, seed: int) -> dict[str, dict[str, np.ndarray]]:
  """{task: {"train": labels as given (attributes with rater noise), "test": true labels}}."""
  bins, noise = int(config.attributes.bins), float(config.attributes.noise)
  out = {"identity": {"train": images["train"]["digit"], "test": images["test"]["digit"]}}
  for i, name in enumerate(digit_attributes.ATTRIBUTES):
    extract = digit_attributes.EXTRACTORS[name]
    train_values = extract(images["train"]["image"])
    edges = digit_attributes.bin_edges(train_values, bins)
    train = digit_attributes.to_classes(train_values, edges)
    test = digit_attributes.to_classes(extract(images["test"]["image"]), edges)
    out[name] = {"train": digit_attributes.rater_noise(train, bins, noise, seed * 10 + i),
                 "test": test, "train_true": train}
  return out


def frozen_features(workdir: str, images: dict) -> dict[str, np.ndarray]:
  """The encoder's features [N, D] of the held-out train and test images."""
  run = trained.load(workdir)
  out = {}
  for name, split in images.items():
    features, _ = run.features(ArraySplit({"image": split["image"], "label": split["digit"]}))
    out[name] = np.asarray(features, np.float32)
  return out


def logreg_accuracy(train_x, train_y, test_x, test_y) -> float:
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from sklearn.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel
  if len(np.unique(train_y)) < 2:  # rater noise can leave one class: predict it
    return float(np.mean(test_y == train_y[0]))
  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
  return float(model.fit(train_x, train_y).score(test_x, test_y))


class Scratch:
  """The encoder's CNN trained from scratch on a few labels: one jitted step per number of
  classes, reused for every fit (a fit is a fresh init and `steps` updates)."""

  def __init__(self, config):
    self.config = config
    self.mesh = mesh_lib.make_mesh(1)
    self._steps = {}

  def steps(self, num_classes: int, template: Dataset) -> Steps:
    if num_classes not in self._steps:
      config = runs.configured(self.config.pretrain, 0, False, {
          "num_steps": int(self.config.scratch.steps),
          "batch_size": int(self.config.scratch.batch_size),
          "optimizer.learning_rate": float(self.config.scratch.learning_rate),
          "optimizer.warmup_steps": 0, "data.classes": ()})
      algorithm = classifier.build(config, template)
      self._steps[num_classes] = Steps.build(algorithm, self.mesh)
    return self._steps[num_classes]

  def accuracy(self, train: dict, test: dict, num_classes: int, seed: int) -> float:
    dataset = _dataset(train, test, num_classes)
    steps = self.steps(num_classes, dataset)
    with jax.set_mesh(self.mesh):
      state = steps.init(jax.random.key(seed))
      key = jax.device_put(jax.random.key(seed + 1), mesh_lib.replicated(self.mesh))
      for step in range(int(self.config.scratch.steps)):
        batch = train_batch(dataset.train, self.mesh, seed, step,
                            int(self.config.scratch.batch_size))
        state, _ = steps.train(state, batch, key)
      probabilities, labels = collect(steps.predict, steps, state, dataset.test, self.mesh, 256)
    return float(np.mean(np.argmax(probabilities, -1) == labels))


def _dataset(train: dict, test: dict, num_classes: int) -> Dataset:
  from jaxml.data.base import image_classification  # pylint: disable=import-outside-toplevel
  return image_classification(ArraySplit(train), ArraySplit(test), (8, 8, 1), num_classes,
                              name="allo")


def fewshot_row(config, features, images, labels, seed: int, scratch: Scratch) -> dict:
  """The `fewshot` row of one seed (see the module doc)."""
  row = {}
  pixels = {k: v["image"].reshape(len(v["image"]), -1) for k, v in images.items()}
  for task in TASKS:
    train_y, test_y = labels[task]["train"], labels[task]["test"]
    num_classes = 5 if task == "identity" else int(config.attributes.bins)
    for n in config.labels_per_class:
      ridge = few_shot.evaluate(features["train"], train_y, features["test"], test_y,
                                num_classes, shots=(n,), draws=int(config.draws),
                                l2=float(config.l2), seed=seed)[n]
      draws = few_shot.draw_shots(train_y, num_classes, n, int(config.draws), seed)
      scores = {"frozen_ridge": ridge.accuracies,
                "frozen_logreg": [logreg_accuracy(features["train"][r], train_y[r],
                                                   features["test"], test_y) for r in draws],
                "pixels_logreg": [logreg_accuracy(pixels["train"][r], train_y[r],
                                                   pixels["test"], test_y) for r in draws],
                "scratch_cnn": [scratch.accuracy(
                    {"image": images["train"]["image"][r], "label": train_y[r]},
                    {"image": images["test"]["image"], "label": test_y}, num_classes,
                    seed * 1000 + d) for d, r in enumerate(draws[:int(config.scratch.draws)])]}
      for method, values in scores.items():
        row[f"{task}/{n}/{method}"] = float(np.mean(values))
        row[f"{task}/{n}/{method}_std"] = float(np.std(values))
  return row


def units_row(config, features, labels, seed: int) -> dict:
  """The `units` row: sparse unit probes of every task at `units.labels_per_class`."""
  n, row = int(config.units.labels_per_class), {}
  for task in TASKS:
    num_classes = 5 if task == "identity" else int(config.attributes.bins)
    (rows,) = few_shot.draw_shots(labels[task]["train"], num_classes, n, 1, seed)
    curve = sparse_probe.unit_curve(features["train"][rows], labels[task]["train"][rows],
                                    features["test"], labels[task]["test"], num_classes,
                                    l2=float(config.l2))
    for point in curve:
      row[f"{task}/units{point.num_units}"] = float(point.accuracy)
    row[f"{task}/dim"] = int(features["train"].shape[1])
    row[f"{task}/top_units"] = [int(u) for u in curve[min(2, len(curve) - 1)].units]
  return row


def illustration_row(config, features, images, labels, seed: int, path: str | None) -> dict:
  """The `illustration` row: predicted attributes pick the glyph components."""
  n, bins = int(config.illustration.labels_per_class), int(config.attributes.bins)
  predicted, true = {}, {}
  for name in digit_attributes.ATTRIBUTES:
    (rows,) = few_shot.draw_shots(labels[name]["train"], bins, n, 1, seed)
    head = few_shot.ridge(features["train"][rows], labels[name]["train"][rows], bins,
                          float(config.l2))
    predicted[name] = np.asarray(linear_probe.predict(head, features["test"]))
    true[name] = labels[name]["test"]
  agreement = illustration.agreement(predicted, true, bins)
  if path is not None:
    files.makedirs(os.path.dirname(path))
    rows = int(config.illustration.rows)
    illustration.sheet(images["test"]["image"][:rows],
                       illustration.illustrate({k: v[:rows] for k, v in predicted.items()}, bins),
                       illustration.illustrate({k: v[:rows] for k, v in true.items()}, bins),
                       path, rows=rows, title=f"input | predicted attributes | true (seed {seed})")
  return {f"agreement/{k}": float(v) for k, v in agreement.items()}


def encode(config, workdir: str, seed: int, images: dict) -> dict[str, np.ndarray]:
  """Trains the seed's encoder (or reuses it) and returns its frozen features."""
  encoder = encoder_dir(workdir, seed)
  runs.run_once(runs.configured(config.pretrain, seed, config.progress), encoder)
  return frozen_features(encoder, images)


def fit(config, workdir: str) -> dict:
  is_chief = jax.process_index() == 0
  log = results.ResultsLog(os.path.join(workdir, results.RESULTS),
                           results.fingerprint(config, exclude=SWEEP), write=is_chief)
  images = held_out_images()
  scratch = Scratch(config)
  rows = []
  for seed in config.seeds:
    features = functools.cache(functools.partial(encode, config, workdir, seed, images))
    labels = task_labels(config, images, seed)
    path = os.path.join(workdir, "artifacts", f"illustrations_s{seed}.png")
    for part, compute in (
        ("fewshot", lambda f=features, s=seed, l=labels: fewshot_row(
            config, f(), images, l, s, scratch)),
        ("units", lambda f=features, s=seed, l=labels: units_row(config, f(), l, s)),
        ("illustration", lambda f=features, s=seed, l=labels, p=path: illustration_row(
            config, f(), images, l, s, p if is_chief else None))):
      rows.append({"part": part, "seed": seed, **log.cached((part, seed), compute)})
  return allo_report.report(config, rows, workdir if is_chief else None)
