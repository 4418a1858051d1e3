"""Plain NumPy versions of UIS-RNN's decoder, the references `uis_rnn_decode.beam_search` is
tested against: the same beam search written for clarity (one hypothesis, one speaker, one
candidate at a time, as uisrnn's `predict_single` but without torch), and an exhaustive search
over every labelling, for tiny inputs.

The semantics (costs, `mean_rule`, blocks of `look_ahead`, `test_iteration` copies, ties, the
`max_speakers` cap, masking, label numbering) are those in `uis_rnn_decode`'s docstring. `step`
is called one segment at a time (jitted once); its outputs are taken to float64 here.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import jax
import numpy as np

from jaxml.models.uis_rnn_decode import check_options


@dataclasses.dataclass(frozen=True)
class Speaker:
  hidden: np.ndarray
  mean: np.ndarray  # predicted mean of the speaker's next segment
  count: int  # segments so far
  blocks: int  # times switched to


@dataclasses.dataclass(frozen=True)
class Hypothesis:
  speakers: tuple[Speaker, ...]  # in order of first appearance
  trace: tuple[int, ...]  # a label per segment so far
  score: float  # negative log likelihood so far


class Model:
  """The model's pieces the decoder needs, with a segment's cost and a hypothesis' update."""

  def __init__(self, step, init_hidden, sigma2, transition_bias, crp_alpha, max_speakers,
               mean_rule):
    jitted = jax.jit(step)
    self.step = lambda hidden, x: tuple(np.asarray(a, np.float64) for a in jitted(hidden, x))
    self.sigma2 = np.asarray(sigma2, np.float64)
    self.p, self.alpha = float(transition_bias), float(crp_alpha)
    self.max_speakers, self.mean_rule = max_speakers, mean_rule
    # A new speaker starts from init_hidden and consumes the zero vector first.
    h0, o0 = self.step(np.asarray(init_hidden), np.zeros(self.sigma2.shape, np.float32))
    self.fresh = Speaker(hidden=h0, mean=o0, count=0, blocks=0)

  def cost(self, hyp: Hypothesis, label: int, x: np.ndarray) -> float:
    """Negative log likelihood of segment x from speaker `label`; inf if not allowed."""
    known = len(hyp.speakers)
    if label > known or label >= self.max_speakers:
      return np.inf  # labels open speakers in order, at most max_speakers of them
    speaker = hyp.speakers[label] if label < known else self.fresh
    gaussian = np.sum((speaker.mean - x) ** 2 / (2.0 * self.sigma2))
    all_blocks = sum(s.blocks for s in hyp.speakers)
    if hyp.trace and label == hyp.trace[-1]:
      return gaussian - np.log(1.0 - self.p)
    prior = self.alpha if label == known else speaker.blocks  # the CRP's weight
    return gaussian - np.log(self.p) - np.log(prior) + np.log(all_blocks + self.alpha)

  def assign(self, hyp: Hypothesis, label: int, x: np.ndarray, cost: float) -> Hypothesis:
    """The hypothesis after segment x is given to speaker `label` at `cost`."""
    speakers = list(hyp.speakers)
    if label == len(speakers):
      speakers.append(self.fresh)
    old = speakers[label]
    hidden, out = self.step(old.hidden, np.asarray(x, np.float32))
    n = old.count
    if self.mean_rule == "running":  # mean of o0 ... on
      mean = (old.mean * (n + 1) + out) / (n + 2)
    else:  # uisrnn's decoder: o1 alone, then o2 alone, then (o2 + ... + on) / (n - 1)
      mean = out if n <= 1 else (old.mean * (n - 1) + out) / n
    switched = not hyp.trace or hyp.trace[-1] != label
    speakers[label] = Speaker(hidden, mean, n + 1, old.blocks + int(switched))
    return Hypothesis(tuple(speakers), hyp.trace + (label,), hyp.score + cost)

  def extend(self, hyp: Hypothesis, labels, xs) -> Hypothesis | None:
    """`hyp` after a block of segments with these labels; None if a label is not allowed."""
    for label, x in zip(labels, xs):
      cost = self.cost(hyp, label, x)
      if not np.isfinite(cost):
        return None
      hyp = self.assign(hyp, label, x, cost)
    return hyp


def _prepare(sequence, mask, test_iteration):
  """The real segments repeated test_iteration times, and their count."""
  sequence = np.asarray(sequence, np.float32)
  mask = np.ones(len(sequence), bool) if mask is None else np.asarray(mask, bool)
  real = sequence[mask]
  return np.tile(real, (test_iteration, 1)), len(real), mask


def _last_copy_labels(trace, num_real, mask):
  """The last copy's labels renumbered by first appearance, -1 where masked."""
  last = trace[len(trace) - num_real:] if num_real else ()
  renumber = {}
  for label in last:
    renumber.setdefault(label, len(renumber))
  out = np.full(len(mask), -1, np.int32)
  out[mask] = [renumber[label] for label in last]
  return out


def reference_beam_search(step: Callable, init_hidden, sigma2, transition_bias, crp_alpha,
                          sequence, mask=None, *, beam_size=10, look_ahead=1, max_speakers=8,
                          test_iteration=2, mean_rule="running"):
  """The beam search of `uis_rnn_decode.beam_search`, hypothesis by hypothesis:
  (labels [T] int32, neg_log_likelihood)."""
  check_options(beam_size, look_ahead, max_speakers, test_iteration, mean_rule)
  model = Model(step, init_hidden, sigma2, transition_bias, crp_alpha, max_speakers, mean_rule)
  tiled, num_real, mask = _prepare(sequence, mask, test_iteration)
  beams = [Hypothesis(speakers=(), trace=(), score=0.0)]
  for start in range(0, len(tiled), look_ahead):
    block = tiled[start:start + look_ahead]
    candidates = []  # in (beam rank, labels lexicographic) order: the tie-break
    for hyp in beams:
      for labels in itertools.product(range(max_speakers), repeat=len(block)):
        extended = model.extend(hyp, labels, block)
        if extended is not None:
          candidates.append(extended)
    beams = sorted(candidates, key=lambda h: h.score)[:beam_size]  # sorted() is stable
  return _last_copy_labels(beams[0].trace, num_real, mask), beams[0].score


def exhaustive_search(step: Callable, init_hidden, sigma2, transition_bias, crp_alpha, sequence,
                      mask=None, *, max_speakers=8, test_iteration=2, mean_rule="running"):
  """The best labelling of the repeated sequence over all labellings numbered by first
  appearance with at most max_speakers speakers (ties: the lexicographically first), as
  (labels of the last copy [T] int32, neg_log_likelihood). Depth-first; tiny inputs only."""
  check_options(1, 1, max_speakers, test_iteration, mean_rule)
  model = Model(step, init_hidden, sigma2, transition_bias, crp_alpha, max_speakers, mean_rule)
  tiled, num_real, mask = _prepare(sequence, mask, test_iteration)
  best = Hypothesis(speakers=(), trace=(), score=np.inf)

  def visit(hyp):
    nonlocal best
    if len(hyp.trace) == len(tiled):
      if hyp.score < best.score:
        best = hyp
      return
    x = tiled[len(hyp.trace)]
    for label in range(len(hyp.speakers) + 1):
      cost = model.cost(hyp, label, x)
      if np.isfinite(cost):
        visit(model.assign(hyp, label, x, cost))

  visit(Hypothesis(speakers=(), trace=(), score=0.0))
  return _last_copy_labels(best.trace, num_real, mask), best.score
