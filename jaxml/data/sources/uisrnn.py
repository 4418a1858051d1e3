"""Speaker-diarization data in google/uis-rnn's .npz format, read into the d-vector layout.

Source `uisrnn:<train.npz>` (issue 22), with `data.test_path` the test file. The uis-rnn demo
(google/uis-rnn, demo.py) reads two NumPy archives:

- training: `train_sequence` [N, D] float, every utterance's d-vectors concatenated, and
  `train_cluster_id` [N] strings "<utterance>_<speaker>" (uis-rnn's fit() prefixes each
  utterance's labels with a random id, so labels are unique across utterances). The rows are
  cut into utterances at the first "_" of each label: an utterance is a run of consecutive
  rows with the same prefix, and a prefix that comes back after another one is an error (the
  concatenation keeps each utterance's rows together). The speaker is the rest of the label.
  A training archive may instead hold the per-utterance lists `train_sequences` /
  `train_cluster_ids`, as the test archive does.
- test: `test_sequences`, one [L_i, D] array per utterance (an object array, or one
  [M, L, D] array when all are as long), and `test_cluster_ids`, one [L_i] array of speaker
  labels per utterance (any strings or integers).

With no `data.test_path`, the test utterances are read from the training archive, which then
must hold `test_sequences` / `test_cluster_ids`. Object arrays are pickled, so the archives
are opened with allow_pickle (as uis-rnn's demo does): read only files you trust.

Each utterance is one example in the layout of jaxml/data/sources/dvectors.py: `embeddings`
float32 [max_length, D], `speakers` int32 [max_length] numbered by first appearance within
the utterance, `step_mask` float32 [max_length], `num_speakers` int32; max_length is the
longest utterance of either split. Task: kind "partition" (target `speakers`, step mask
`step_mask`), input `embeddings`.

Bad input is one ConfigError naming the file and the problem: a file that cannot be read,
missing arrays, sequences that are not [L, D] finite numbers, sequence and label lengths that
differ, an empty sequence or no utterances, a training label without "_", or dimensions that
differ between utterances or files.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np

from jaxml.data.base import Dataset
from jaxml.data.sources import dvectors
from jaxml.errors import ConfigError

NAME = "uisrnn"
CONCATENATED = ("train_sequence", "train_cluster_id")
LISTS = {"train": ("train_sequences", "train_cluster_ids"),
         "test": ("test_sequences", "test_cluster_ids")}


def read_archive(path: str) -> dict[str, np.ndarray]:
  """Every array of the .npz at `path`, or one ConfigError naming it."""
  if not path or not os.path.isfile(path):
    raise ConfigError(f"{NAME}: {path!r} is not a file (source 'uisrnn:<train.npz>', "
                      "data.test_path '<test.npz>')")
  # np.load with allow_pickle unpickles a file that is not a zip archive whole: refuse those
  # first, so only the object arrays inside an archive are ever unpickled.
  if not zipfile.is_zipfile(path):
    raise ConfigError(f"{NAME}: {path} cannot be read as a .npz archive: not a zip file")
  try:
    with np.load(path, allow_pickle=True) as archive:
      return {k: archive[k] for k in archive.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
    raise ConfigError(f"{NAME}: {path} cannot be read as a .npz archive: {err}") from None


def _sequence(value, where: str) -> np.ndarray:
  """`value` as a float32 [L, D] array of finite numbers, L >= 1, D >= 1."""
  array = np.asarray(value)
  if array.dtype == object:
    try:
      array = array.astype(np.float64)
    except (TypeError, ValueError):
      raise ConfigError(f"{NAME}: {where} must hold numbers") from None
  if array.ndim != 2 or not np.issubdtype(array.dtype, np.number) or np.issubdtype(
      array.dtype, np.complexfloating):
    raise ConfigError(f"{NAME}: {where} must be a [length, dim] array of numbers, got "
                      f"{array.dtype} of shape {array.shape}")
  if not array.shape[0] or not array.shape[1]:
    raise ConfigError(f"{NAME}: {where} is empty (shape {array.shape})")
  array = array.astype(np.float32)
  if not np.all(np.isfinite(array)):
    raise ConfigError(f"{NAME}: {where} holds NaN or Inf")
  return array


def _labels(value, length: int, where: str) -> np.ndarray:
  """`value` as a [length] array of label strings."""
  labels = np.asarray(value)
  if labels.ndim != 1:
    raise ConfigError(f"{NAME}: {where} must be one label per segment, got shape "
                      f"{labels.shape}")
  if len(labels) != length:
    raise ConfigError(f"{NAME}: {where} has {len(labels)} labels but its sequence has "
                      f"{length} segments")
  # str() of bytes would keep the b'' quotes
  return np.array([label.decode() if isinstance(label, bytes) else str(label)
                   for label in labels.tolist()])


def split_concatenated(sequence: np.ndarray, labels: np.ndarray, where: str):
  """[(embeddings [L, D], speaker labels [L])] per utterance of a concatenated sequence whose
  labels are "<utterance>_<speaker>" (see the module doc)."""
  parts = np.char.partition(labels, "_")
  if not np.all(parts[:, 1] == "_"):
    bad = int(np.argmin(parts[:, 1] == "_"))
    raise ConfigError(f"{NAME}: {where} label {str(labels[bad])!r} (row {bad}) is not "
                      "'<utterance>_<speaker>'")
  prefix = parts[:, 0]
  starts = np.flatnonzero(np.concatenate([[True], prefix[1:] != prefix[:-1]]))
  seen = {}
  for start in starts:
    name = str(prefix[start])
    if name in seen:
      raise ConfigError(f"{NAME}: {where} utterance {name!r} has rows apart (from row "
                        f"{seen[name]} and again from row {start}): each utterance's rows "
                        "must be consecutive")
    seen[name] = int(start)
  ends = np.append(starts[1:], len(labels))
  return [(sequence[a:b], parts[a:b, 2]) for a, b in zip(starts, ends)]


def _utterance_lists(sequences, labels, keys, where: str):
  """[(embeddings, labels)] from per-utterance arrays `sequences` and `labels`."""
  if len(sequences) != len(labels):
    raise ConfigError(f"{NAME}: {where} holds {len(sequences)} {keys[0]} but {len(labels)} "
                      f"{keys[1]}")
  out = []
  for i, (sequence, label) in enumerate(zip(sequences, labels)):
    array = _sequence(sequence, f"{where} {keys[0]}[{i}]")
    out.append((array, _labels(label, len(array), f"{where} {keys[1]}[{i}]")))
  return out


def utterances(arrays: dict, split: str, where: str):
  """[(embeddings float32 [L, D], speaker labels [L])] of `split` in a uis-rnn archive."""
  keys = LISTS[split]
  if split == "train" and all(k in arrays for k in CONCATENATED):
    sequence = _sequence(arrays[CONCATENATED[0]], f"{where} {CONCATENATED[0]}")
    labels = _labels(arrays[CONCATENATED[1]], len(sequence), f"{where} {CONCATENATED[1]}")
    found = split_concatenated(sequence, labels, where)
  elif all(k in arrays for k in keys):
    sequences, labels = arrays[keys[0]], arrays[keys[1]]
    if sequences.ndim == 0 or labels.ndim == 0:
      raise ConfigError(f"{NAME}: {where} {keys[0]} and {keys[1]} must be one entry per "
                        "utterance")
    found = _utterance_lists(list(sequences), list(labels), keys, where)
  else:
    wanted = " and ".join(keys)
    if split == "train":
      wanted = f"{' and '.join(CONCATENATED)}, or {wanted}"
    raise ConfigError(f"{NAME}: {where} lacks {split} data: it needs {wanted}; it holds "
                      f"{', '.join(sorted(arrays)) or 'no arrays'}")
  if not found:
    raise ConfigError(f"{NAME}: {where} holds no {split} utterances")
  dims = {x.shape[1] for x, _ in found}
  if len(dims) != 1:
    raise ConfigError(f"{NAME}: {where} {split} utterances have different dimensions "
                      f"{sorted(dims)}")
  return found


def load(data_config) -> Dataset:
  train_path = data_config.source.partition(":")[2]
  test_path = data_config.get("test_path") or ""
  train_arrays = read_archive(train_path)
  test_arrays = read_archive(test_path) if test_path else train_arrays
  split_of = {"train": utterances(train_arrays, "train", train_path),
              "test": utterances(test_arrays, "test", test_path or train_path)}
  dim = {split: found[0][0].shape[1] for split, found in split_of.items()}
  if dim["train"] != dim["test"]:
    raise ConfigError(f"{NAME}: training d-vectors ({train_path}) have dimension "
                      f"{dim['train']} but test ones ({test_path or train_path}) "
                      f"{dim['test']}")
  max_length = max(len(x) for found in split_of.values() for x, _ in found)
  padded = {split: dvectors.pad([x for x, _ in found],
                                [dvectors.first_appearance(s) for _, s in found],
                                max_length, dim["train"])
            for split, found in split_of.items()}
  return dvectors.dataset(padded["train"], padded["test"], max_length, dim["train"], NAME)
