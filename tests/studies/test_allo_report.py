"""The Allo study's report on constructed rows: means over seeds, the claim verdicts, the unit
curve, the tables and plots."""

import ml_collections
import pytest

from experiments import allo_study as allo_study_config
from jaxml.studies import allo_report as report


def _rows(frozen=0.8, scratch=0.5):
  rows = []
  for seed, shift in ((0, 0.0), (1, 0.02)):
    fewshot = {"part": "fewshot", "seed": seed}
    for task in report.TASKS:
      for n in (1, 5):
        fewshot.update({f"{task}/{n}/frozen_ridge": frozen + shift,
                        f"{task}/{n}/frozen_logreg": frozen - 0.01,
                        f"{task}/{n}/pixels_logreg": 0.4, f"{task}/{n}/scratch_cnn": scratch,
                        f"{task}/{n}/scratch_cnn_std": 0.05})
    units = {"part": "units", "seed": seed}
    for task in report.TASKS:
      units.update({f"{task}/units1": 0.5, f"{task}/units2": 0.6, f"{task}/units4": 0.7,
                    f"{task}/units128": 0.9 + shift, f"{task}/dim": 128})
    rows += [fewshot, units, {"part": "illustration", "seed": seed, "agreement/all": 0.5,
                              "agreement/pixel_iou": 0.7 + shift}]
  return rows


def test_label_stats_are_means_and_sds_over_seeds():
  stats = report.label_stats(_rows(), "slant")
  mean, sd, count = stats[("frozen_ridge", 5)]
  assert (mean, count) == (pytest.approx(0.81), 2) and sd == pytest.approx(0.0141421, rel=1e-4)
  assert ("scratch_cnn_std", 5) not in stats


def test_unit_curve_is_sorted_by_unit_count():
  ms, accuracy, dim = report.unit_stats(_rows(), "size")
  assert ms == [1, 2, 4, 128] and dim == 128
  assert accuracy == pytest.approx([0.5, 0.6, 0.7, 0.91])


@pytest.mark.parametrize("frozen, verdict", [(0.8, "holds"), (0.45, "does not hold")])
def test_claim_verdicts_follow_the_numbers(frozen, verdict):
  lines = report.claim_lines(_rows(frozen=frozen))
  identity = next(line for line in lines if line.startswith("- identity: frozen"))
  assert identity.endswith(f"**{verdict}**.\n"), identity
  assert any("the 4 best of 128 units reach 70.0% against 91.0%" in line for line in lines)


def test_report_writes_the_tables_and_plots(tmp_path):
  config = ml_collections.ConfigDict(allo_study_config.get_config("smoke").to_dict())
  summary = report.report(config, _rows(), str(tmp_path))
  text = (tmp_path / "artifacts" / "allo.md").read_text()
  assert "## Does the pattern hold here?" in text and "## thickness" in text
  assert "**81.0 ± 1.4**" in text  # the best mean of a column is bold
  assert summary["identity/5/frozen_ridge"] == pytest.approx(0.81)
  assert summary["agreement/pixel_iou"] == pytest.approx(0.71)
  assert summary["step"] == 6
  for name in ("allo_labels.png", "allo_units.png"):
    assert (tmp_path / "artifacts" / name).stat().st_size > 0
