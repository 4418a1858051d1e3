"""Exact resume: kill -9 at a random step, SIGTERM, and broken newest checkpoints.

All three restarted runs must end with exactly (bit for bit) the state of one run that was
never interrupted, because the data order and the keys are pure functions of (seed, step).
"""

import json
import os
import random
import signal

import pytest

from tests.launch_utils import (assert_same_arrays, checkpoint_steps, flip_one_bit,
                                restore_arrays, run_launcher, start_launcher, wait_for_step)

# Its trained fixture is costly: one worker runs all of its tests (--dist loadgroup in
# pyproject.toml), and the fixture is session-scoped, so it is built once (a module-scoped one
# is torn down whenever the worker runs another module's test in between, and built again).
pytestmark = pytest.mark.xdist_group("resume")

CONFIG = "experiments/classifier.py:smoke"
# Long enough to interrupt mid-run; checkpoints often enough that resuming repeats steps.
RUN = ("--config.num_steps=1500", "--config.log_every=10", "--config.checkpoint_every=100",
       "--config.eval_every=500", "--config.linear_probe.enabled=False")


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  proc = run_launcher(CONFIG, workdir, *RUN)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return restore_arrays(workdir, 1500)


def test_kill_9_at_random_step_then_resume_is_bit_identical(reference, tmp_path):
  target = random.Random().randint(120, 1200)
  proc = start_launcher(CONFIG, tmp_path, *RUN)
  wait_for_step(proc, tmp_path, target)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  saved = checkpoint_steps(tmp_path)
  assert saved and saved[-1] < 1500, saved
  resumed = run_launcher(CONFIG, tmp_path, *RUN)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert_same_arrays(reference, restore_arrays(tmp_path, 1500))
  steps = [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")
           if "train/loss" in l]
  assert steps == sorted(steps) and len(steps) == len(set(steps))  # no duplicated rows


def test_sigterm_checkpoints_and_exits_0_then_resumes(reference, tmp_path):
  proc = start_launcher(CONFIG, tmp_path, *RUN)
  wait_for_step(proc, tmp_path, 150)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "preempted at step" in out
  stopped = int(out.split("preempted at step ")[1].split(";")[0])
  assert stopped < 1500 and checkpoint_steps(tmp_path)[-1] == stopped
  resumed = run_launcher(CONFIG, tmp_path, *RUN)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert_same_arrays(reference, restore_arrays(tmp_path, 1500))


def test_broken_newest_steps_are_set_aside_alone_and_the_run_ends_bit_identical(reference,
                                                                                 tmp_path):
  first = run_launcher(CONFIG, tmp_path, *RUN)
  assert first.returncode == 0, first.stderr[-3000:]
  assert checkpoint_steps(tmp_path)[-2:] == [1400, 1500]
  checkpoints = tmp_path / "checkpoints"
  flip_one_bit(checkpoints / "1500")
  os.mkdir(checkpoints / "1600")  # an empty newer step
  os.mkdir(checkpoints / "1700.orbax-checkpoint-tmp")  # what a killed save leaves
  again = run_launcher(CONFIG, tmp_path, *RUN)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "checkpoint at step 1600 is unreadable (empty directory)" in again.stderr
  assert "checkpoint at step 1500 is unreadable (default/d/" in again.stderr
  assert "differs from its checksum)" in again.stderr
  assert sorted(os.listdir(tmp_path / "checkpoints_corrupt")) == ["1500", "1600"]
  assert sorted(os.listdir(checkpoints)) == ["1300", "1400", "1500"]  # 1400 kept, 1500 redone
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert max(r["step"] for r in rows if "train/loss" in r) == 1500  # steps 1401.. re-run
  assert_same_arrays(reference, restore_arrays(tmp_path, 1500))


def test_nonfinite_loss_stops_with_step_and_metric_named(tmp_path):
  proc = run_launcher(CONFIG, tmp_path, "--config.optimizer.learning_rate=1e30",
                      "--config.optimizer.warmup_steps=0", "--config.checkpoint_every=1000")
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-3000:]
  assert "train/" in lines[0] and " at step " in lines[0] and "nonfinite=skip" in lines[0]
  assert not os.path.exists(tmp_path / "checkpoints") or not checkpoint_steps(tmp_path)
