"""Speaker diarization metrics of per-segment label sequences: the sequence-match accuracy of
UIS-RNN (Zhang et al., "Fully Supervised Speaker Diarization", 2019) and the diarization error
rate (DER) of NIST and pyannote.metrics.

A conversation is T segments (one d-vector each), each with one speaker label: an integer,
numbered however the producer likes, since a clustering's or a decoder's label names mean
nothing. Both metrics therefore first map predicted speakers one-to-one onto true speakers, the
mapping that agrees most (the Hungarian algorithm on the confusion matrix,
`scipy.optimize.linear_sum_assignment`); a predicted or true speaker left without a partner (the
prediction found more or fewer speakers than there are) is wrong wherever it appears.

  sequence_accuracy      the share of segments whose mapped label is right: uis-rnn's
                         `evals.compute_sequence_match_accuracy`, what the paper reports per
                         utterance and averages.
  diarization_error_rate (missed + false alarm + confusion) / total reference speech, in
                         seconds, with collar 0 and overlap scored (none is possible here: one
                         label per segment): `pyannote.metrics.diarization.DiarizationErrorRate`
                         on annotations whose segments are the label runs. Each segment lasts
                         `segment_seconds` (one number, or one per segment); a label of
                         NON_SPEECH (-1) marks a segment without speech, so that missed speech
                         and false alarms can occur. Where every segment has a speaker and
                         lasts the same, DER = 1 - sequence_accuracy.

Neither is a sum over batches (each needs a whole sequence's mapping), so they are computed on
the host in NumPy after predictions are gathered. `batch_metrics` scores a padded batch [B, T]
with a mask or lengths, giving both the per-sequence mean (each conversation counts once, as in
the UIS-RNN paper) and the duration-weighted DER (every second counts once, pyannote's
aggregate `abs(metric)`: long conversations weigh more).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from jaxml.errors import ConfigError

NON_SPEECH = -1


def _labels(values, what: str) -> np.ndarray:
  """A 1-D int64 copy of `values`, or a ConfigError naming what is wrong with them."""
  values = np.asarray(values)
  if values.ndim != 1:
    raise ConfigError(f"{what} must be a 1-D label sequence, got shape {values.shape}")
  if not len(values):
    raise ConfigError(f"{what} is an empty sequence: there is nothing to score")
  if values.dtype == bool or not np.issubdtype(values.dtype, np.number):
    raise ConfigError(f"{what} must be integer speaker labels, got dtype {values.dtype}")
  if not np.issubdtype(values.dtype, np.integer):
    whole = np.isfinite(values) & (values == np.round(values))
    if not np.all(whole):
      raise ConfigError(f"{what} must be integer speaker labels, got values such as "
                        f"{values[~whole][:3].tolist()}")
  return values.astype(np.int64)


def _pair(predicted, truth, allow_non_speech: bool) -> tuple[np.ndarray, np.ndarray]:
  predicted, truth = _labels(predicted, "predicted"), _labels(truth, "truth")
  if len(predicted) != len(truth):
    raise ConfigError(f"predicted has {len(predicted)} segments and truth {len(truth)}: they "
                      "must label the same segments")
  lowest = NON_SPEECH if allow_non_speech else 0
  for what, values in (("predicted", predicted), ("truth", truth)):
    if values.min() < lowest:
      allowed = f"non-negative, or {NON_SPEECH} for non-speech" if allow_non_speech else (
          "non-negative (non-speech is for diarization_error_rate)")
      raise ConfigError(f"{what} labels must be {allowed}, got {int(values.min())}")
  return predicted, truth


def _durations(segment_seconds, count: int) -> np.ndarray:
  """[count] durations from one number or one per segment, each finite and positive."""
  seconds = np.asarray(segment_seconds, np.float64) if np.ndim(segment_seconds) else (
      np.full(count, float(segment_seconds)))
  if seconds.shape != (count,):
    raise ConfigError(f"segment_seconds must be one number or one per segment ({count}), got "
                      f"shape {seconds.shape}")
  if not np.all(np.isfinite(seconds) & (seconds > 0)):
    raise ConfigError("segment_seconds must be finite and positive")
  return seconds


def _matched(predicted: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> float:
  """The largest total weight of segments on which a one-to-one mapping of predicted labels
  to true labels agrees."""
  if not len(predicted):
    return 0.0
  _, rows = np.unique(predicted, return_inverse=True)
  _, columns = np.unique(truth, return_inverse=True)
  confusion = np.zeros((rows.max() + 1, columns.max() + 1))
  np.add.at(confusion, (rows, columns), weights)
  chosen = optimize.linear_sum_assignment(confusion, maximize=True)
  return float(confusion[chosen].sum())


def sequence_accuracy(predicted, truth) -> float:
  """The share of segments labelled right by predicted [T] against truth [T] after the best
  one-to-one mapping of predicted speakers to true ones (unmapped speakers are wrong)."""
  predicted, truth = _pair(predicted, truth, allow_non_speech=False)
  return _matched(predicted, truth, np.ones(len(truth))) / len(truth)


def der_components(predicted, truth, segment_seconds=1.0) -> dict[str, float]:
  """Seconds of `total` reference speech, `missed` speech (truth speaks, the prediction does
  not), `false alarm` (the reverse), `confusion` (both speak, the mapped speakers differ) and
  `correct`, named as pyannote.metrics names DER's components."""
  predicted, truth = _pair(predicted, truth, allow_non_speech=True)
  seconds = _durations(segment_seconds, len(truth))
  truth_speaks, predicted_speaks = truth != NON_SPEECH, predicted != NON_SPEECH
  both = truth_speaks & predicted_speaks
  correct = _matched(predicted[both], truth[both], seconds[both])
  return {"total": float(seconds[truth_speaks].sum()),
          "missed detection": float(seconds[truth_speaks & ~predicted_speaks].sum()),
          "false alarm": float(seconds[predicted_speaks & ~truth_speaks].sum()),
          "confusion": float(seconds[both].sum()) - correct,
          "correct": correct}


def _error(components: dict[str, float]) -> float:
  return components["missed detection"] + components["false alarm"] + components["confusion"]


def _rate(components: dict[str, float]) -> float:
  """DER from its components; with no reference speech it is 0 if nothing was said either and
  1 otherwise (pyannote's convention, so that it is defined)."""
  error = _error(components)
  if components["total"] == 0:
    return 0.0 if error == 0 else 1.0
  return error / components["total"]


def diarization_error_rate(predicted, truth, segment_seconds=1.0) -> float:
  """DER of predicted [T] against truth [T] (labels >= 0 are speakers, NON_SPEECH is silence),
  each segment lasting `segment_seconds` (a number or [T]); see the module docstring."""
  return _rate(der_components(predicted, truth, segment_seconds))


def _batch_mask(shape, mask, lengths) -> np.ndarray:
  if mask is not None and lengths is not None:
    raise ConfigError("give a mask or lengths for the padded batch, not both")
  if lengths is not None:
    lengths = np.asarray(lengths)
    if lengths.shape != shape[:1] or not np.issubdtype(lengths.dtype, np.integer):
      raise ConfigError(f"lengths must be {shape[0]} integers, got {lengths.dtype} "
                        f"{lengths.shape}")
    if np.any((lengths < 0) | (lengths > shape[1])):
      raise ConfigError(f"lengths must lie in [0, {shape[1]}], got {lengths.tolist()}")
    return np.arange(shape[1])[None, :] < lengths[:, None]
  if mask is None:
    return np.ones(shape, bool)
  mask = np.asarray(mask)
  if mask.shape != shape:
    raise ConfigError(f"mask {mask.shape} must have the labels' shape {shape}")
  if not np.all((mask == 0) | (mask == 1)):
    raise ConfigError("mask must be boolean (or 0/1)")
  return mask.astype(bool)


def batch_metrics(predicted, truth, mask=None, lengths=None,
                  segment_seconds=1.0) -> dict[str, float]:
  """Metrics of a padded batch of label sequences predicted [B, T] against truth [B, T], where
  mask [B, T] (or lengths [B], the valid prefix of each row) marks the real segments. Rows with
  no real segment (padding examples) are skipped. `segment_seconds` is a number or [B, T].

    accuracy/mean  sequence_accuracy averaged over the sequences (each counts once)
    der/mean       diarization_error_rate averaged over the sequences (each counts once)
    der/weighted   total error seconds / total speech seconds over the batch: every second
                   counts once (pyannote's aggregate, abs(metric))
    speech_seconds the total reference speech scored
    sequences      the number of sequences scored
  """
  predicted, truth = np.asarray(predicted), np.asarray(truth)
  if predicted.shape != truth.shape or predicted.ndim != 2:
    raise ConfigError(f"predicted {predicted.shape} and truth {truth.shape} must both be "
                      "[B, T]")
  valid = _batch_mask(truth.shape, mask, lengths)
  seconds = np.broadcast_to(np.asarray(segment_seconds, np.float64), truth.shape) if (
      np.ndim(segment_seconds) in (0, 2)) else None
  if seconds is None or seconds.shape != truth.shape:
    raise ConfigError(f"segment_seconds must be one number or [B, T] = {truth.shape}")
  accuracies, rates, totals = [], [], {"error": 0.0, "total": 0.0}
  for row in np.flatnonzero(valid.any(axis=1)):
    keep = valid[row]
    accuracies.append(sequence_accuracy(predicted[row, keep], truth[row, keep]))
    components = der_components(predicted[row, keep], truth[row, keep], seconds[row, keep])
    rates.append(_rate(components))
    totals["total"] += components["total"]
    totals["error"] += _error(components)
  if not accuracies:
    raise ConfigError("the mask leaves no segment to score in the batch")
  return {"accuracy/mean": float(np.mean(accuracies)), "der/mean": float(np.mean(rates)),
          "der/weighted": totals["error"] / totals["total"],
          "speech_seconds": totals["total"], "sequences": float(len(accuracies))}
