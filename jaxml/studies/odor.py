"""Odour prediction from molecular graphs against the fingerprint baselines, in one resumable
study (issue 21; Sanchez-Lengeling et al. 2019, "Machine Learning for Scent"; the config and
its commands: experiments/odor_study.py).

Cross-validation over `folds` of the run config's split (data.folds, iterative-stratified by
default). Every run is `config.run` (a run of experiments/odor.py) at `data.fold` = fold,
trained once (`runs.run_once`) in <workdir>/runs/<name>:

  gnn_f<fold>_s<seed>    the graph network at each seed: its own final evaluation on the
                         fold's test molecules is the `gnn` row
  transfer_f<fold>_s<seed>
                         (`transfer.fold`, the first seed) the same network trained without
                         the `transfer.held_out` descriptors drawn by
                         `odor_embedding.held_out_descriptors` (data.drop_labels)

Rows of <workdir>/results.jsonl:

  ("gnn", fold, seed)       macro/micro AUROC and AUPRC, each descriptor's AUROC, seconds
  ("ensemble", fold)        the same for the mean probability of the fold's seeds (their test
                            predictions are kept in <workdir>/predictions/)
  (baseline, fold)          each of `baselines` (jaxml/studies/odor_peers.py) on the Morgan
                            count fingerprints of the very same molecules and split, its
                            setting chosen by `odor_peers.tune` on an inner validation split
                            of the fold's training molecules (`tune_baselines`), with the
                            seconds of the tuning and of the final fit
  ("embedding",)            whether descriptor families cluster (`family_separation`) in the
                            odour embedding of `embedding.fold`'s first-seed run and in the
                            fingerprints; the embedding of every molecule is written to
                            artifacts/odor_embedding.npz (SMILES, fold, split, [N, D])
  ("transfer", share, representation)
                            few-label transfer: logistic probes for the held-out descriptors on
                            n labelled training molecules, on the transfer run's embedding and
                            on the fingerprints, at the descriptors' own prevalence ("natural")
                            and balanced (half positive)

The report (jaxml/studies/odor_report.py) is artifacts/odor.md with artifacts/auroc.png,
per_descriptor.png, embedding_map.png and transfer.png, and per_descriptor.csv.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import jax
import numpy as np

from jaxml import trained
from jaxml.core import files
from jaxml.data import molecules
from jaxml.data.sources import odor as odor_source
from jaxml.errors import ConfigError
from jaxml.evaluators import odor_embedding, ranking
from jaxml.studies import odor_peers, odor_report, results, runs
from jaxml.studies.base import Study, check_choices, check_seeds

# The numbers of a method's row, from ranking.multilabel_summary.
MEASURES = ("auroc/macro", "auprc/macro", "auroc/micro", "auprc/micro")
SHARES = {"natural": None, "balanced": 0.5}  # transfer samples' positive share
# Which rows exist, not what is in them.
SWEEP = ("folds", "seeds", "baselines", "progress")


@dataclasses.dataclass(frozen=True)
class Fold:
  """One fold's molecules: the table (every molecule the run keeps, in row order), its train
  and test rows, and their Morgan count fingerprints [N, bits]."""
  table: odor_source.MoleculeTable
  train: np.ndarray
  test: np.ndarray
  fingerprints: np.ndarray


def build(config) -> Study:
  validate(config)
  headline = ("gnn/auroc/macro", "ensemble/auroc/macro",
              *(f"{b}/auroc/macro" for b in config.baselines))
  return Study(run=functools.partial(fit, config), headline=headline,
               outputs=(results.RESULTS, "artifacts/odor.md", "artifacts/auroc.png",
                        "artifacts/per_descriptor.png", "artifacts/per_descriptor.csv",
                        "artifacts/odor_embedding.npz", "artifacts/embedding_map.png",
                        "artifacts/transfer.png", "runs/", "predictions/"))


def _positive_ints(key: str, values, least: int = 1) -> list[int]:
  values = list(values)
  if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < least
                       for v in values):
    raise ConfigError(f"{key}={values} must be integers >= {least}, at least one")
  return values


def validate(config) -> None:
  run = config.run
  if run.get("algo") != "odor" or not str(run.data.source).startswith("odor"):
    raise ConfigError("run must be an 'odor' run config on an odor data source "
                      "(experiments/odor_study.py builds it from experiments/odor.py)")
  folds = list(config.folds)
  count = int(run.data.get("folds", odor_source.DEFAULTS["folds"]))
  if not folds or len(set(folds)) < len(folds) or any(
      not isinstance(f, int) or isinstance(f, bool) or not 0 <= f < count for f in folds):
    raise ConfigError(f"folds={folds} must be distinct fold numbers in 0..{count - 1} "
                      f"(run.data.folds={count})")
  check_seeds(config.seeds)
  if config.baselines:
    check_choices("baselines", config.baselines, odor_peers.BASELINES, "baselines")
  if run.data.get("drop_labels"):
    raise ConfigError("run.data.drop_labels must be empty: the study compares every "
                      "descriptor (transfer.held_out drops them for the transfer run only)")
  for part in ("embedding", "transfer"):
    if config[part].fold not in folds:
      raise ConfigError(f"{part}.fold={config[part].fold} must be one of folds={folds}")
  t = config.transfer
  _positive_ints("transfer.sizes", t.sizes, least=2)
  _positive_ints("transfer.held_out", [t.held_out])
  _positive_ints("transfer.repeats", [t.repeats])
  if not isinstance(t.l2, (int, float)) or not t.l2 > 0:
    raise ConfigError(f"transfer.l2={t.l2} must be a number > 0")
  _positive_ints("embedding.neighbours", [config.embedding.neighbours])
  _positive_ints("embedding.permutations", [config.embedding.permutations])
  _positive_ints("fingerprint.radius", [config.fingerprint.radius])
  _positive_ints("fingerprint.bits", [config.fingerprint.bits])


def run_config(config, fold: int, seed: int, **changes):
  return runs.configured(config.run, seed, config.progress, {"data.fold": fold, **changes})


@functools.cache
def _fingerprints(smiles: tuple[str, ...], radius: int, bits: int) -> np.ndarray:
  return molecules.morgan_counts(smiles, radius=radius, bits=bits)


def load_fold(config, fold: int) -> Fold:
  table, train, test = odor_source.molecule_table(run_config(config, fold, config.seed).data)
  return Fold(table, train, test, _fingerprints(table.smiles, int(config.fingerprint.radius),
                                                int(config.fingerprint.bits)))


def scores_row(scores: np.ndarray, labels: np.ndarray) -> dict:
  """A method's numbers on one fold's test molecules: MEASURES and each label's AUROC."""
  summary = ranking.multilabel_summary(scores, labels)
  return {**{name: summary[name] for name in MEASURES},
          "label_auroc": [row["auroc"] for row in ranking.per_label(scores, labels)]}


def fit(config, workdir: str) -> dict:
  is_chief = jax.process_index() == 0
  log = results.ResultsLog(os.path.join(workdir, results.RESULTS),
                           results.fingerprint(config, exclude=SWEEP), write=is_chief)
  rows = []
  for fold_number in config.folds:
    fold = load_fold(config, fold_number)
    labels = fold.table.labels[fold.test]
    for seed in config.seeds:
      rows.append({"method": "gnn", "fold": fold_number, "seed": seed, **log.cached(
          ("gnn", fold_number, seed),
          functools.partial(gnn_row, config, workdir, fold_number, seed, labels))})

    def ensemble(fold_number=fold_number, labels=labels):
      mean = np.mean([test_predictions(config, workdir, fold_number, seed)
                      for seed in config.seeds], axis=0)
      return {**scores_row(mean, labels), "members": len(config.seeds)}

    rows.append({"method": "ensemble", "fold": fold_number,
                 **log.cached(("ensemble", fold_number), ensemble)})
    for name in config.baselines:
      rows.append({"method": name, "fold": fold_number, **log.cached(
          (name, fold_number),
          lambda name=name, fold=fold: baseline_row(config, name, fold))})
  embedding = log.cached(("embedding",), lambda: embedding_row(config, workdir, is_chief))
  transfer = {(share, r): log.cached(("transfer", share, r), compute)
              for (share, r), compute in transfer_rows(config, workdir, log).items()}
  table = load_fold(config, config.folds[0]).table
  return odor_report.report(config, rows, embedding, transfer, table,
                            workdir if is_chief else None)


def gnn_row(config, workdir: str, fold: int, seed: int, labels: np.ndarray) -> dict:
  """The run's test numbers, from its predictions (equal to its own final evaluation)."""
  start = time.perf_counter()
  out = os.path.join(workdir, "runs", f"gnn_f{fold}_s{seed}")
  runs.run_once(run_config(config, fold, seed), out)
  seconds = time.perf_counter() - start
  row = scores_row(test_predictions(config, workdir, fold, seed), labels)
  return {**row, "seconds": seconds, "workdir": os.path.relpath(out, workdir)}


def test_predictions(config, workdir: str, fold: int, seed: int) -> np.ndarray:
  """[N_test, L] probabilities of run gnn_f<fold>_s<seed> on its test molecules, kept in
  <workdir>/predictions/ (an ensemble rerun reads them instead of opening the runs)."""
  path = os.path.join(workdir, "predictions", f"gnn_f{fold}_s{seed}.npz")
  try:
    with np.load(path) as saved:
      return saved["probabilities"]
  except FileNotFoundError:
    pass
  out = os.path.join(workdir, "runs", f"gnn_f{fold}_s{seed}")
  runs.run_once(run_config(config, fold, seed), out)
  run = trained.load(out)
  probabilities = np.asarray(run.predict(run.dataset.test)[0], np.float32)
  if jax.process_index() == 0:
    files.makedirs(os.path.dirname(path))
    files.write_npz(path, {"probabilities": probabilities})
  return probabilities


def baseline_row(config, name: str, fold: Fold) -> dict:
  x, y = fold.fingerprints, fold.table.labels
  start = time.perf_counter()
  setting = (odor_peers.tune(name, x[fold.train], y[fold.train], config.seed)
             if config.tune_baselines else {})
  tuned = time.perf_counter()
  scores = odor_peers.fit_predict(name, x[fold.train], y[fold.train], x[fold.test],
                                  config.seed, **setting)
  done = time.perf_counter()
  return {**scores_row(scores, y[fold.test]), "setting": setting,
          "tune_seconds": tuned - start, "fit_seconds": done - tuned}


def _embeddings(run_dir: str, fold: Fold) -> np.ndarray:
  """[N, D] odour embedding of every molecule of the table, in row order."""
  run = trained.load(run_dir)
  out = None
  for split, rows in ((run.dataset.train, fold.train), (run.dataset.test, fold.test)):
    features = np.asarray(run.features(split)[0], np.float32)
    out = np.zeros((len(fold.table.smiles), features.shape[1]), np.float32) if out is None \
        else out
    out[rows] = features
  return out


def embedding_row(config, workdir: str, is_chief: bool) -> dict:
  e = config.embedding
  fold = load_fold(config, e.fold)
  seed = config.seeds[0]
  run_dir = os.path.join(workdir, "runs", f"gnn_f{e.fold}_s{seed}")
  runs.run_once(run_config(config, e.fold, seed), run_dir)
  embedding = _embeddings(run_dir, fold)
  names = list(odor_embedding.FAMILIES)
  family = odor_embedding.family_labels(fold.table.labels, fold.table.descriptors)
  coords = odor_embedding.project_2d(embedding)
  if is_chief:
    artifacts = os.path.join(workdir, "artifacts")
    files.makedirs(artifacts)
    split = np.zeros(len(embedding), np.int8)
    split[fold.test] = 1
    files.write_npz(os.path.join(artifacts, "odor_embedding.npz"), {
        "smiles": np.asarray(fold.table.smiles), "embedding": embedding,
        "test": split, "fold": np.asarray(e.fold), "map_2d": coords.astype(np.float32)})
    odor_embedding.plot_map(coords, family, names, os.path.join(artifacts, "embedding_map.png"),
                            title=f"odour embedding (fold {e.fold} run, seed {seed}), PCA")
  kwargs = {"k": int(e.neighbours), "permutations": int(e.permutations), "seed": config.seed}
  fingerprints = np.log1p(fold.fingerprints.astype(np.float64))
  return {"run": os.path.relpath(run_dir, workdir), "families": names,
          "embedding": odor_embedding.family_separation(embedding, family, names, **kwargs),
          "map_2d": odor_embedding.family_separation(coords, family, names, **kwargs),
          "fingerprints": odor_embedding.family_separation(fingerprints, family, names,
                                                          **kwargs)}


def held_out(config, table) -> tuple[str, ...]:
  return odor_embedding.held_out_descriptors(table.labels, table.descriptors,
                                             int(config.transfer.held_out),
                                             seed=int(config.transfer.selection_seed))


def transfer_rows(config, workdir: str, log) -> dict:
  """{(share, representation): compute} for every transfer row; the computes share one
  trained transfer run and its embedding, made at most once and only if a row is missing."""
  t = config.transfer
  fold = load_fold(config, t.fold)
  names = held_out(config, fold.table)
  columns = [fold.table.descriptors.index(name) for name in names]
  labels = fold.table.labels[:, columns]

  @functools.cache
  def embedding():
    seed = config.seeds[0]
    run_dir = os.path.join(workdir, "runs", f"transfer_f{t.fold}_s{seed}")
    runs.run_once(run_config(config, t.fold, seed, **{"data.drop_labels": names}), run_dir)
    return _embeddings(run_dir, fold)

  representations = {"embedding": (embedding, "standardize"),
                     "fingerprint": (lambda: fold.fingerprints, "log1p")}

  def compute(share, representation):
    features, transform = representations[representation]
    x = features()
    out = odor_embedding.few_label_transfer(
        x[fold.train], labels[fold.train], x[fold.test], labels[fold.test],
        sizes=tuple(t.sizes), repeats=int(t.repeats), seed=int(config.seed), l2=float(t.l2),
        transform=transform, positive_share=SHARES[share], descriptors=names,
        representation=representation)
    return {"rows": out, "descriptors": list(names)}

  return {(share, r): functools.partial(compute, share, r)
          for share in SHARES for r in representations}
