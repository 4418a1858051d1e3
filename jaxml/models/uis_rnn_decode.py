"""UIS-RNN's online decoder (Zhang et al., "Fully Supervised Speaker Diarization"), fully jitted.

The public PyTorch code (google/uis-rnn, `UISRNN.predict_single`) decodes with a Python beam
search over lists of per-speaker states; this is the same search as one `lax.scan` with static
shapes, so it compiles once per (T, D) and runs under `jax.vmap` over utterances.
`decode_utterances` decodes utterances of any lengths: each is padded to its length bucket
and the bucket's utterances are decoded in fixed-size vmapped batches, so a set of utterances
compiles once per bucket and a short one does not pay for the longest one's work.
`jaxml/models/uis_rnn_reference.py` holds the plain NumPy version it is tested against and an
exhaustive search.

The model, one speaker at a time. `step(hidden, x) -> (hidden', out)` advances one speaker's
GRU state by one observation. A new speaker starts from `init_hidden` and first consumes the
zero vector: (h0, o0) = step(init_hidden, 0), and o0 predicts its first observation. After that
the predicted mean of a speaker's next observation is a running mean of its outputs
(`mean_rule`, below). Scores are negative log likelihoods; a segment x_t assigned to speaker k
costs

  sum_d (mean_k,d - x_t,d)^2 / (2 sigma2_d)                        the Gaussian term
  + -log(1 - p)                                 if k is the previous segment's speaker
  + -log(p) - log(blocks_k) + log(B + alpha)    if k is another speaker already seen
  + -log(p) - log(alpha)    + log(B + alpha)    if k is a new speaker

with p = `transition_bias`, alpha = `crp_alpha`, blocks_k the number of times speaker k has been
switched to (its runs of segments) and B the sum of blocks over all speakers. These are
uisrnn's terms exactly (`UISRNN._update_beam_state`), including four things worth knowing:

- `transition_bias` is the probability of a speaker *change*: staying costs -log(1 - p), and
  uisrnn estimates p as the smoothed fraction of adjacent segments whose speakers differ
  (`utils.estimate_transition_bias`).
- The CRP normaliser B + alpha counts the previous speaker's blocks too, though the previous
  speaker cannot be switched to; so the switch probabilities sum to less than p. Kept as
  uisrnn has it, so that the two decoders rank beams alike.
- The Gaussian's constant (log 2 pi sigma2 / 2 per dimension) is left out, as in uisrnn: every
  segment pays it once whatever its label, so rankings do not change.
- The first segment pays -log(p) (a "new speaker" with B = 0), again as uisrnn.

`mean_rule`: "running" (the default) predicts with the mean of all the speaker's outputs after
inputs [0, x1, ..., xn] (o0 ... on), which is what uisrnn *trains* (`fit_concatenated`:
cumsum of the outputs divided by 1, 2, ...). uisrnn's decoder is off by one from its training:
after a new speaker's first segment it keeps only o1, then replaces it by o2, and averages from
there ((o2 + ... + on) / (n - 1)); "uisrnn" reproduces that, for comparison with
`predict_single`.

Search (uisrnn's `predict_single`). The sequence is repeated `test_iteration` times and decoded
as one sequence; the labels of the last copy are returned (the earlier copies warm up each
speaker's RNN state). `look_ahead` is a block length: at each step every beam is extended by
every assignment of the next `look_ahead` segments (numbered by first appearance), all
candidates of all beams are ranked by total score, the best `beam_size` become the new beams,
and the search moves on by the whole block (the last block may be shorter). Ties go to the
lower (beam rank, labels of the block in lexicographic order): `lax.top_k` keeps the lower
index first, and the candidates are laid out in that order. uisrnn breaks ties by numpy's
unstable argsort; exact ties do not happen on real-valued data.

Where this deviates from uisrnn, and why:
- At most `max_speakers` speakers (static: beams are [beam_size, max_speakers] tables). A
  candidate that would open speaker number `max_speakers + 1` is impossible (infinite score).
- Labels are renumbered by first appearance within the returned copy; uisrnn returns its trace
  ids, numbered by first appearance in the first copy.
- uisrnn's Gaussian term (`loss_func.weighted_mse_loss`) divides by the number of residual rows
  whose first coordinate is non-zero, so a candidate whose residual's first coordinate is
  exactly 0.0 scores inf or nan there; here it is the plain sum.
- `mask` drops segments (padding): they are taken out before tiling, so a padded utterance
  decodes exactly as the unpadded one; their labels are -1.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.errors import ConfigError

MEAN_RULES = ("running", "uisrnn")
# beam_search's keyword options and their defaults (uisrnn's: beam 10, look-ahead 1, two test
# iterations).
OPTIONS = {"beam_size": 10, "look_ahead": 1, "max_speakers": 8, "test_iteration": 2,
           "mean_rule": "running"}


class Beams(NamedTuple):
  """The beams' per-speaker tables; leading axes [beam] (or [candidate]) then [speaker].

  Unused speaker slots hold a fresh speaker (h0, o0, no segments, no blocks), so opening a new
  speaker is assigning to the first unused slot. `score` is inf for a beam that does not exist
  (fewer candidates than `beam_size` so far).
  """

  hidden: jax.Array  # [..., S, *H]
  mean: jax.Array  # [..., S, D] predicted mean of each speaker's next segment
  count: jax.Array  # [..., S] int32, segments assigned to the speaker
  blocks: jax.Array  # [..., S] int32, times the speaker was switched to (0: slot unused)
  last: jax.Array  # [...] int32, previous segment's speaker, -1 before the first
  score: jax.Array  # [...] negative log likelihood so far


class Params(NamedTuple):
  sigma2: jax.Array  # [D]
  transition_bias: jax.Array  # scalar, probability of a speaker change
  crp_alpha: jax.Array  # scalar, > 0


def label_cost(beam: Beams, label, x, valid, params: Params):
  """Cost of giving segment x the speaker `label` in one beam; inf when not allowed.

  A padded position (valid False) costs 0 for label 0 and is impossible for any other label,
  so each real candidate appears once however its block is padded.
  """
  num_speakers = jnp.sum(beam.blocks > 0)
  gaussian = jnp.sum((beam.mean[label] - x) ** 2 / (2.0 * params.sigma2))
  p, alpha = params.transition_bias, params.crp_alpha
  log_norm = jnp.log(jnp.sum(beam.blocks) + alpha)
  # max(.., 1) only keeps log(0) out of the branch that `where` discards.
  switch = -jnp.log(p) - jnp.log(jnp.maximum(beam.blocks[label], 1)) + log_norm
  new = -jnp.log(p) - jnp.log(alpha) + log_norm
  transition = jnp.where(label == beam.last, -jnp.log1p(-p),
                         jnp.where(label < num_speakers, switch, new))
  cost = jnp.where(label <= num_speakers, gaussian + transition, jnp.inf)
  return jnp.where(valid, cost, jnp.where(label == 0, 0.0, jnp.inf))


def next_mean(mean, count, out, mean_rule: str):
  """The speaker's predicted mean after one more output `out`; `count` segments before it."""
  if mean_rule == "running":  # mean of count + 1 outputs (o0 included) -> of count + 2
    return (mean * (count + 1) + out) / (count + 2)
  # uisrnn: (mean * (n - 1) + out) / n, n = segments before this one; n = 0, 1 keep just out.
  return jnp.where(count <= 1, out, (mean * (count - 1) + out) / jnp.maximum(count, 1))


def assign(beam: Beams, label, x, valid, step: Callable, mean_rule: str) -> Beams:
  """The beam after giving segment x to speaker `label` (score not included); unchanged when
  the position is padding."""
  hidden, out = step(beam.hidden[label], x)
  count = beam.count[label]
  updated = beam._replace(
      hidden=beam.hidden.at[label].set(hidden),
      mean=beam.mean.at[label].set(next_mean(beam.mean[label], count, out, mean_rule)),
      count=beam.count.at[label].add(1),
      blocks=beam.blocks.at[label].add((label != beam.last).astype(jnp.int32)),
      last=jnp.asarray(label, jnp.int32))
  return jax.tree.map(lambda new, old: jnp.where(valid, new, old), updated, beam)


def block_scores(beams: Beams, xs, valid, params: Params, step, mean_rule):
  """Total score of every (beam, labels of the block) candidate, flattened row-major, i.e. in
  (beam rank, labels lexicographic) order: [beam_size * S ** look_ahead].

  The candidates grow one position at a time; only the prefixes (not the full blocks) need
  their speaker tables advanced, since a segment's cost depends on the state before it.
  """
  num_slots = beams.count.shape[-1]
  labels = jnp.arange(num_slots, dtype=jnp.int32)
  states, totals = beams, beams.score
  for d in range(xs.shape[0]):
    cost = jax.vmap(jax.vmap(label_cost, (None, 0, None, None, None)),
                    (0, None, None, None, None))(states, labels, xs[d], valid[d], params)
    totals = (totals[:, None] + cost).reshape(-1)
    if d < xs.shape[0] - 1:
      advance = functools.partial(assign, step=step, mean_rule=mean_rule)
      states = jax.vmap(jax.vmap(advance, (None, 0, None, None)),
                        (0, None, None, None))(states, labels, xs[d], valid[d])
      states = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), states)
  return totals


def search_block(beams: Beams, xs, valid, params: Params, step, mean_rule):
  """One step of the search: the best `beam_size` candidates become the beams.

  Returns the new beams, each one's parent beam [beam_size] and its block's labels
  [beam_size, look_ahead].
  """
  beam_size, num_slots = beams.count.shape
  look_ahead = xs.shape[0]
  totals = block_scores(beams, xs, valid, params, step, mean_rule)
  neg_best, flat = jax.lax.top_k(-totals, beam_size)  # lower index first among equals
  per_beam = num_slots ** look_ahead
  parent = flat // per_beam
  powers = num_slots ** jnp.arange(look_ahead - 1, -1, -1)
  labels = (flat[:, None] % per_beam) // powers % num_slots
  new = jax.tree.map(lambda a: a[parent], beams)
  advance = jax.vmap(functools.partial(assign, step=step, mean_rule=mean_rule),
                     (0, 0, None, None))
  for d in range(look_ahead):  # replay the winners' blocks to get their tables
    new = advance(new, labels[:, d], xs[d], valid[d])
  return new._replace(score=-neg_best), parent, labels.astype(jnp.int32)


def initial_beams(step, init_hidden, dim: int, beam_size: int, max_speakers: int) -> Beams:
  """One live beam (score 0) with no speakers; the other beam slots do not exist yet."""
  h0, o0 = step(init_hidden, jnp.zeros((dim,), jnp.result_type(init_hidden)))
  tile = lambda a: jnp.broadcast_to(a, (beam_size, max_speakers) + a.shape)
  zeros = jnp.zeros((beam_size, max_speakers), jnp.int32)
  return Beams(hidden=tile(h0), mean=tile(o0), count=zeros, blocks=zeros,
               last=jnp.full((beam_size,), -1, jnp.int32),
               score=jnp.full((beam_size,), jnp.inf).at[0].set(0.0).astype(o0.dtype))


def first_appearance(labels, valid, max_speakers: int):
  """Speaker ids renumbered 0, 1, ... in order of first appearance among the valid labels."""
  positions = jnp.arange(labels.shape[0])
  hits = (labels[None, :] == jnp.arange(max_speakers)[:, None]) & valid[None, :]
  first = jnp.min(jnp.where(hits, positions[None, :], labels.shape[0]), axis=1)  # [S]
  rank = jnp.sum(first[None, :] < first[:, None], axis=1)
  return rank[labels]


def check_options(beam_size, look_ahead, max_speakers, test_iteration, mean_rule):
  if min(beam_size, look_ahead, max_speakers, test_iteration) < 1:
    raise ConfigError(f"beam_size {beam_size}, look_ahead {look_ahead}, max_speakers "
                      f"{max_speakers} and test_iteration {test_iteration} must all be >= 1")
  if mean_rule not in MEAN_RULES:
    raise ConfigError(f"mean_rule {mean_rule!r} is not one of {MEAN_RULES}")


@functools.partial(jax.jit, static_argnames=("step", "beam_size", "look_ahead", "max_speakers",
                                             "test_iteration", "mean_rule"))
def beam_search(step: Callable, init_hidden, sigma2, transition_bias, crp_alpha, sequence, mask,
                *, beam_size: int = OPTIONS["beam_size"],
                look_ahead: int = OPTIONS["look_ahead"],
                max_speakers: int = OPTIONS["max_speakers"],
                test_iteration: int = OPTIONS["test_iteration"],
                mean_rule: str = OPTIONS["mean_rule"]):
  """UIS-RNN's beam search over one utterance: (labels [T] int32, neg_log_likelihood).

  step: `(hidden, x [D]) -> (hidden', out [D])`, static (pass the same callable to reuse the
    compilation; to decode with parameters that change, close over them inside your own jitted
    function, where this one is inlined). init_hidden: a new speaker's state, any shape.
  sigma2 [D], transition_bias (probability of a speaker change), crp_alpha (> 0): the
    model's variances and priors (module docstring); traced.
  sequence [T, D], mask [T] bool: segments; masked ones are left out (label -1).
  Labels are numbered by first appearance among the unmasked segments. neg_log_likelihood is
  the best beam's total over all `test_iteration` copies, as uisrnn's `neg_likelihood`.
  Work per call is fixed by the shapes (no input makes it search longer):
  ceil(T * test_iteration / look_ahead) blocks, each scoring beam_size * max_speakers **
  look_ahead candidates and holding beam_size * max_speakers ** (look_ahead - 1) speaker tables
  at once. Vmap over utterances padded to one T.
  """
  check_options(beam_size, look_ahead, max_speakers, test_iteration, mean_rule)
  length, dim = sequence.shape
  params = Params(jnp.asarray(sigma2), jnp.asarray(transition_bias), jnp.asarray(crp_alpha))
  mask = jnp.asarray(mask, bool)
  order = jnp.argsort(~mask, stable=True)  # real segments first, in order
  num_real = jnp.sum(mask.astype(jnp.int32))
  num_blocks = -(-length * test_iteration // look_ahead)
  position = jnp.arange(num_blocks * look_ahead)
  tiled = order[position % jnp.maximum(num_real, 1)]
  xs = sequence[tiled].reshape(num_blocks, look_ahead, dim)
  valid = (position < num_real * test_iteration).reshape(num_blocks, look_ahead)

  def scan_block(beams, block):
    beams, parent, labels = search_block(beams, *block, params, step, mean_rule)
    return beams, (parent, labels)

  beams = initial_beams(step, jnp.asarray(init_hidden), dim, beam_size, max_speakers)
  beams, (parents, labels) = jax.lax.scan(scan_block, beams, (xs, valid))

  def backtrack(beam, block):  # from the best final beam back through its parents
    parent, block_labels = block
    return parent[beam], block_labels[beam]

  _, path = jax.lax.scan(backtrack, jnp.int32(0), (parents, labels), reverse=True)
  trace = path.reshape(-1)
  index = jnp.arange(length)
  real = index < num_real
  last_copy = trace[jnp.where(real, (test_iteration - 1) * num_real + index, 0)]
  last_copy = first_appearance(last_copy, real, max_speakers)
  out = jnp.full((length,), -1, jnp.int32).at[order].set(jnp.where(real, last_copy, -1))
  return out.astype(jnp.int32), beams.score[0]


SMALLEST_BUCKET = 16


def bucket_length(length: int, buckets: Sequence[int] | None = None) -> int:
  """The padded length of an utterance of `length` segments: the smallest of `buckets` that
  holds it; without buckets, or beyond the largest, the next power of two (at least
  SMALLEST_BUCKET). A power-of-two bucket pads an utterance to less than twice its length,
  and a set of utterances of lengths up to T needs at most log2(T) compilations."""
  fitting = [b for b in (buckets or ()) if b >= length]
  if fitting:
    return min(fitting)
  return max(SMALLEST_BUCKET, 1 << max(int(length) - 1, 0).bit_length())


def check_utterances(sequences, dim: int) -> list[np.ndarray]:
  """The utterances as float32 [T_i, dim] arrays, or one ConfigError naming the first that is
  not one: not 2-D, of another dimension, empty or holding a NaN or an infinity."""
  out = []
  for i, sequence in enumerate(sequences):
    array = np.asarray(sequence, np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
      raise ConfigError(f"utterance {i} has shape {array.shape}; each must be [segments, {dim}] "
                        f"(the model's observation dimension is {dim})")
    if not len(array):
      raise ConfigError(f"utterance {i} is empty: it has no segments to label")
    if not np.isfinite(array).all():
      raise ConfigError(f"utterance {i} holds a NaN or an infinity")
    out.append(array)
  return out


@functools.partial(jax.jit, static_argnames=("step", "options"))
def _decode_batch(step, options, weights, init_hidden, sigma2, transition_bias, crp_alpha,
                  sequences, masks):
  """Labels [N, T] of a padded batch, `beam_search` vmapped with the weights traced."""
  search = functools.partial(beam_search, functools.partial(step, weights), **dict(options))
  labels, _ = jax.vmap(search, (None, None, None, None, 0, 0))(
      init_hidden, sigma2, transition_bias, crp_alpha, sequences, masks)
  return labels


def decode_utterances(step: Callable, weights, init_hidden, sigma2, transition_bias, crp_alpha,
                      sequences: Sequence, *, batch_size: int = 16,
                      buckets: Sequence[int] | None = None, **options) -> list[np.ndarray]:
  """Each utterance's speaker labels [T_i] (int32, numbered by first appearance), decoded by
  `beam_search` with `options` (beam_size, look_ahead, max_speakers, test_iteration,
  mean_rule), whatever the utterances' lengths.

  step: `(weights, hidden, x) -> (hidden', out)`, static: pass the same callable to reuse
    the compilations. weights: any pytree, traced (new weights do not recompile).
  sequences: utterances [T_i, D] of any lengths T_i >= 1.
  Each utterance is padded to `bucket_length(T_i, buckets)`; a bucket's utterances are decoded
  `batch_size` at a time (the last batch padded with empty rows), so the work is one
  compilation per bucket used and, per utterance, that of its bucket's length. Labels equal
  `beam_search` on the unpadded utterance (padding is masked out before the search).
  """
  if batch_size < 1:
    raise ConfigError(f"batch_size {batch_size} must be >= 1")
  unknown = sorted(set(options) - set(OPTIONS))
  if unknown:
    raise ConfigError(f"unknown decoding options {unknown}; they are {sorted(OPTIONS)}")
  options = {**OPTIONS, **options}
  check_options(**options)
  sigma2 = jnp.asarray(sigma2)
  sequences = check_utterances(sequences, int(sigma2.shape[-1]))
  groups: dict[int, list[int]] = {}
  for i, sequence in enumerate(sequences):
    groups.setdefault(bucket_length(len(sequence), buckets), []).append(i)
  labels: list[np.ndarray | None] = [None] * len(sequences)
  options = tuple(sorted(options.items()))
  for length, members in sorted(groups.items()):
    for start in range(0, len(members), batch_size):
      chunk = members[start:start + batch_size]
      padded = np.zeros((batch_size, length, sigma2.shape[-1]), np.float32)
      masks = np.zeros((batch_size, length), bool)
      for row, i in enumerate(chunk):
        padded[row, :len(sequences[i])] = sequences[i]
        masks[row, :len(sequences[i])] = True
      out = np.asarray(_decode_batch(step, options, weights, init_hidden, sigma2,
                                     transition_bias, crp_alpha, padded, masks))
      for row, i in enumerate(chunk):
        labels[i] = out[row, :len(sequences[i])]
  return labels
