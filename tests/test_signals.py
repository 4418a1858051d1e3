"""SIGTERM and SIGINT in every phase of a run: start-up, training, checkpoint writing, final
evaluation. Each stops cleanly with one line (exit 0 for SIGTERM, 130 for SIGINT) and leaves a
workdir that says the run is incomplete; the rerun finishes the run, final evaluation included,
with the parameters and final metrics of a run that was never interrupted.

The phases are hit deterministically with `tests/slow_data.py` (a slow load, slow test reads).
"""

import json
import os
import re
import signal
import time

import pytest

from jaxml import runner
from jaxml.core.checkpoint import Checkpointer
from jaxml.core.preemption import Interrupted
from tests.launch_utils import (assert_same_arrays, checkpoint_steps, restore_arrays,
                                run_launcher, start_launcher, wait_for_step)

# Its trained fixture is costly: one worker runs all of its tests (--dist loadgroup in
# pyproject.toml), and the fixture is session-scoped, so it is built once (a module-scoped one
# is torn down whenever the worker runs another module's test in between, and built again).
pytestmark = pytest.mark.xdist_group("signals")  # with tests/test_storage_faults.py

CONFIG = "experiments/classifier.py:smoke"
NUM_STEPS = 600
# No periodic eval, so the test split is read only at load and in the final evaluation.
RUN = ("--config.data.source=tests.slow_data:digits", f"--config.num_steps={NUM_STEPS}",
       "--config.log_every=10", "--config.checkpoint_every=100",
       f"--config.eval_every={NUM_STEPS}", "--config.linear_probe.enabled=True")
RESUME = "run the same command again to resume"


def run_config():
  """CONFIG with RUN's overrides, for runs in this process."""
  from experiments import classifier  # pylint: disable=import-outside-toplevel
  config = classifier.get_config("smoke")
  config.progress = False
  for override in RUN:
    key, value = override.removeprefix("--config.").split("=")
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = type(node[leaf])(value == "True" if isinstance(node[leaf], bool) else value)
  return config


def final_metrics(workdir) -> dict:
  summary = json.load(open(os.path.join(workdir, "artifacts", "summary.json")))
  assert summary["completed"] is True, summary
  return {k: v for k, v in summary.items() if k.startswith(("eval/", "probe/"))}


def train_reference(workdir):
  """The uninterrupted run (in this process: the same programs as the launcher's): its final
  arrays and metrics. Trained once per session (`signals_reference` in tests/conftest.py)."""
  runner.run(run_config(), str(workdir))
  metrics = final_metrics(workdir)
  assert {"eval/accuracy", "probe/test_accuracy"} <= metrics.keys()
  return restore_arrays(workdir, NUM_STEPS), metrics


@pytest.fixture(scope="module")
def reference(signals_reference):
  return signals_reference


def stopped_line(proc, code: int) -> str:
  """The one line the stopped launcher printed, after checking its exit code."""
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == code, err[-3000:]
  assert err == "", err[-3000:]
  lines = out.splitlines()
  assert len(lines) == 1, out
  return lines[0]


def wait_for_path(proc, path, timeout: float = 300) -> None:
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() < deadline, f"{path} not there after {timeout}s"
    time.sleep(0.01)


def incomplete_summary(workdir) -> dict:
  summary = json.load(open(os.path.join(workdir, "artifacts", "summary.json")))
  assert summary["completed"] is False and summary["preempted"] is True, summary
  return summary


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_in_every_phase_then_the_rerun_finishes_the_run(reference, tmp_path, monkeypatch,
                                                               signum):
  code, word = (0, "preempted") if signum == signal.SIGTERM else (130, "interrupted")
  saved_in = f"saved in {tmp_path}/checkpoints"

  # Start-up: while the data loads, nothing compiled or saved yet.
  monkeypatch.setenv("SLOW_DATA_LOAD_MARKER", str(tmp_path / "loading"))
  proc = start_launcher(CONFIG, tmp_path, *RUN)
  wait_for_path(proc, tmp_path / "loading")
  proc.send_signal(signum)
  assert stopped_line(proc, code) == f"{word} before training began; {RESUME}"
  assert not os.path.isdir(tmp_path / "checkpoints") or not checkpoint_steps(tmp_path)
  assert incomplete_summary(tmp_path)["phase"] == "start-up"
  monkeypatch.delenv("SLOW_DATA_LOAD_MARKER")

  # Training: the step under way finishes and is checkpointed.
  proc = start_launcher(CONFIG, tmp_path, *RUN)
  wait_for_step(proc, tmp_path, 150)
  proc.send_signal(signum)
  line = stopped_line(proc, code)
  match = re.fullmatch(rf"{word} at step (\d+); checkpoint at step (\d+) {saved_in}; {RESUME}",
                       line)
  assert match and match[1] == match[2], line
  stopped = int(match[1])
  assert 150 <= stopped < NUM_STEPS and checkpoint_steps(tmp_path)[-1] == stopped
  assert incomplete_summary(tmp_path)["step"] == stopped

  # Final evaluation (slowed down): training is done and saved; the evaluation is not.
  monkeypatch.setenv("SLOW_DATA_TEST_READ_SECONDS", "1")
  proc = start_launcher(CONFIG, tmp_path, *RUN)
  wait_for_path(proc, tmp_path / "checkpoints" / str(NUM_STEPS))
  proc.send_signal(signum)
  assert stopped_line(proc, code) == (
      f"{word} during the final evaluation (training ended at step {NUM_STEPS}); "
      f"checkpoint at step {NUM_STEPS} {saved_in}; {RESUME}")
  assert incomplete_summary(tmp_path)["phase"] == "final evaluation"
  monkeypatch.delenv("SLOW_DATA_TEST_READ_SECONDS")

  # The rerun trains no step, runs the final evaluation it missed and writes the artifacts.
  proc = run_launcher(CONFIG, tmp_path, *RUN)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.startswith("final eval/accuracy=")
  arrays, metrics = reference
  assert_same_arrays(arrays, restore_arrays(tmp_path, NUM_STEPS))
  assert final_metrics(tmp_path) == metrics
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert {k for r in rows if r["step"] == NUM_STEPS for k in r} >= metrics.keys()


def test_second_signal_while_saving_stops_at_once_and_the_save_completes(
    reference, tmp_path, monkeypatch):
  """SIGTERM lands while step 100 is being written; the loop saves the next step and, while
  that save is written, a Ctrl-C comes: the run stops at once, and the save still commits."""
  save, wait = Checkpointer.save, Checkpointer.wait
  second = []

  def save_then_sigterm(self, step, state):
    save(self, step, state)
    if step == 100:
      os.kill(os.getpid(), signal.SIGTERM)

  def sigint_then_wait(self):
    if not second:
      second.append(True)
      os.kill(os.getpid(), signal.SIGINT)
    wait(self)

  monkeypatch.setattr(Checkpointer, "save", save_then_sigterm)
  monkeypatch.setattr(Checkpointer, "wait", sigint_then_wait)
  with pytest.raises(Interrupted) as stopped:
    runner.run(run_config(), str(tmp_path))
  assert second  # the second signal came during the loop's save
  assert stopped.value.signum == signal.SIGINT and stopped.value.phase == "training"
  assert stopped.value.saved == 101 and checkpoint_steps(tmp_path)[-1] == 101
  restore_arrays(tmp_path, 101)  # committed whole
  monkeypatch.undo()
  runner.run(run_config(), str(tmp_path))
  arrays, metrics = reference
  assert_same_arrays(arrays, restore_arrays(tmp_path, NUM_STEPS))
  assert final_metrics(tmp_path) == metrics
