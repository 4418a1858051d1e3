"""Diarization metrics against their references: sequence accuracy equals uis-rnn's
`compute_sequence_match_accuracy` (when uisrnn is installed) and a brute force over every
mapping; DER equals pyannote.metrics' DiarizationErrorRate (collar 0, overlap scored) on
annotations built segment by segment from the same labels, per sequence and aggregated over a
padded batch; small cases worked by hand; bad inputs are named."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxml.errors import ConfigError
from jaxml.evaluators import diarization

pyannote_core = pytest.importorskip("pyannote.core")  # Python >= 3.11 (the test extra)
pyannote_diarization = pytest.importorskip("pyannote.metrics.diarization")


def random_labels(rng, length, speakers, non_speech=0.0):
  """[length] labels in runs (as conversations have turns) drawn from `speakers` names; a
  `non_speech` share of the runs is NON_SPEECH."""
  labels, names = [], rng.permutation(100)[:speakers] * 7  # arbitrary names, not 0..k-1
  while len(labels) < length:
    label = (diarization.NON_SPEECH if rng.random() < non_speech
             else int(names[rng.integers(speakers)]))
    labels += [label] * int(rng.integers(1, 5))
  return np.array(labels[:length])


def annotation(labels, seconds):
  """A pyannote Annotation with one segment per non-silent segment (no merging of runs: the
  reference must not share our run logic)."""
  out, start = pyannote_core.Annotation(), 0.0
  for index, (label, duration) in enumerate(zip(labels, seconds)):
    if label != diarization.NON_SPEECH:
      out[pyannote_core.Segment(start, start + duration), index] = f"speaker{label}"
    start += duration
  return out


def pyannote_metric():
  return pyannote_diarization.DiarizationErrorRate(collar=0.0, skip_overlap=False)


def pyannote_der(metric, predicted, truth, seconds):
  uem = pyannote_core.Timeline([pyannote_core.Segment(0.0, float(np.sum(seconds)))])
  return metric(annotation(truth, seconds), annotation(predicted, seconds), uem=uem,
                detailed=True)


def brute_force_accuracy(predicted, truth):
  """The best agreement over every injective mapping of the smaller label set into the larger."""
  pred_names, true_names = sorted(set(predicted)), sorted(set(truth))
  best = 0
  if len(pred_names) <= len(true_names):
    mappings = (dict(zip(pred_names, image))
                for image in itertools.permutations(true_names, len(pred_names)))
  else:
    mappings = ({p: t for t, p in zip(true_names, image)}
                for image in itertools.permutations(pred_names, len(true_names)))
  for mapping in mappings:
    best = max(best, sum(mapping.get(p) == t for p, t in zip(predicted, truth)))
  return best / len(truth)


@pytest.mark.parametrize("predicted, truth, accuracy", [
    ([5, 5, 9, 9], [0, 0, 1, 1], 1.0),         # names are arbitrary
    ([0, 0, 0, 0], [0, 0, 1, 1], 0.5),         # one predicted speaker for two
    ([0, 1, 2, 3], [0, 0, 1, 1], 0.5),         # four for two: two segments left unmapped
    ([1, 0, 0, 1, 2], [0, 1, 1, 2, 2], 0.8),   # 0->1 (2 right), 1->0 (1), 2->2 (1)
    ([1, 1, 0, 0, 0], [0, 1, 1, 2, 2], 0.6),   # 0->2 (2 right), 1->0 or 1->1 (1)
])
def test_small_cases_worked_by_hand(predicted, truth, accuracy):
  assert diarization.sequence_accuracy(predicted, truth) == pytest.approx(accuracy, abs=1e-15)
  # Equal durations and no silence: DER is the rest.
  assert diarization.diarization_error_rate(predicted, truth, 0.4) == pytest.approx(
      1 - accuracy, abs=1e-12)


def test_der_components_by_hand():
  # truth 0 0 1 1 -   (-: silence), predicted 7 - 7 8 8, each 2 s: truth speech 8 s; missed 2 s
  # (segment 1), false alarm 2 s (segment 4), both speak on 0, 2, 3: 7->1 maps 1 of them...
  # best: 7->0 (segment 0 right), 8->1 (segment 3 right): confusion 2 s (segment 2).
  components = diarization.der_components([7, -1, 7, 8, 8], [0, 0, 1, 1, -1], 2.0)
  assert components == {"total": 8.0, "missed detection": 2.0, "false alarm": 2.0,
                        "confusion": 2.0, "correct": 4.0}
  assert diarization.diarization_error_rate([7, -1, 7, 8, 8], [0, 0, 1, 1, -1], 2.0) == 0.75
  # No reference speech: 0 if none is predicted, else 1 (pyannote's convention).
  assert diarization.diarization_error_rate([-1, -1], [-1, -1]) == 0.0
  assert diarization.diarization_error_rate([-1, 3], [-1, -1]) == 1.0


CASES = [(length, speakers, predicted_speakers)
         for length in (1, 7, 40, 150)
         for speakers, predicted_speakers in ((1, 1), (2, 4), (3, 3), (4, 2), (6, 8))]


@pytest.mark.parametrize("length, speakers, predicted_speakers", CASES)
def test_sequence_accuracy_equals_uisrnn_and_brute_force(length, speakers, predicted_speakers):
  rng = np.random.default_rng(length * 100 + speakers * 10 + predicted_speakers)
  truth = random_labels(rng, length, speakers)
  predicted = random_labels(rng, length, predicted_speakers)
  accuracy = diarization.sequence_accuracy(predicted, truth)
  if length <= 40:
    assert accuracy == pytest.approx(brute_force_accuracy(predicted.tolist(), truth.tolist()),
                                     abs=1e-15)
  uisrnn_evals = pytest.importorskip("uisrnn.evals")
  assert accuracy == uisrnn_evals.compute_sequence_match_accuracy(predicted.tolist(),
                                                                  truth.tolist())


@pytest.mark.parametrize("length, speakers, predicted_speakers", CASES)
@pytest.mark.parametrize("durations", ["equal", "varied", "with silence"])
def test_der_equals_pyannote(length, speakers, predicted_speakers, durations):
  rng = np.random.default_rng(length * 100 + speakers * 10 + predicted_speakers + 7)
  silence = 0.2 if durations == "with silence" else 0.0
  truth = random_labels(rng, length, speakers, silence)
  predicted = random_labels(rng, length, predicted_speakers, silence)
  seconds = (np.full(length, 0.75) if durations == "equal"
             else np.round(rng.uniform(0.1, 2.0, length), 3))
  expected = pyannote_der(pyannote_metric(), predicted, truth, seconds)
  components = diarization.der_components(predicted, truth, seconds)

  for name in ("total", "missed detection", "false alarm", "confusion", "correct"):
    assert components[name] == pytest.approx(expected[name], abs=1e-9), name
  der = diarization.diarization_error_rate(predicted, truth,
                                           0.75 if durations == "equal" else seconds)
  assert der == pytest.approx(expected["diarization error rate"], abs=1e-12)
  if durations == "equal":  # no silence, equal durations: DER = 1 - accuracy
    assert der == pytest.approx(1 - diarization.sequence_accuracy(predicted, truth), abs=1e-12)


def padded_batch(seed, batch=6, time=50):
  """A batch of label rows of varied lengths, padded with junk labels; the last row is a
  padding example (length 0)."""
  rng = np.random.default_rng(seed)
  lengths = np.concatenate([rng.integers(1, time + 1, batch - 1), [0]])
  truth = rng.integers(0, 50, (batch, time))     # junk where padded
  predicted = rng.integers(0, 50, (batch, time))
  for row, length in enumerate(lengths):
    truth[row, :length] = random_labels(rng, length, int(rng.integers(1, 5))) if length else []
    predicted[row, :length] = (random_labels(rng, length, int(rng.integers(1, 6)))
                               if length else [])
  return predicted, truth, lengths


def test_batch_metrics_equal_pyannote_per_sequence_and_aggregated():
  predicted, truth, lengths = padded_batch(seed=3)
  seconds = np.round(np.random.default_rng(4).uniform(0.2, 1.5, truth.shape), 2)
  metric, rates, accuracies = pyannote_metric(), [], []
  for row, length in enumerate(lengths[:-1]):
    detail = pyannote_der(metric, predicted[row, :length], truth[row, :length],
                          seconds[row, :length])
    rates.append(detail["diarization error rate"])
    accuracies.append(diarization.sequence_accuracy(predicted[row, :length],
                                                    truth[row, :length]))
  mask = np.arange(truth.shape[1])[None, :] < lengths[:, None]

  for by_mask in (True, False):
    summary = diarization.batch_metrics(
        predicted, truth, mask=mask if by_mask else None,
        lengths=None if by_mask else lengths, segment_seconds=seconds)
    assert summary["sequences"] == len(lengths) - 1
    assert summary["der/mean"] == pytest.approx(np.mean(rates), abs=1e-12)
    assert summary["der/weighted"] == pytest.approx(abs(metric), abs=1e-12)
    assert summary["accuracy/mean"] == pytest.approx(np.mean(accuracies), abs=1e-15)
    assert summary["speech_seconds"] == pytest.approx(np.sum(seconds[mask]), abs=1e-9)
  assert abs(metric) != pytest.approx(np.mean(rates), abs=1e-3)  # the two really differ here


def test_batch_metrics_with_a_scattered_mask_scores_only_the_kept_segments():
  predicted, truth, _ = padded_batch(seed=5, batch=3, time=30)
  mask = np.random.default_rng(6).random(truth.shape) < 0.6
  summary = diarization.batch_metrics(predicted, truth, mask=mask)
  rows = [(predicted[r][mask[r]], truth[r][mask[r]]) for r in range(3)]
  assert summary["accuracy/mean"] == pytest.approx(
      np.mean([diarization.sequence_accuracy(p, t) for p, t in rows]), abs=1e-15)
  assert summary["der/mean"] == pytest.approx(1 - summary["accuracy/mean"], abs=1e-12)
  matched = sum(diarization.sequence_accuracy(p, t) * len(t) for p, t in rows)
  assert summary["der/weighted"] == pytest.approx(1 - matched / mask.sum(), abs=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: diarization.sequence_accuracy([0, 1], [0, 1, 1]), "2 segments and truth 3"),
    (lambda: diarization.diarization_error_rate([], []), "predicted is an empty sequence"),
    (lambda: diarization.sequence_accuracy([0.5, 1], [0, 1]), "integer.*0.5"),
    (lambda: diarization.sequence_accuracy(["a", "b"], [0, 1]), "integer.*dtype"),
    (lambda: diarization.sequence_accuracy([0, 1], [0, np.nan]), "truth must be integer"),
    (lambda: diarization.sequence_accuracy([[0, 1]], [[0, 1]]), "1-D"),
    (lambda: diarization.sequence_accuracy([0, -1], [0, 1]), "non-negative"),
    (lambda: diarization.diarization_error_rate([0, -2], [0, 1]), "non-negative, or -1"),
    (lambda: diarization.diarization_error_rate([0, 1], [0, 1], [1.0]), "one per segment"),
    (lambda: diarization.diarization_error_rate([0, 1], [0, 1], 0.0), "positive"),
    (lambda: diarization.batch_metrics([0, 1], [0, 1]), r"\[B, T\]"),
    (lambda: diarization.batch_metrics([[0, 1]], [[0, 1]], mask=[[0, 0]]), "no segment"),
    (lambda: diarization.batch_metrics([[0, 1]], [[0, 1]], mask=[[1]]), "mask"),
    (lambda: diarization.batch_metrics([[0, 1]], [[0, 1]], mask=[[1, 1]], lengths=[2]),
     "not both"),
    (lambda: diarization.batch_metrics([[0, 1]], [[0, 1]], lengths=[3]), r"\[0, 2\]"),
    (lambda: diarization.batch_metrics([[0, 1]], [[0, 1]], segment_seconds=[1.0, 1.0]),
     "segment_seconds"),
])
def test_bad_inputs_are_named(call, message):
  with pytest.raises(ConfigError, match=message):
    call()
