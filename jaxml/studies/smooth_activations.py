"""Smooth activations and reproducibility, in one resumable study (issue 18; the config and
its commands: experiments/smooth_activations.py).

Every run is R replicas of one classifier config trained side by side by the runner
(`replicas` block, jaxml/training/replicas.py), in <workdir>/runs/<dataset>/<run>, each
trained once (`runs.run_once`); a run's name says its activation, replica count, what the
replicas vary and the shuffle window, so parts asking for the same run share it. Each run is
measured on its data set's test split from the replicas' predicted probabilities [N, R, C]:

  loss, accuracy   per replica: the mean log loss of the label, and accuracy; mean ± sd
                   over the replicas
  pd               the paper's prediction difference, mean ± sd over replica pairs
                   (jaxml/evaluators/reproducibility.py): the relative PD of p(class 1) for
                   2 classes, the L1 PD of the class distributions for more
  l1, top1         L1 PD and top-1 disagreement, for every data set
  swap             for 2 classes: the top-`swap_k` swap rate when each block of
                   `swap_block` consecutive test examples is ranked by p(class 1) (which
                   impressions a replica would show first)

The ReLU ensemble row measures R ensembles of 2 (from 2R replicas: replicas 2k and 2k+1
averaged), the costly way to cut PD. Rows go to <workdir>/results.jsonl keyed by
(part, dataset, label) under a fingerprint of every other setting; the tables to
artifacts/smooth_activations.md and the PD-vs-loss plot to artifacts/pd_vs_loss.png
(jaxml/studies/smooth_activations_report.py).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxml import trained
from jaxml.errors import ConfigError
from jaxml.evaluators import reproducibility as pd_lib
from jaxml.models import activations as activations_lib
from jaxml.studies import results, runs, smooth_activations_report as report
from jaxml.studies.base import Study
from jaxml.studies.tables import slug
from jaxml.training import replicas as replicas_lib

DATASETS = ("clicklog", "digits", "adult")
PARTS = ("activations", "ensemble", "beta", "shuffle")
ENSEMBLE = "relu ×2 ensemble"
SWAP_BLOCK, SWAP_K = 100, 10
# The settings that say which rows exist (in a row's key), not what is in a row.
SWEEP = ("datasets", "activations", "ensemble", "betas", "shuffle.datasets",
         "shuffle.activations", "shuffle.window")


@dataclasses.dataclass(frozen=True)
class Run:
  """One replicated training run and the table row it makes."""

  part: str
  dataset: str
  label: str
  activation: str
  count: int
  vary: str
  window: int = 0

  @property
  def name(self) -> str:
    vary = slug(self.vary.replace(",", "+")) or "all"
    return f"{slug(self.activation)}_r{self.count}_{vary}_w{self.window}"


def build(config) -> Study:
  """The study of `config`, after every check that can fail on the config alone."""
  validate(config)
  headline = tuple(f"activations/{d}/{slug(a)}/pd" for d in config.datasets
                   for a in list(config.activations)[:2])
  return Study(run=functools.partial(fit, config), headline=headline,
               outputs=(results.RESULTS, "artifacts/smooth_activations.md",
                        "artifacts/pd_vs_loss.png", "runs/"))


def validate(config) -> None:
  datasets = list(config.datasets)
  if not datasets or any(d not in DATASETS for d in datasets) or len(set(datasets)) < len(datasets):
    raise ConfigError(f"datasets={datasets}: choose distinct data sets from {', '.join(DATASETS)}")
  for name in datasets:
    model = config.models.get(name)
    if model is None or model.get("algo") != "classifier" or model.data.source != name:
      raise ConfigError(f"models.{name} must be a classifier config on data.source {name!r} "
                        "(experiments/smooth_activations.py builds them)")
  count = config.replicas
  if not isinstance(count, int) or isinstance(count, bool) or count < 2:
    raise ConfigError(f"replicas={count}: a prediction-difference study needs R >= 2 "
                      "replicas per run (R >= 3 for a spread over pairs)")
  replicas_lib.parse(count, str(config.vary), 0)  # vary checked as the runner will
  specs = list(config.activations)
  if not specs or len(set(specs)) < len(specs):
    raise ConfigError(f"activations={specs} must be distinct activation specs, at least one")
  for spec in specs + list(config.shuffle.activations):
    activations_lib.parse(spec)  # one clear error naming a bad spec
  for beta in config.betas:
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
      raise ConfigError(f"betas={list(config.betas)}: SmeLU's beta must be a number > 0")
  shuffled = list(config.shuffle.datasets)
  if any(d not in datasets for d in shuffled):
    raise ConfigError(f"shuffle.datasets={shuffled} must be among datasets={datasets}")
  window = config.shuffle.window
  if shuffled and (not isinstance(window, int) or window < 1):
    raise ConfigError(f"shuffle.window={window} must be an integer >= 1 (examples)")


def plan(config) -> list[Run]:
  """Every run of the study, part by part, in the order they are trained."""
  count, vary = int(config.replicas), str(config.vary)
  # Canonical specs name the runs, so parts asking for the same model share one run.
  canonical = lambda spec: str(activations_lib.parse(spec))
  out = []
  for d in config.datasets:
    out += [Run("activations", d, a, canonical(a), count, vary) for a in config.activations]
    if config.ensemble:
      out.append(Run("ensemble", d, ENSEMBLE, "relu", 2 * count, vary))
    out += [Run("beta", d, f"β={b:g}", canonical(f"smelu:{b}"), count, vary)
            for b in config.betas]
    if d in config.shuffle.datasets:
      w = int(config.shuffle.window)
      for a in config.shuffle.activations:
        out += [Run("shuffle", d, f"{a}, window {w}", canonical(a), count, "order", w),
                Run("shuffle", d, f"{a}, full reshuffle", canonical(a), count, "order", 0)]
  return out


def run_config(config, run: Run):
  """The classifier config of `run`: the data set's model with its activation and replicas."""
  c = copy.deepcopy(config.models[run.dataset])
  c.seed = config.seed
  c.progress = config.progress
  c.model.activation = run.activation
  c.replicas.update(count=run.count, vary=run.vary, window=run.window)
  return c


def fit(config, workdir: str) -> dict:
  """Trains (or resumes) and measures every run; returns the study's summary."""
  is_chief = jax.process_index() == 0
  log = results.ResultsLog(os.path.join(workdir, results.RESULTS),
                           results.fingerprint(config, exclude=SWEEP + ("progress",)),
                           write=is_chief)
  rows = []
  for run in plan(config):
    def compute(run=run):
      out = os.path.join(workdir, "runs", run.dataset, run.name)
      runs.run_once(run_config(config, run), out)
      model = trained.load(out)
      probs, labels = model.predict(model.dataset.test)
      return {**dataclasses.asdict(run), "workdir": os.path.relpath(out, workdir),
              **measure(probs, labels, ensemble_of=2 if run.part == "ensemble" else 1)}
    rows.append(log.cached((run.part, run.dataset, run.label), compute))
  return report.report(rows, workdir if is_chief else None)


def measure(probs: np.ndarray, labels: np.ndarray, *, ensemble_of: int = 1) -> dict:
  """The row's numbers from the replicas' probabilities [N, R, C] and labels [N]; with
  `ensemble_of` = m, replicas m k .. m k + m - 1 are averaged into ensemble k first."""
  probs = np.asarray(probs, np.float64)
  n, count, classes = probs.shape
  if ensemble_of > 1:
    probs = probs.reshape(n, count // ensemble_of, ensemble_of, classes).mean(axis=2)
  members = np.moveaxis(probs, 1, 0)  # [R, N, C]
  picked = np.take_along_axis(members, labels[None, :, None].astype(np.int64), axis=2)[..., 0]
  loss = -np.log(np.clip(picked, 1e-12, 1.0)).mean(axis=1)
  accuracy = (members.argmax(-1) == labels[None]).mean(axis=1)
  row = {"members": len(members), **_spread("loss", loss), **_spread("accuracy", accuracy)}
  stacked = jnp.asarray(members, jnp.float32)
  row |= _pairs("l1", pd_lib.l1_pd, stacked) | _pairs("top1", pd_lib.top1_disagreement, stacked)
  if classes == 2:
    positive = stacked[..., 1]
    row |= _pairs("pd", pd_lib.relative_pd, positive)
    blocks = n // SWAP_BLOCK
    if blocks:
      ranked = positive[:, :blocks * SWAP_BLOCK].reshape(len(members), blocks, SWAP_BLOCK)
      row |= _pairs("swap", functools.partial(pd_lib.topk_swap_rate, k=SWAP_K), ranked)
    row["pd_kind"] = "relative"
  else:
    row |= {"pd_mean": row["l1_mean"], "pd_sd": row["l1_sd"], "pd_kind": "l1"}
  return row


def _spread(name: str, values: np.ndarray) -> dict:
  sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
  return {f"{name}_mean": float(np.mean(values)), f"{name}_sd": sd}


def _pairs(name: str, metric, stacked) -> dict:
  stats = pd_lib.over_replicas(metric, stacked)
  return {f"{name}_mean": float(stats.mean), f"{name}_sd": float(stats.std)}
