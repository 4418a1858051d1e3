"""The diarization report (jaxml/studies/diarization_report.py) from hand-made rows: statistics
over seeds, the breakdown by speaker count (per seed, then over seeds), timeouts left out of
the means, the claim's verdicts (lower DER holds, equal to a tenth of a percent ties), the
lowest DER in bold, and the summary's names."""

import os

import numpy as np
import pytest

from experiments import diarization_study as diarization_study_config
from jaxml.studies import diarization_report as report


def _row(method, noise, seed, accuracy, speakers, timeouts=0):
  der = [None if a is None else 1 - a for a in accuracy]
  decoded = [a for a in accuracy if a is not None]
  return {"method": method, "noise": noise, "seed": seed, "accuracy": accuracy, "der": der,
          "num_speakers": speakers, "length": [10] * len(accuracy),
          "conversations": len(accuracy), "timeouts": timeouts,
          "accuracy_mean": float(np.mean(decoded)), "der_mean": 1 - float(np.mean(decoded)),
          "der_weighted": 1 - float(np.mean(decoded)), "train_seconds": 2.0,
          "decode_seconds": 1.0}


ROWS = [
    _row("uis_rnn", 1.0, 0, [1.0, 0.9, 0.8], [2, 3, 3]),
    _row("uis_rnn", 1.0, 1, [1.0, 0.7, 0.6], [2, 3, 2]),
    _row("spectral", 1.0, 0, [1.0, 0.8, 0.6], [2, 3, 3]),
    _row("spectral", 1.0, 1, [1.0, 0.8, 0.4], [2, 3, 2]),
    _row("uis_rnn", 2.0, 0, [0.5, 0.5, 0.5], [2, 3, 3]),
    _row("uis_rnn", 2.0, 1, [0.5, 0.5, 0.5], [2, 3, 2]),
    _row("spectral", 2.0, 0, [0.5, 0.5, 0.5], [2, 3, 3]),
    _row("spectral", 2.0, 1, [0.5, 0.5, 0.5], [2, 3, 2]),
    _row("uisrnn", 1.0, 0, [None, 0.5, 0.7], [2, 3, 3], timeouts=1),
]


def test_statistics_over_seeds_and_speaker_counts():
  stats = report.noise_stats(ROWS, "accuracy_mean")
  means = [np.mean([1.0, 0.9, 0.8]), np.mean([1.0, 0.7, 0.6])]
  assert stats[("uis_rnn", 1.0)] == pytest.approx(
      (np.mean(means), np.std(means, ddof=1), 2))
  by_count = report.speaker_stats(ROWS, 1.0, "accuracy")
  # Per seed the mean over its conversations with that many speakers, then over seeds.
  three = [np.mean([0.9, 0.8]), 0.7]
  assert by_count[("uis_rnn", 3)] == pytest.approx((np.mean(three), np.std(three, ddof=1), 2))
  two = [1.0, np.mean([1.0, 0.6])]
  assert by_count[("uis_rnn", 2)][0] == pytest.approx(np.mean(two))
  # A timed-out conversation counts nowhere.
  assert ("uisrnn", 2) not in by_count and by_count[("uisrnn", 3)][0] == pytest.approx(0.6)


def test_claim_verdicts():
  der = report.noise_stats(ROWS, "der_mean")
  (paper, line, caveat) = report.claim_lines(der, ["uis_rnn", "spectral"], [1.0, 2.0])
  assert "7.6% vs 8.8%" in paper and "simulated data" in caveat
  a, b = 100 * der[("uis_rnn", 1.0)][0], 100 * der[("spectral", 1.0)][0]
  assert a < b
  assert line == (f"- UIS-RNN (jaxml) vs spectral clustering — noise 1: {a:.1f} vs {b:.1f} "
                  "(holds); noise 2: 50.0 vs 50.0 (tie)\n")


def test_report_files_and_summary(tmp_path):
  config = diarization_study_config.get_config("smoke")
  config.noises = (1.0, 2.0)
  config.seeds = (0, 1)
  config.methods = ("uis_rnn", "uisrnn", "spectral")
  summary = report.report(config, ROWS, ["a note"], str(tmp_path))
  assert summary["step"] == len(ROWS)
  assert summary["uis_rnn/accuracy"] == summary["uis_rnn/noise=1/accuracy"] == pytest.approx(
      np.mean([np.mean([1.0, 0.9, 0.8]), np.mean([1.0, 0.7, 0.6])]))
  assert summary["spectral/noise=2/der"] == pytest.approx(0.5)
  assert summary["uisrnn/timeouts"] == 1
  text = open(os.path.join(tmp_path, "artifacts", "diarization.md"), encoding="utf-8").read()
  assert "**Note:** a note" in text
  assert "| 1 | 1 / 3 |" in text  # uisrnn's timeouts at noise 1
  assert "| uisrnn | 40.0 | — |" in text  # DER over its decoded conversations; bold is lowest
  assert "| uis_rnn | **16.7 ± 9.4** | **50.0 ± 0.0** |" in text.split("## DER (%) by noise")[1]
  for name in ("accuracy_vs_noise.png", "der_vs_speakers.png"):
    assert os.path.getsize(os.path.join(tmp_path, "artifacts", name)) > 0
