"""The peers outside jaxml for speaker diarization of d-vector sequences (Zhang et al., "Fully
Supervised Speaker Diarization", 2019, compared UIS-RNN with these clusterers), run on the same
conversations and scored by the same `jaxml.evaluators.diarization`.

A conversation is a float array [T, D] of speaker embeddings (d-vectors, unit length) with one
int speaker label per segment. Every peer returns int labels [T] numbered by first appearance
(0, then the next new speaker 1, ...), the convention of the data, so that outputs compare
directly; the numbers mean nothing beyond that (the metrics map them).

  spectral        offline spectral clustering as in Wang et al., "Speaker Diarization with
                  LSTM" (ICASSP 2018), by `spectralcluster.SpectralClusterer`: the cosine
                  affinity refined by crop diagonal, Gaussian blur (sigma 1), row-wise
                  threshold (soft, at 0.95 of the row maximum, others x 0.01), symmetrize
                  (max), diffuse and row-wise normalise; the speaker count by the largest
                  eigen-gap ratio; k-means on the spectral embeddings with cosine distance.
                  The package's own `configs.icassp2018_clusterer` settings, min_clusters 2 and
                  max_clusters 7 included: the conversations here hold 2-6 speakers, so 2 keeps
                  out the package's single-speaker test (a GMM-BIC heuristic, not the paper's)
                  and 7 lets the eigen-gap reach 6 with one to spare.
  kmeans_oracle   k-means told the true number of speakers, on L2-normalised embeddings (so
                  Euclidean distance orders pairs as cosine distance does), scikit-learn
                  KMeans with 10 restarts: the clustering upper bound that knows the count.
  uisrnn          the authors' UIS-RNN (pip `uisrnn`, google/uis-rnn) through `uisrnn_fit` and
                  `uisrnn_predict`, with our settings names (SETTINGS) mapped onto its three
                  argparse namespaces. Its beam-search decoder is slow (every step scores
                  every beam x (speakers + 1)^look_ahead continuations, each an RNN call) and
                  can run for very long; `timeout_s` bounds each conversation's decoding.

The timeout: with `timeout_s` set, decoding runs in one child process, a fresh Python
interpreter (`subprocess`, running `_serve`) fed one conversation at a time through its stdin;
the parent waits `timeout_s` for each answer, and on a timeout kills the child, reports that
conversation as None and starts a fresh child for the rest. Not a thread: it could not be
stopped and would keep a core busy. Not fork: it would copy the parent's JAX and OpenMP thread
pools, which can deadlock the child. Not multiprocessing's spawn: it re-runs the caller's
`__main__` script in the child, so an unguarded script would run twice and then fail. Starting
a child costs an import of torch (about 4 s here), which is not counted in `timeout_s`.

UIS-RNN draws from Python's `random` (shuffling, ids), NumPy's global generator (permutations,
minibatches) and torch's; `uisrnn_fit` seeds all three from `seed` and puts the caller's states
back afterwards. Decoding draws nothing.
"""

from __future__ import annotations

import argparse
import contextlib
from multiprocessing import connection
import os
import pickle
import random
import subprocess
import sys
from unittest import mock

import numpy as np

from jaxml.errors import ConfigError

SPECTRAL_CLUSTERS = (2, 7)  # (min_clusters, max_clusters): see the module docstring
# Our names for UIS-RNN's settings, with its own defaults (uisrnn/arguments.py), except
# observation_dim: None takes D from the training data.
SETTINGS = {
    "observation_dim": None, "rnn_hidden_size": 512, "rnn_depth": 1, "rnn_dropout": 0.2,
    "crp_alpha": 1.0,                                                  # the model's
    "learning_rate": 1e-3, "train_iteration": 20000, "batch_size": 10,
    "num_permutations": 10, "sigma_alpha": 1.0, "sigma_beta": 1.0,
    "regularization_weight": 1e-5,                                     # training's
    "beam_size": 10, "look_ahead": 1, "test_iteration": 2,             # decoding's
    "seed": 0,
}
_MODEL_KEYS = ("observation_dim", "rnn_hidden_size", "rnn_depth", "rnn_dropout", "crp_alpha")
_TRAINING_KEYS = ("learning_rate", "train_iteration", "batch_size", "num_permutations",
                  "sigma_alpha", "sigma_beta", "regularization_weight")
_INFERENCE_KEYS = ("beam_size", "look_ahead", "test_iteration")
_WORKER_START_LIMIT_S = 300.0  # importing torch on a loaded machine; a worker never up is a bug


def _sequence(x, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2 or not len(x) or not x.shape[1]:
    raise ConfigError(f"{what} must be a non-empty [T, D] array of embeddings, got shape "
                      f"{x.shape}")
  if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
    raise ConfigError(f"{what} must hold finite numbers")
  return x.astype(np.float64)


def _sequences(xs, what: str) -> list[np.ndarray]:
  if isinstance(xs, np.ndarray) or not len(xs):
    raise ConfigError(f"{what} must be a non-empty list of [T, D] arrays")
  out = [_sequence(x, f"{what}[{i}]") for i, x in enumerate(xs)]
  dims = sorted({x.shape[1] for x in out})
  if len(dims) > 1:
    raise ConfigError(f"{what} mix embedding sizes {dims}")
  return out


def by_first_appearance(labels) -> np.ndarray:
  """int64 labels renamed 0, 1, ... in the order the speakers first appear."""
  labels = np.asarray(labels)
  _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
  rank = np.empty(len(first), np.int64)
  rank[np.argsort(first)] = np.arange(len(first))
  return rank[inverse.reshape(-1)]


def spectral_clusterer(min_clusters: int = SPECTRAL_CLUSTERS[0],
                       max_clusters: int = SPECTRAL_CLUSTERS[1]):
  """A SpectralClusterer with the ICASSP 2018 refinement (see the module docstring)."""
  # pylint: disable=import-outside-toplevel  # a test/bench dependency, not the core's
  from spectralcluster import refinement, spectral_clusterer as clusterer
  if not 1 <= int(min_clusters) <= int(max_clusters):
    raise ConfigError(f"need 1 <= min_clusters <= max_clusters, got {min_clusters} and "
                      f"{max_clusters}")
  names = refinement.RefinementName
  options = refinement.RefinementOptions(
      gaussian_blur_sigma=1, p_percentile=0.95, thresholding_soft_multiplier=0.01,
      thresholding_type=refinement.ThresholdType.RowMax,
      refinement_sequence=[names.CropDiagonal, names.GaussianBlur, names.RowWiseThreshold,
                           names.Symmetrize, names.Diffuse, names.RowWiseNormalize])
  return clusterer.SpectralClusterer(
      min_clusters=int(min_clusters), max_clusters=int(max_clusters), autotune=None,
      laplacian_type=None, refinement_options=options, custom_dist="cosine")


def spectral(sequence, min_clusters: int = SPECTRAL_CLUSTERS[0],
             max_clusters: int = SPECTRAL_CLUSTERS[1]) -> np.ndarray:
  """Speaker labels [T] of one conversation [T, D] by ICASSP 2018 spectral clustering, the
  count estimated in [min_clusters, max_clusters] (both cut to T: a conversation of T segments
  has at most T speakers). Deterministic (the package seeds its k-means)."""
  sequence = _sequence(sequence, "sequence")
  if len(sequence) == 1:
    return np.zeros(1, np.int64)
  count = len(sequence)
  clusterer = spectral_clusterer(min(min_clusters, count), min(max_clusters, count))
  return by_first_appearance(clusterer.predict(sequence))


def kmeans_oracle(sequence, num_speakers: int, seed: int) -> np.ndarray:
  """Speaker labels [T] of one conversation [T, D] by k-means with the true speaker count on
  L2-normalised embeddings (10 restarts from k-means++, seeded by `seed`)."""
  from sklearn.cluster import KMeans  # pylint: disable=import-outside-toplevel
  sequence = _sequence(sequence, "sequence")
  if not 1 <= int(num_speakers) <= len(sequence):
    raise ConfigError(f"num_speakers must lie in [1, {len(sequence)}] (the segments), got "
                      f"{num_speakers}")
  norms = np.linalg.norm(sequence, axis=1, keepdims=True)
  unit = sequence / np.where(norms > 0, norms, 1.0)
  model = KMeans(n_clusters=int(num_speakers), n_init=10, random_state=int(seed))
  return by_first_appearance(model.fit_predict(unit))


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def uisrnn_settings(overrides: dict) -> dict:
  """SETTINGS updated by `overrides`; a ConfigError for an unknown name or a bad value."""
  unknown = sorted(set(overrides) - set(SETTINGS))
  if unknown:
    raise ConfigError(f"unknown UIS-RNN setting(s) {', '.join(unknown)}: it takes "
                      f"{', '.join(SETTINGS)}")
  settings = {**SETTINGS, **overrides}
  positive = ["rnn_hidden_size", "rnn_depth", "train_iteration", "batch_size",
              "num_permutations", "beam_size", "look_ahead", "test_iteration"]
  if settings["observation_dim"] is not None:
    positive.append("observation_dim")
  for name in positive:
    if not _is_int(settings[name]) or settings[name] < 1:
      raise ConfigError(f"UIS-RNN setting {name} must be a positive integer, got "
                        f"{settings[name]!r}")
  if not _is_int(settings["seed"]):
    raise ConfigError(f"UIS-RNN setting seed must be an integer, got {settings['seed']!r}")
  for name in ("rnn_dropout", "learning_rate", "sigma_alpha", "sigma_beta", "crp_alpha",
               "regularization_weight"):
    if isinstance(settings[name], bool) or not isinstance(settings[name], (int, float)):
      raise ConfigError(f"UIS-RNN setting {name} must be a number, got {settings[name]!r}")
  if not 0 <= settings["rnn_dropout"] < 1:
    raise ConfigError(f"UIS-RNN setting rnn_dropout must lie in [0, 1), got "
                      f"{settings['rnn_dropout']}")
  for name in ("learning_rate", "sigma_alpha", "sigma_beta", "crp_alpha"):
    if not settings[name] > 0:  # NaN too
      raise ConfigError(f"UIS-RNN setting {name} must be positive, got {settings[name]}")
  return settings


def uisrnn_namespaces(settings: dict) -> tuple[argparse.Namespace, ...]:
  """(model_args, training_args, inference_args) as `uisrnn.parse_arguments()` returns them
  for an empty command line, with `settings` (full, from `uisrnn_settings`) written over them.
  Quiet (verbosity 0) and on the CPU: CUDA's GRU kernels are not bit-reproducible."""
  import uisrnn  # pylint: disable=import-outside-toplevel
  # parse_arguments reads sys.argv; the caller's (pytest's, absl's) flags are not for it.
  with mock.patch.object(sys, "argv", ["uisrnn"]):
    model_args, training_args, inference_args = uisrnn.parse_arguments()
  for args, keys in ((model_args, _MODEL_KEYS), (training_args, _TRAINING_KEYS),
                     (inference_args, _INFERENCE_KEYS)):
    for key in keys:
      if not hasattr(args, key):
        raise ConfigError(f"the installed uisrnn has no argument {key}")
      setattr(args, key, settings[key])
  model_args.verbosity, model_args.enable_cuda = 0, False
  return model_args, training_args, inference_args


def _string_ids(labels, count: int, utterance: int) -> np.ndarray:
  """uisrnn's cluster ids, "<utterance>_<speaker>", from int labels [count]."""
  labels = np.asarray(labels)
  if labels.shape != (count,):
    raise ConfigError(f"train_labels[{utterance}] must be {count} labels (one per segment), "
                      f"got shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ConfigError(f"train_labels[{utterance}] must be integer speaker labels, got dtype "
                      f"{labels.dtype}")
  return np.array([f"{utterance}_{label}" for label in labels.tolist()])


@contextlib.contextmanager
def _seeded(seed: int):
  """Seeds Python's, NumPy's and torch's global generators; restores the caller's after."""
  import torch  # pylint: disable=import-outside-toplevel
  python_state, numpy_state = random.getstate(), np.random.get_state()
  try:
    with torch.random.fork_rng(devices=[]):
      random.seed(seed)
      np.random.seed(seed)
      torch.manual_seed(seed)
      yield
  finally:
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def uisrnn_fit(train_sequences, train_labels, settings: dict):
  """A `uisrnn.UISRNN` trained on conversations [T_i, D] with int speaker labels [T_i] (any
  numbering; speakers are per conversation). `settings` override SETTINGS."""
  import uisrnn  # pylint: disable=import-outside-toplevel
  settings = uisrnn_settings(settings)
  sequences = _sequences(train_sequences, "train_sequences")
  if len(train_labels) != len(sequences):
    raise ConfigError(f"{len(train_labels)} label sequences for {len(sequences)} "
                      "train_sequences")
  ids = [_string_ids(labels, len(x), i)
         for i, (x, labels) in enumerate(zip(sequences, train_labels))]
  dim = sequences[0].shape[1]
  if settings["observation_dim"] is None:
    settings["observation_dim"] = dim
  elif settings["observation_dim"] != dim:
    raise ConfigError(f"observation_dim is {settings['observation_dim']} but the embeddings "
                      f"have {dim} dimensions")
  model_args, training_args, _ = uisrnn_namespaces(settings)
  with _seeded(int(settings["seed"])):
    model = uisrnn.UISRNN(model_args)
    model.fit(sequences, ids, training_args)
  return model


def _decode(model, sequence: np.ndarray, inference_args) -> np.ndarray:
  return by_first_appearance(np.asarray(model.predict_single(sequence, inference_args)))


# The decoding process's program: a fresh interpreter running `_serve`.
_SERVE = "from jaxml.studies.diarization_peers import _serve; _serve()"


def _serve() -> None:
  """The decoding process: reads (model bytes, inference args, torch threads) and then one
  sequence at a time from stdin, answers ("labels", array) or ("error", text) on stdout, until
  it reads None. Its own prints go to stderr, so that nothing can garble an answer."""
  import torch  # pylint: disable=import-outside-toplevel
  answers = connection.Connection(os.dup(1), readable=False)
  os.dup2(2, 1)
  requests = connection.Connection(os.dup(0), writable=False)
  model_bytes, inference_args, threads = requests.recv()
  torch.set_num_threads(threads)  # the parent's, so results match decoding in-process
  model = pickle.loads(model_bytes)
  answers.send(("ready", None))
  while (sequence := requests.recv()) is not None:
    try:
      answers.send(("labels", _decode(model, sequence, inference_args)))
    except Exception as error:  # pylint: disable=broad-except  # reported to the parent
      answers.send(("error", f"{type(error).__name__}: {error}"))


class _Decoder:
  """One decoding process for a model; see the module docstring."""

  def __init__(self, model, inference_args):
    import torch  # pylint: disable=import-outside-toplevel
    # The caller's import path, so the child imports this same jaxml.
    path = os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")])
    self.process = subprocess.Popen(  # pylint: disable=consider-using-with  # kill() ends it
        [sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path})
    self.requests = connection.Connection(os.dup(self.process.stdin.fileno()), readable=False)
    self.answers = connection.Connection(os.dup(self.process.stdout.fileno()), writable=False)
    self.process.stdin.close()
    self.process.stdout.close()
    try:
      self.requests.send((pickle.dumps(model), inference_args, torch.get_num_threads()))
    except OSError:  # it died before reading the model: _receive below says so
      pass
    if not self.answers.poll(_WORKER_START_LIMIT_S):
      self.kill()
      raise RuntimeError(f"the UIS-RNN decoding process did not start in "
                         f"{_WORKER_START_LIMIT_S:.0f} s")
    self._receive()

  def _receive(self):
    try:
      kind, value = self.answers.recv()
    except EOFError as error:
      self.kill()
      raise RuntimeError(f"the UIS-RNN decoding process died (exit code "
                         f"{self.process.returncode}); its stderr says why") from error
    if kind == "error":
      self.close()
      raise RuntimeError(f"UIS-RNN decoding failed: {value}")
    return value

  def decode(self, sequence: np.ndarray, timeout_s: float):
    """Labels [T], or None when no answer came within timeout_s (the process is then killed)."""
    self.requests.send(sequence)
    if not self.answers.poll(timeout_s):
      self.kill()
      return None
    return self._receive()

  def close(self):
    """Asks the process to end, then makes sure it has."""
    if self.process.poll() is None:
      with contextlib.suppress(OSError):
        self.requests.send(None)
      with contextlib.suppress(subprocess.TimeoutExpired):
        self.process.wait(10)
    self.kill()

  def kill(self):
    if self.process.poll() is None:
      self.process.kill()
    self.process.wait()
    self.requests.close()
    self.answers.close()


def uisrnn_predict(model, test_sequences, settings: dict, timeout_s: float | None = None):
  """Labels [T_i] (int64, by first appearance) decoded by a trained UIS-RNN for each
  conversation [T_i, D], with the decoding settings of `settings` (beam_size, look_ahead,
  test_iteration; the rest are ignored). With `timeout_s`, each conversation's decoding may
  take that many seconds of wall clock: one that takes longer is None in the list."""
  settings = uisrnn_settings(settings)
  sequences = _sequences(test_sequences, "test_sequences")
  if sequences[0].shape[1] != model.observation_dim:
    raise ConfigError(f"test_sequences have {sequences[0].shape[1]} dimensions, the model "
                      f"{model.observation_dim}")
  _, _, inference_args = uisrnn_namespaces(settings)
  if timeout_s is None:
    return [_decode(model, x, inference_args) for x in sequences]
  if not timeout_s > 0:
    raise ConfigError(f"timeout_s must be positive (or None for no limit), got {timeout_s}")
  out, decoder = [], None
  try:
    for sequence in sequences:
      decoder = decoder or _Decoder(model, inference_args)
      out.append(decoder.decode(sequence, float(timeout_s)))
      if out[-1] is None:  # killed: the next conversation gets a fresh worker
        decoder = None
  finally:
    if decoder is not None:
      decoder.close()
  return out
