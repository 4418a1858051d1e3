"""The real launcher: every experiment's smoke variant runs; bad input exits 2 in one line."""

import glob
import json
import os

import pytest

from tests.launch_utils import REPO, assert_config_and_headline, checkpoint_steps, run_launcher

# Every experiment config (base.py holds the runner settings they start from).
EXPERIMENTS = sorted(os.path.relpath(p, REPO)
                     for p in glob.glob(os.path.join(REPO, "experiments", "[!_]*.py"))
                     if os.path.basename(p) != "base.py")
# Smoke variants run by another test already, whose test file names the experiment: one run
# of each, not two (these are among the slowest smoke runs).
RUN_ELSEWHERE = {
    # Through the launcher, with every check below, as the study tests' shared fixture.
    "experiments/early_readouts_study.py": "tests/studies/test_early_readouts.py",
    "experiments/drift_study.py": "tests/studies/test_drift.py",
    "experiments/odor_study.py": "tests/studies/test_odor.py",
    "experiments/diarization_study.py": "tests/studies/test_diarization.py",
    "experiments/copd_study.py": "tests/studies/test_copd.py",
    "experiments/allo_study.py": "tests/studies/test_allo.py",
    "experiments/fairness.py": "tests/studies/test_fairness.py",
    "experiments/smooth_activations.py": "tests/studies/test_smooth_activations.py",
    # In-process through the runner, asserting one compilation per step; the launcher path
    # around it is the same for every config and is run by the others here.
    "experiments/unipi.py": "tests/algos/test_unipi.py",
    "experiments/drift.py": "tests/algos/test_drift.py",
    "experiments/odor.py": "tests/algos/test_odor.py",
}


def test_smoke_variants_run_elsewhere_are_run_there():
  for experiment, test_file in RUN_ELSEWHERE.items():
    assert experiment in EXPERIMENTS, experiment
    text = open(os.path.join(REPO, test_file), encoding="utf-8").read()
    name = os.path.basename(experiment)[:-len(".py")]
    assert f'{name}_config.get_config("smoke")' in text, (experiment, test_file)


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e not in RUN_ELSEWHERE])
def test_smoke_variant_runs_through_launcher(experiment, tmp_path):
  proc = run_launcher(f"{experiment}:smoke", tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert_config_and_headline(experiment, proc, tmp_path)
  summary = json.load(open(tmp_path / "artifacts" / "summary.json"))
  config = json.load(open(tmp_path / "config.json"))
  assert summary["preempted"] is False and summary["step"] > 0
  kind = "study" if "study" in config else "algo"  # a study runs instead of an algorithm
  assert summary[kind] == config[kind]
  # metrics.jsonl: steps never go back and end at the summary's step, whose rows hold every
  # headline metric the summary has.
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  steps = [r["step"] for r in rows]
  assert steps == sorted(steps) and steps[-1] == summary["step"]
  last = {k: v for r in rows if r["step"] == summary["step"] for k, v in r.items()}
  for name in (k for k in summary["headline"] if k in summary):
    assert last[name] == pytest.approx(summary[name], rel=1e-6, nan_ok=True), name
  if kind == "algo":
    # Training is logged every log_every steps and at the last one, and checkpointed there.
    num_steps, every = config["num_steps"], config["log_every"]
    assert summary["step"] == num_steps
    assert [r["step"] for r in rows if "train/loss" in r] == sorted(
        set(range(every, num_steps + 1, every)) | {num_steps})
    for name in (k for k in summary if k.startswith("eval/")):
      assert last[name] == pytest.approx(summary[name], rel=1e-6), name
    assert checkpoint_steps(tmp_path)[-1] == num_steps
  assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
  assert open(tmp_path / "artifacts" / "metrics.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


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
