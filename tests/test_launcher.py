"""The real launcher: every experiment's smoke variant runs; bad input exits 2 in one line."""

import glob
import json
import os

import pytest

from tests.launch_utils import REPO, run_launcher

# Every experiment config (base.py holds the runner settings they start from).
EXPERIMENTS = sorted(os.path.relpath(p, REPO)
                     for p in glob.glob(os.path.join(REPO, "experiments", "[!_]*.py"))
                     if os.path.basename(p) != "base.py")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_smoke_variant_runs_through_launcher(experiment, tmp_path):
  proc = run_launcher(f"{experiment}:smoke", tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "final " in proc.stdout and str(tmp_path) in proc.stdout
  summary = json.load(open(tmp_path / "artifacts" / "summary.json"))
  config = json.load(open(tmp_path / "config.json"))
  assert summary["preempted"] is False and summary["step"] > 0
  kind = "study" if "study" in config else "algo"  # a study runs instead of an algorithm
  assert config[kind] == summary.get(kind, config[kind])
  headline = summary.get("headline") or []
  assert all(f"{name}=" in proc.stdout for name in headline)
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert all("step" in r for r in rows)
  assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
  assert os.path.exists(tmp_path / "artifacts" / "metrics.png")


def test_default_digits_prints_accuracy_above_chance(tmp_path):
  """The README's first command, shortened: the default config really learns digits."""
  proc = run_launcher("experiments/classifier.py", tmp_path, "--config.num_steps=300",
                      "--config.eval_every=300", "--config.checkpoint_every=300")
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.load(open(tmp_path / "artifacts" / "summary.json"))
  assert summary["eval/accuracy"] > 0.9
  assert summary["probe/test_accuracy"] > 0.9
  assert f"eval/accuracy={summary['eval/accuracy']:.4f}" in proc.stdout


def test_adult_tabular_classifier_beats_the_majority_class(tmp_path):
  """Examples that are not images: UCI Adult's feature vectors through the same classifier."""
  proc = run_launcher("experiments/classifier.py:adult,smoke", tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.load(open(tmp_path / "artifacts" / "summary.json"))
  majority = 1 - 0.2362  # the test split's share of incomes <= 50K
  assert summary["eval/accuracy"] > majority + 0.04, summary["eval/accuracy"]


BAD_INPUTS = [
    (["--config.no_such_key=1"], "no_such_key"),
    (["--config.batch_size=abc"], "batch_size"),
    (["--config.algo=no_such_algo"], "unknown algorithm 'no_such_algo'"),
    (["--config.data.source=no_such_data"], "unknown dataset source 'no_such_data'"),
    (["--config.model.num_classes=5"], "labels out of range"),
    (["--config.batch_size=12"], "batch_size=12 is not divisible by the device count (8)"),
    (["--config.nonfinite=ignore"], "nonfinite='ignore'"),
    (["--config.init_from=/no/such/run"], "init_from=/no/such/run: not a jaxml workdir"),
    (["--config.model.name=no_such_model"], "no_such_model"),
    (["--coordinator_address=127.0.0.1:1"], "cannot join the multi-host run"),
    (["--config.dp.enabled=True", "--config.dp.l2_clip=0"], "dp.l2_clip=0.0 must be > 0"),
    (["--config.dp.enabled=True", "--config.dp.delta=0.5"], "dp delta=0.5 must be in (0, 1/n)"),
    (["--config.dp.enabled=True", "--config.dp.target_epsilon=1e-6"], "is unreachable"),
    (["--config.dp.enabled=True", "--config.dp.max_epsilon=1", "--config.dp.noise_multiplier=0.5"],
     "over its budget of 1.0"),
    (["--config.dp.enabled=True", "--config.model.name=resnet"], "(BatchNorm) mixes examples"),
]


def _assert_one_error_line(proc, message):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  assert message in lines[0]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(overrides, message, tmp_path):
  proc = run_launcher("experiments/classifier.py:smoke", tmp_path, *overrides)
  _assert_one_error_line(proc, message)
  assert not os.path.exists(tmp_path / "checkpoints")  # failed before anything ran


@pytest.mark.parametrize("overrides,message", [
    (["--config.methods=('lasso',)"], "methods=['lasso']"),
    (["--config.epsilons=(0.0,)"], "epsilons=[0.0]"),
    (["--config.features.clip=-1"], "features.clip=-1"),
    (["--config.public_workdir=/nonexistent/run"], "has no config.json"),
])
def test_bad_private_fine_tuning_exits_2_with_one_line(overrides, message, tmp_path):
  proc = run_launcher("experiments/dp_transfer.py:smoke", tmp_path, *overrides)
  _assert_one_error_line(proc, message)
  assert not os.path.exists(tmp_path / "public")  # failed before pre-training started


@pytest.mark.parametrize("config,message", [
    ("experiments/classifier.py:bogus", "unknown config variant 'bogus'"),
    ("experiments/classifier.py:seed=x", "seed='x'"),
    ("experiments/no_such_file.py", "no_such_file.py"),
])
def test_bad_config_file_or_variant_exits_2(config, message, tmp_path):
  proc = run_launcher(config, tmp_path)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]


def test_unwritable_workdir_exits_2(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  proc = run_launcher("experiments/classifier.py:smoke", blocker / "run")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "is not writable" in lines[0], proc.stderr[-2000:]


def test_unsupported_url_workdir_exits_2():
  """gs://, s3:// and az:// workdirs go through etils.epath (tests/test_remote_workdir.py runs
  one against a fake GCS); any other scheme is refused before anything runs."""
  proc = run_launcher("experiments/classifier.py:smoke", "ftp://host/run")
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
  assert "unsupported scheme ftp://" in lines[0]
