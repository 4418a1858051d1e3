"""Simulated conversations of speaker embeddings (d-vectors), for speaker diarization (UIS-RNN).

Source `dvectors` (issue 22): conversations in the shape that Zhang et al., "Fully Supervised
Speaker Diarization" (UIS-RNN, ICASSP 2019), train and test on (one d-vector per segment, a
speaker label per segment), drawn from a model with a known truth, so a diarizer's errors can
be told apart from the data's. Deterministic in `data.seed`.

The generative model, in `dim` dimensions:

- Speakers. `train_speakers + test_speakers` unit vectors, uniform on the sphere (normalised
  standard Gaussians), drawn from one stream keyed by the seed: the first `train_speakers` are
  the training pool, the rest the test pool. The pools are disjoint, so the test split is
  diarization of speakers never seen in training, as in the paper; a speaker's index into
  `speaker_means` is its identity (`simulate`'s `identity`). Random directions in 256
  dimensions are nearly orthogonal (their cosines have sd 1/16), more so than real d-vectors
  of different speakers: speakers here are easier to tell apart than real ones.
- Conversations. Each has `num_speakers` ~ U{min_speakers..max_speakers} participants, drawn
  without replacement from its split's pool, and a length ~ U{min_length..max_length}
  segments. Turn-taking is a Markov chain: the first segment is a uniform participant; after
  each segment the same speaker keeps the turn with probability `turn_stay`, else a uniform
  *other* participant takes it. The chain is not conditioned on everyone talking (that would
  bias the stay rate), so a participant may never get a turn: the field `num_speakers` counts
  the distinct speakers who spoke (with the defaults, about 1 conversation in 9 has a
  participant who never speaks).
- Embeddings. Segment t of speaker s is normalise(m + noise * g / sqrt(dim)), g ~ N(0, I),
  where m is s's current mean (unit). So `noise` is the ratio of the noise's norm to the mean's
  (about: |g| / sqrt(dim) -> 1), and the expected cosine of a segment to its speaker's mean
  is, exactly (`cosine_to_mean`; kappa^2 = dim / noise^2, 1F1 Kummer's function),

      E cos = Gamma((dim + 1) / 2) / Gamma(dim / 2 + 1) * kappa / sqrt(2)
              * 1F1(1/2; dim / 2 + 1; -kappa^2 / 2)  ->  1 / sqrt(1 + noise^2) as dim grows.

  At dim 256: noise 0.5 -> 0.895, 0.75 -> 0.800, 1.0 -> 0.707, 1.25 -> 0.625, 1.5 -> 0.555,
  2.0 -> 0.447. Real d-vectors' segment cosine to their speaker's centroid is roughly 0.6-0.8
  (the range issue 22 gives); the default `noise` 1.0 (0.707) sits in the middle of it. (Two
  segments of one speaker then have cosine about 1 / (1 + noise^2) = 0.5 to each other.)
- Drift. Each conversation starts every speaker at their pool mean; with `drift` > 0, after
  each segment a speaker speaks, their mean steps to normalise(m + drift * h / sqrt(dim)),
  h ~ N(0, I): a random walk on the sphere whose consecutive means have the expected cosine
  `cosine_to_mean(drift, dim)`. The walk restarts in every conversation (a speaker's voice
  drifts within a conversation, not across them).

Each conversation has its own random stream, keyed by (seed, split, conversation), drawn in a
fixed order (structure, then noise, then drift), so a conversation does not change with the
number of conversations, and `noise` and `drift` change its embeddings, not who speaks when.

Examples, one conversation each, padded to `max_length` segments (the sequence layout of
jaxml/data/base.py): `embeddings` float32 [max_length, dim] (zeros in padding); `speakers`
int32 [max_length], each segment's speaker numbered by first appearance in the conversation (0
is the first to talk; 0 in padding); `step_mask` float32 [max_length] (1 for real segments);
`num_speakers` int32 (distinct speakers who spoke). Task: kind "partition" (target `speakers`,
step mask `step_mask`), input `embeddings`.
jaxml/data/sources/uisrnn.py reads the uis-rnn .npz files into the same layout (`dataset`).

Config (all optional): `seed` (0), `dim` (256, the paper's d-vector size), `noise` (1.0),
`drift` (0.0), `train_speakers` (200), `test_speakers` (100), `min_speakers` (2),
`max_speakers` (6), `turn_stay` (0.85: turns last 1 / (1 - 0.85) = 6.7 segments on average;
raise it for longer turns), `min_length` (40), `max_length` (160), `train_conversations`
(400), `test_conversations` (100). Each pool must hold at least `max_speakers` speakers.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import special

from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError

NAME = "dvectors"
DEFAULTS = {"seed": 0, "dim": 256, "noise": 1.0, "drift": 0.0, "train_speakers": 200,
            "test_speakers": 100, "min_speakers": 2, "max_speakers": 6, "turn_stay": 0.85,
            "min_length": 40, "max_length": 160, "train_conversations": 400,
            "test_conversations": 100}
SPLITS = ("train", "test")
POOL_STREAM = 0  # the speaker means' random stream; conversations use 1 + the split's index
FIELDS = ("embeddings", "speakers", "step_mask", "num_speakers")


def _integer(values: dict, key: str, least: int, why: str = "") -> int:
  value = values[key]
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
    raise ConfigError(f"{NAME}: data.{key}={value!r} must be an integer >= {least}{why}")
  return int(value)


def _number(values: dict, key: str, least: float, most: float = np.inf) -> float:
  value = values[key]
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
      least <= value <= most) or not np.isfinite(value):
    bound = f"in [{least}, {most}]" if np.isfinite(most) else f">= {least} and finite"
    raise ConfigError(f"{NAME}: data.{key}={value!r} must be a number {bound}")
  return float(value)


def settings(data_config) -> dict:
  """The config's values over DEFAULTS (a key set to None takes its default), checked: one
  ConfigError naming the first bad key. Takes a ConfigDict or a plain dict."""
  values = {k: v if data_config.get(k) is None else data_config.get(k)
            for k, v in DEFAULTS.items()}
  for key, least in (("seed", 0), ("dim", 2), ("min_speakers", 1), ("min_length", 1),
                     ("train_conversations", 1), ("test_conversations", 1)):
    values[key] = _integer(values, key, least)
  values["max_speakers"] = _integer(values, "max_speakers", values["min_speakers"])
  values["max_length"] = _integer(values, "max_length", values["min_length"])
  for key in ("train_speakers", "test_speakers"):
    values[key] = _integer(values, key, values["max_speakers"],
                           " (data.max_speakers: a conversation's speakers are distinct)")
  values["turn_stay"] = _number(values, "turn_stay", 0.0, 1.0)
  for key in ("noise", "drift"):
    values[key] = _number(values, key, 0.0)
  return values


def cosine_to_mean(noise: float, dim: int) -> float:
  """E cos(m + noise * g / sqrt(dim), m) for a unit m and g ~ N(0, I_dim): the expected
  cosine of a segment to its speaker's mean (the closed form of the module doc)."""
  if noise == 0:
    return 1.0
  kappa2 = dim / noise**2
  log_ratio = special.gammaln((dim + 1) / 2) - special.gammaln(dim / 2 + 1)
  return float(np.exp(log_ratio) * np.sqrt(kappa2 / 2)
               * special.hyp1f1(0.5, dim / 2 + 1, -kappa2 / 2))


def _normalise(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def speaker_means(values: dict) -> np.ndarray:
  """[train_speakers + test_speakers, dim] float64 unit means: the training pool, then the
  test pool. Rows are drawn in order, so a pool's means do not change with the other's size."""
  rng = np.random.default_rng([values["seed"], POOL_STREAM])
  total = values["train_speakers"] + values["test_speakers"]
  return _normalise(rng.standard_normal((total, values["dim"])))


def pool(values: dict, split: str) -> np.ndarray:
  """The identities (rows of `speaker_means`) that `split`'s conversations draw from."""
  if split not in SPLITS:
    raise ConfigError(f"{NAME}: split {split!r}: choose one of {', '.join(SPLITS)}")
  train = values["train_speakers"]
  return np.arange(train) if split == "train" else np.arange(train, train +
                                                             values["test_speakers"])


def first_appearance(labels) -> np.ndarray:
  """int32 labels renumbered 0, 1, ... in the order they first occur (any hashable labels:
  strings, ints)."""
  _, first, inverse = np.unique(np.asarray(labels), return_index=True, return_inverse=True)
  rank = np.empty(len(first), np.int64)
  rank[np.argsort(first)] = np.arange(len(first))
  return rank[inverse.reshape(-1)].astype(np.int32)


def turns(rng: np.random.Generator, participants: int, length: int,
          stay: float) -> np.ndarray:
  """[length] participant indices of a Markov turn-taking chain (see the module doc)."""
  start = rng.integers(participants)
  switch = rng.random(length - 1) >= stay
  if participants == 1:
    return np.zeros(length, np.int64)
  # A switch adds 1..participants-1 (mod participants): a uniform *other* participant.
  step = rng.integers(1, participants, length - 1) * switch
  return (start + np.concatenate([[0], np.cumsum(step)])) % participants


def _conversation(values: dict, means: np.ndarray, split: str, index: int):
  """(embeddings [L, dim] float64, speakers [L] by first appearance, identities [K])."""
  rng = np.random.default_rng([values["seed"], 1 + SPLITS.index(split), index])
  participants = int(rng.integers(values["min_speakers"], values["max_speakers"] + 1))
  length = int(rng.integers(values["min_length"], values["max_length"] + 1))
  chosen = rng.choice(pool(values, split), participants, replace=False)
  who = turns(rng, participants, length, values["turn_stay"])
  dim = values["dim"]
  noise = rng.standard_normal((length, dim))
  if values["drift"] > 0:
    steps = values["drift"] / np.sqrt(dim) * rng.standard_normal((length, dim))
    current = means[chosen].copy()
    centre = np.empty((length, dim))
    for t, speaker in enumerate(who):  # sequential: each step renormalises the walk
      centre[t] = current[speaker]
      current[speaker] = _normalise(current[speaker] + steps[t])
  else:
    centre = means[chosen[who]]
  embeddings = _normalise(centre + values["noise"] / np.sqrt(dim) * noise)
  speakers = first_appearance(who)
  _, first = np.unique(who, return_index=True)
  return embeddings, speakers, chosen[who[np.sort(first)]]


def pad(embeddings: list[np.ndarray], speakers: list[np.ndarray], max_length: int,
        dim: int) -> dict[str, np.ndarray]:
  """The example arrays (FIELDS) of conversations given as [L_i, dim] embeddings and [L_i]
  first-appearance speaker indices, each padded to `max_length` segments."""
  count = len(embeddings)
  out = {"embeddings": np.zeros((count, max_length, dim), np.float32),
         "speakers": np.zeros((count, max_length), np.int32),
         "step_mask": np.zeros((count, max_length), np.float32),
         "num_speakers": np.zeros(count, np.int32)}
  for i, (x, who) in enumerate(zip(embeddings, speakers)):
    out["embeddings"][i, :len(x)] = x
    out["speakers"][i, :len(who)] = who
    out["step_mask"][i, :len(who)] = 1
    out["num_speakers"][i] = int(who.max()) + 1
  return out


def simulate(values: dict, split: str) -> dict[str, np.ndarray]:
  """`split`'s conversations: the example arrays (FIELDS) plus `identity` int32
  [conversations, max_speakers], the row of `speaker_means` of each conversation's speaker
  0, 1, ... (-1 past `num_speakers`), the truth a study or test compares against."""
  means = speaker_means(values)
  drawn = [_conversation(values, means, split, i)
           for i in range(values[f"{split}_conversations"])]
  out = pad([x for x, _, _ in drawn], [s for _, s, _ in drawn], values["max_length"],
            values["dim"])
  identity = np.full((len(drawn), values["max_speakers"]), -1, np.int32)
  for i, (_, _, ids) in enumerate(drawn):
    identity[i, :len(ids)] = ids
  return {**out, "identity": identity}


def dataset(train: dict, test: dict, max_length: int, dim: int, name: str) -> Dataset:
  """The diarization Dataset of padded conversations (the module doc's layout)."""
  fields = {"embeddings": Field((max_length, dim), "float32"),
            "speakers": Field((max_length,), "int32"),
            "step_mask": Field((max_length,), "float32"),
            "num_speakers": Field((), "int32")}
  task = Task("partition", ("embeddings",), "speakers", 0, step_mask="step_mask")
  return Dataset(ArraySplit({k: train[k] for k in FIELDS}),
                 ArraySplit({k: test[k] for k in FIELDS}), fields, task, name=name)


def load(data_config) -> Dataset:
  values = settings(data_config)
  return dataset(simulate(values, "train"), simulate(values, "test"), values["max_length"],
                 values["dim"], NAME)
