"""Speaker diarization across noise levels: UIS-RNN (jaxml's and google/uis-rnn's) against
spectral clustering and oracle-count k-means, in one resumable study (issue 22; Zhang et al.,
"Fully Supervised Speaker Diarization", ICASSP 2019; the config and its commands:
experiments/diarization_study.py).

Per noise level of `noises` and seed of `seeds`, the data are the `dvectors` source of the run
config with `data.noise` = noise and `data.seed` = seed (so each seed is its own draw of
speakers and conversations), and every method labels the same test conversations:

  uis_rnn        `config.run` (a run of experiments/uis_rnn.py) at that noise and seed, trained
                 once (`runs.run_once`) in <workdir>/runs/n<noise>_s<seed>, then decoded
                 by its `predict` (`decode_run`: the jitted beam search with the run's
                 `decode` settings; its means equal the run's own eval/accuracy, eval/der/*)
  uisrnn         google/uis-rnn (pip `uisrnn`) trained on the same training conversations with
                 the run's settings mapped onto its own (`uisrnn_settings`), decoded with the
                 same beam settings, each conversation within `uisrnn_timeout_s` (one that
                 takes longer is a timeout: reported, and left out of the means), on
                 `torch_threads` intra-op threads
  spectral       ICASSP 2018 spectral clustering, the speaker count estimated (no training)
  kmeans_oracle  k-means told the true speaker count, seeded by the row's seed (no training)

(jaxml/studies/diarization_peers.py holds the three peers.) Each row of
<workdir>/results.jsonl, keyed by (method, noise, seed), holds every test conversation's
sequence accuracy, DER (1 s segments: DER = 1 - accuracy per conversation), speaker count and
length, their means (each conversation counts once) and the duration-weighted DER
(`jaxml.evaluators.diarization.batch_metrics`), the timeouts, and the seconds spent training
and decoding. Each method's labels [N, T] (-1 on padding and on timed-out conversations) are
kept in <workdir>/predictions/<method>_n<noise>_s<seed>.npz with `decoded` [N], so every row
can be recomputed from them. A rerun reuses the rows and trains nothing.

The report (jaxml/studies/diarization_report.py): artifacts/diarization.md,
accuracy_vs_noise.png and der_vs_speakers.png.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import numbers
import os
import time

import jax
import numpy as np

from jaxml import trained
from jaxml.core import files
from jaxml.data.sources import dvectors
from jaxml.errors import ConfigError
from jaxml.evaluators import diarization as metrics
from jaxml.models import uis_rnn as uis_model
from jaxml.studies import diarization_peers as peers
from jaxml.studies import diarization_report, results, runs
from jaxml.studies.base import Study, check_choices, check_seeds

METHODS = ("uis_rnn", "uisrnn", "spectral", "kmeans_oracle")
DECODE_KEYS = ("beam_size", "look_ahead", "test_iteration", "max_speakers")
# Which rows exist or how they are shown, not what is in them.
SWEEP = ("noises", "seeds", "methods", "default_noise", "progress")
# uisrnn fixes these (its code or defaults), so the run must have them to be "the same
# settings": (run config key, the value uisrnn has, where it has it).
UISRNN_FIXED = (
    ("optimizer.name", "adam", "torch.optim.Adam"),
    ("optimizer.schedule", "constant", "no learning-rate schedule"),
    ("optimizer.warmup_steps", 0, "no warmup"),
    ("optimizer.weight_decay", 0.0, "regularisation in the loss, not the optimizer"),
    ("optimizer.clip_global_norm", 0.0, "clips the RNN's gradient only: uis_rnn.grad_max_norm"),
    ("uis_rnn.grad_max_norm", 5.0, "clip_grad_norm_(..., 5.0)"),
    ("uis_rnn.transition_bias", 0.0, "estimated from the training labels"),
    ("model.sigma2_init", 0.1, "_INITIAL_SIGMA2_VALUE"),
)


def build(config) -> Study:
  validate(config)
  headline = tuple(f"{m}/{measure}" for m in config.methods for measure in ("accuracy", "der"))
  return Study(run=functools.partial(fit, config), headline=headline,
               outputs=(results.RESULTS, "artifacts/diarization.md",
                        "artifacts/accuracy_vs_noise.png", "artifacts/der_vs_speakers.png",
                        "runs/", "predictions/"))


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _get(config, dotted: str):
  for part in dotted.split("."):
    config = config.get(part) if hasattr(config, "get") else None
  return config


def validate(config) -> None:
  run = config.run
  if run.get("algo") != "uis_rnn" or run.get("data", {}).get("source") != dvectors.NAME:
    raise ConfigError("run must be a 'uis_rnn' run config on data.source 'dvectors' "
                      "(experiments/diarization_study.py builds it from experiments/uis_rnn.py)")
  noises = list(config.noises)
  if not noises or len(set(noises)) < len(noises) or any(
      not _is_number(n) or not n > 0 for n in noises):
    raise ConfigError(f"noises={noises} must be distinct numbers > 0, at least one")
  if config.default_noise not in noises:
    raise ConfigError(f"default_noise={config.default_noise} must be one of noises={noises}")
  check_seeds(config.seeds)
  check_choices("methods", config.methods, METHODS, "methods")
  if "spectral" in config.methods and not installed("spectralcluster"):
    raise ConfigError("methods has spectral, which needs spectralcluster (pip install -e "
                      "'.[test]'); install it or drop spectral from methods")
  decode = run.get("decode")
  if decode is None or any(not isinstance(decode.get(k), int) or isinstance(decode.get(k), bool)
                           or decode.get(k) < 1 for k in DECODE_KEYS):
    raise ConfigError(f"run.decode must hold {', '.join(DECODE_KEYS)}, integers >= 1, got "
                      f"{None if decode is None else dict(decode)}")
  speakers = int(run.data.get("max_speakers", dvectors.DEFAULTS["max_speakers"]))
  if decode.max_speakers < speakers:
    raise ConfigError(f"run.decode.max_speakers={decode.max_speakers} is below "
                      f"run.data.max_speakers={speakers}: the decoder could not name every "
                      "speaker")
  timeout = config.uisrnn_timeout_s
  if not _is_number(timeout) or not timeout > 0:
    raise ConfigError(f"uisrnn_timeout_s={timeout} must be a number of seconds > 0")
  threads = config.torch_threads
  if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
    raise ConfigError(f"torch_threads={threads} must be an integer >= 1")
  if "uisrnn" in config.methods:
    for key, value, why in UISRNN_FIXED:
      if _get(run, key) != value:
        raise ConfigError(f"run.{key}={_get(run, key)!r} has no uisrnn equivalent (uisrnn: "
                          f"{value!r}, {why}); change it or drop uisrnn from methods")
    peers.uisrnn_settings(uisrnn_settings(config, 0, mean_speakers=2.0))


def installed(package: str) -> bool:
  return importlib.util.find_spec(package) is not None


def run_config(config, noise: float, seed: int):
  """The jaxml run at `noise` and `seed` (its data drawn with the same seed)."""
  return runs.configured(config.run, seed, config.progress,
                         {"data.noise": float(noise), "data.seed": int(seed)})


def conversations(config, noise: float, seed: int, split: str = "test") -> dict[str, np.ndarray]:
  """`split` of the run's data at `noise` and `seed`: the very conversations the run sees."""
  return dvectors.simulate(dvectors.settings(run_config(config, noise, seed).data), split)


def fit(config, workdir: str) -> dict:
  is_chief = jax.process_index() == 0
  log = results.ResultsLog(os.path.join(workdir, results.RESULTS),
                           results.fingerprint(config, exclude=SWEEP), write=is_chief)
  methods, notes = list(config.methods), []
  if "uisrnn" in methods and not installed("uisrnn"):
    methods.remove("uisrnn")
    notes.append("uisrnn (google/uis-rnn) is not installed (pip install uisrnn, in the bench "
                 "extra): its rows were skipped.")
    logging.warning(notes[-1])
  rows = []
  for noise in config.noises:
    for seed in config.seeds:
      test = functools.cache(lambda noise=noise, seed=seed: conversations(config, noise, seed))
      for method in methods:
        def compute(method=method, noise=noise, seed=seed, test=test):
          labels, decoded, extra = label(config, workdir, method, noise, seed, test())
          if is_chief:
            path = predictions_path(workdir, method, noise, seed)
            files.makedirs(os.path.dirname(path))
            files.write_npz(path, {"labels": labels, "decoded": decoded})
          return {**score(labels, decoded, test()), **extra}

        rows.append({"method": method, "noise": float(noise), "seed": seed,
                     **log.cached((method, float(noise), seed), compute)})
  return diarization_report.report(config, rows, notes, workdir if is_chief else None)


def predictions_path(workdir: str, method: str, noise: float, seed: int) -> str:
  return os.path.join(workdir, "predictions", f"{method}_n{float(noise):g}_s{seed}.npz")


def label(config, workdir: str, method: str, noise: float, seed: int, test: dict):
  """(labels [N, T] int32, -1 on padding; decoded [N] bool; the row's other fields: seconds of
  training and decoding, the run's workdir or uisrnn's settings) of `method` on the test
  conversations."""
  masks = test["step_mask"] > 0
  labels = np.full(test["speakers"].shape, -1, np.int32)
  decoded = np.ones(len(labels), bool)
  sequences = [x[m].astype(np.float64) for x, m in zip(test["embeddings"], masks)]
  start = time.perf_counter()
  extra = {"train_seconds": 0.0}
  if method == "uis_rnn":
    out = os.path.join(workdir, "runs", f"n{float(noise):g}_s{seed}")
    runs.run_once(run_config(config, noise, seed), out)
    extra["train_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    labels = decode_run(out)[0].astype(np.int32)
    extra["workdir"] = os.path.relpath(out, workdir)
  elif method == "uisrnn":
    train = conversations(config, noise, seed, "train")
    train_masks = train["step_mask"] > 0
    settings = uisrnn_settings(config, seed, mean_speakers=float(np.mean(train["num_speakers"])))
    with torch_threads(int(config.torch_threads)):
      model = peers.uisrnn_fit([x[m] for x, m in zip(train["embeddings"], train_masks)],
                               [s[m] for s, m in zip(train["speakers"], train_masks)], settings)
      extra["train_seconds"] = time.perf_counter() - start
      extra["uisrnn_settings"] = settings
      start = time.perf_counter()
      # The decoding process takes this process's torch threads.
      found = peers.uisrnn_predict(model, sequences, settings, float(config.uisrnn_timeout_s))
    for i, got in enumerate(found):
      decoded[i] = got is not None
      if got is not None:
        labels[i, masks[i]] = got
  else:
    for i, x in enumerate(sequences):
      labels[i, masks[i]] = (peers.spectral(x) if method == "spectral" else
                             peers.kmeans_oracle(x, int(test["num_speakers"][i]), seed))
  extra["decode_seconds"] = time.perf_counter() - start
  return labels, decoded, extra


@contextlib.contextmanager
def torch_threads(count: int):
  """torch's intra-op threads set to `count` inside, the caller's put back after."""
  import torch  # pylint: disable=import-outside-toplevel  # the bench extra, for uisrnn only
  before = torch.get_num_threads()
  torch.set_num_threads(count)
  try:
    yield
  finally:
    torch.set_num_threads(before)


def decode_run(run_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """(labels [N, T], -1 on padding; speakers [N, T]) of the trained run's test conversations,
  decoded by its algorithm's `predict` (the jitted beam search with the run's `decode`
  settings; the runner's final evaluation scored the same labels)."""
  run = trained.load(run_dir)
  labels, speakers = run.predict(run.dataset.test)
  return np.asarray(labels), np.asarray(speakers)


def uisrnn_settings(config, seed: int, *, mean_speakers: float) -> dict:
  """The run's settings in uisrnn's names (diarization_peers.SETTINGS).

  One uisrnn iteration is one training step: train_iteration = num_steps. A step here trains on
  every speaker's sub-sequence (x num_permutations) of `batch_size` conversations; a uisrnn
  iteration on `batch_size` sub-sequences drawn from the pool of all of them, so its
  batch_size = run.batch_size x num_permutations x the mean speakers per training conversation
  (the same sub-sequences per update on average). rnn_dropout 0: torch's GRU applies dropout
  between layers only, so with one layer (rnn_depth 1) it never acts, as here. crp_alpha 0
  (jaxml: estimate) is uisrnn given the same estimate from the training labels.
  """
  run = config.run
  u, decode = run.uis_rnn, run.decode
  crp_alpha = float(u.crp_alpha)
  if crp_alpha == 0:
    train = conversations(config, config.noises[0], seed, "train")
    crp_alpha = float(uis_model.estimate_crp_alpha(
        [s[m > 0] for s, m in zip(train["speakers"], train["step_mask"])]))
  return {"rnn_hidden_size": int(run.model.hidden), "rnn_depth": 1, "rnn_dropout": 0.0,
          "crp_alpha": crp_alpha, "learning_rate": float(run.optimizer.learning_rate),
          "train_iteration": int(run.num_steps),
          "batch_size": max(1, round(run.batch_size * u.num_permutations * mean_speakers)),
          "num_permutations": int(u.num_permutations),
          "sigma_alpha": float(u.sigma_alpha), "sigma_beta": float(u.sigma_beta),
          "regularization_weight": float(u.regularization_weight),
          "beam_size": int(decode.beam_size), "look_ahead": int(decode.look_ahead),
          "test_iteration": int(decode.test_iteration), "seed": int(seed)}


def score(labels: np.ndarray, decoded: np.ndarray, test: dict) -> dict:
  """Per-conversation accuracy and DER (None where not decoded), speaker counts and lengths,
  and over the decoded conversations their means and the duration-weighted DER."""
  masks = test["step_mask"] > 0
  accuracy, der = [], []
  for i, mask in enumerate(masks):
    if not decoded[i]:
      accuracy.append(None)
      der.append(None)
      continue
    accuracy.append(metrics.sequence_accuracy(labels[i, mask], test["speakers"][i, mask]))
    der.append(metrics.diarization_error_rate(labels[i, mask], test["speakers"][i, mask]))
  row = {"accuracy": accuracy, "der": der,
         "num_speakers": test["num_speakers"].astype(int).tolist(),
         "length": masks.sum(1).astype(int).tolist(),
         "conversations": len(masks), "timeouts": int((~decoded).sum())}
  if decoded.any():
    found = metrics.batch_metrics(labels[decoded], test["speakers"][decoded],
                                  mask=masks[decoded])
    row.update({"accuracy_mean": found["accuracy/mean"], "der_mean": found["der/mean"],
                "der_weighted": found["der/weighted"]})
  return row
