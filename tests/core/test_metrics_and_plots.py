"""metrics.jsonl writing, truncation on resume, and the curves chosen for the plot."""

import json
import logging

from jaxml.core.metrics import MetricWriter, flat_hparams, read_metrics
from jaxml.core.plots import curve_names, plot_metrics
from tests.launch_utils import tensorboard_hparams


def test_writer_rows_and_resume_truncation(tmp_path):
  writer = MetricWriter(str(tmp_path), active=True)
  for step in (10, 20, 30):
    writer.write(step, {"train/loss": 1.0 / step, "perf/steps_per_second": 5.0})
  writer.write(30, {"eval/accuracy": float("nan")})
  writer.close()
  rows = read_metrics(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in rows] == [10, 20, 30, 30]
  assert rows[-1]["eval/accuracy"] == "nan"  # valid JSON, NaN kept readable

  resumed = MetricWriter(str(tmp_path), start_step=20, active=True)  # checkpoint was at 20
  resumed.write(30, {"train/loss": 0.5})
  resumed.close()
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [10, 20, 30] and rows[-1]["train/loss"] == 0.5


def test_resume_repairs_a_damaged_log(tmp_path, caplog):
  """A full disk or a kill leaves garbage, non-UTF-8 bytes or a torn row: the resume goes on."""
  path = tmp_path / "metrics.jsonl"
  path.write_bytes(b'{"step": 10, "train/loss": 1.0}\n\xc3\x28garbage\n{"loss": 2.0}\n'
                   b'{"step": "20"}\n{"step": 20, "train/loss": 0.5}\n{"step": 30, "tr')
  with caplog.at_level(logging.WARNING):
    assert [r["step"] for r in read_metrics(str(path))] == [10, 20]
  assert "line(s) 2 (not UTF-8), 3 (not a row), 4 (not a row)" in caplog.text
  writer = MetricWriter(str(tmp_path), start_step=20, active=True)
  writer.write(30, {"train/loss": 0.25})
  writer.close()
  rows = [json.loads(l) for l in open(path, encoding="utf-8")]
  assert rows == [{"step": 10, "train/loss": 1.0}, {"step": 20, "train/loss": 0.5},
                  {"step": 30, "train/loss": 0.25}]
  assert (tmp_path / "metrics.jsonl.damaged").read_bytes().count(b"\n") == 3


def test_hparams_are_flattened_into_the_runs_own_event_file(tmp_path):
  values = {"seed": 3, "dp": {"enabled": True, "delta": 0.0, "sampling": "poisson"},
            "model": {"channels": [8, 16]}, "init_from": None, "dp/epsilon": 2.5}
  flat = {"seed": 3.0, "dp.enabled": True, "dp.delta": 0.0, "dp.sampling": "poisson",
          "model.channels": "[8, 16]", "dp/epsilon": 2.5}
  assert flat_hparams(values) == flat
  writer = MetricWriter(str(tmp_path), active=True)
  writer.write_hparams(values, metrics=("eval/accuracy",))
  writer.close()
  assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # no side folder
  assert tensorboard_hparams(tmp_path) == flat


def test_inactive_writer_writes_nothing(tmp_path):
  writer = MetricWriter(str(tmp_path), active=False)
  writer.write(1, {"train/loss": 1.0})
  writer.close()
  assert not list(tmp_path.iterdir())


def test_plot_shows_curves_not_single_values(tmp_path):
  rows = [{"step": 1, "train/loss": 2.0, "perf/steps_per_second": 3.0},
          {"step": 2, "train/loss": 1.0, "eval/accuracy": 0.5},
          {"step": 2, "probe/test_accuracy": 0.9, "eval/accuracy": 0.6, "note": "x"}]
  assert curve_names(rows) == ["eval/accuracy", "train/loss"]
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = plot_metrics(str(path), str(tmp_path / "m.png"))
  assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
